//! The gallery: subjects and their face samples. A miiCloud person and an NEC subject are the
//! same [`Subject`]; an enrolled image and an NEC event are the same [`FaceSample`].

use super::audit::audited;
use super::state::{template_of, FacePolicy, FaceService};
use super::text::{now_rfc3339, validate_name};
use crate::error::{Error, Result};
use crate::model::{
    BoundingBox, FaceAttributes, FaceSample, ImageUpload, Profile, StoredImage, Subject, SubjectSummary, Tenant,
};

/// Longest accepted customer id and profile field, in characters.
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_FIELD_CHARS: usize = 256;

/// Most subjects one page of a listing holds. 100 is more than a screen of pictures shows, and
/// bounds the page's query (a sample count and a newest sample per subject) to milliseconds.
pub const MAX_SUBJECT_PAGE: usize = 100;

/// One page of [`FaceService::list_subjects`].
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectPage {
    pub subjects: Vec<SubjectSummary>,
    /// The `after` of the next page; `None` on the last.
    pub next: Option<String>,
}

/// How a request names a subject.
#[derive(Debug, Clone, Copy)]
pub enum SubjectKey<'a> {
    /// The service's id (miiCloud's `miicloud_person_id`, NEC's subject id).
    Id(&'a str),
    /// The client's own id (miiCloud's `customer_person_id`), unique per tenant.
    CustomerId(&'a str),
}

impl SubjectKey<'_> {
    fn describe(&self) -> String {
        match self {
            SubjectKey::Id(id) => format!("subject={id}"),
            SubjectKey::CustomerId(id) => format!("customer_id={id}"),
        }
    }
}

/// A subject to create from the face of an image.
#[derive(Debug, Clone)]
pub struct NewSubject {
    /// Refused when another subject of the tenant has it.
    pub customer_id: Option<String>,
    pub profile: Profile,
    /// Existing tags only.
    pub tags: Vec<String>,
    pub image: ImageUpload,
    pub policy: FacePolicy,
}

/// A face written to a subject.
#[derive(Debug, Clone)]
pub struct Registered {
    pub subject: Subject,
    pub sample: FaceSample,
    /// When the face policy measured them.
    pub attributes: Option<FaceAttributes>,
}

/// A subject with its samples.
#[derive(Debug, Clone)]
pub struct SubjectRecord {
    pub subject: Subject,
    /// Newest first.
    pub samples: Vec<FaceSample>,
    /// The box of the face added by this request, if any.
    pub new_face: Option<BoundingBox>,
}

impl FaceService {
    /// Creates a subject from the face of an image that `policy` picks.
    pub async fn create_subject(&self, tenant: &Tenant, new: NewSubject) -> Result<Registered> {
        let mut input = format!("customer_id={}", new.customer_id.as_deref().unwrap_or("-"));
        if !new.tags.is_empty() {
            input.push_str(&format!(" tags={}", new.tags.join(",")));
        }
        let summary = |r: &Registered| format!("subject={} sample={}", r.subject.id, r.sample.id);
        audited(tenant, "create_subject", input, summary, async {
            if let Some(customer_id) = &new.customer_id {
                validate_name("customer id", customer_id, MAX_ID_CHARS)?;
            }
            let profile = validate_profile(new.profile)?;
            if let Some(customer_id) = &new.customer_id {
                if self.find_subject(tenant, SubjectKey::CustomerId(customer_id)).await?.is_some() {
                    return Err(Error::Conflict(format!("a subject with customer id '{customer_id}' already exists")));
                }
            }
            let tags = self.known_tags(tenant, &new.tags).await?;
            let found = self.face_by_policy(new.image.bytes.clone(), new.policy).await?;
            let now = now_rfc3339();
            let subject = Subject {
                id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenant.id.clone(),
                customer_person_id: new.customer_id,
                profile,
                created_at: now.clone(),
                updated_at: now,
            };
            let new_sample = self.new_sample(&subject, &found.face, new.image);
            let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
            let (subject, new_sample, tags) = {
                let subject = subject.clone();
                self.with_store(move |store| {
                    if tags.is_empty() {
                        store.create_subject(&subject, Some(&new_sample))?;
                    } else {
                        store.create_tagged_subject(&subject, &new_sample, &tags)?;
                    }
                    Ok((subject, new_sample, tags))
                })
                .await?
            };
            if !tags.is_empty() {
                self.index.set_subject_tags(&tenant.id, &subject.id, &tags);
            }
            self.index.insert(template_of(&subject, &new_sample));
            Ok(Registered { subject, sample: new_sample.sample, attributes: found.attributes })
        })
        .await
    }

    /// Adds a face sample to a subject, or replaces sample `replacing` keeping its id; replaces
    /// the subject's tags when `tags` is given. The sample and the tags go in one transaction.
    pub async fn add_face(
        &self,
        tenant: &Tenant,
        key: SubjectKey<'_>,
        replacing: Option<&str>,
        image: ImageUpload,
        policy: FacePolicy,
        tags: Option<Vec<String>>,
    ) -> Result<Registered> {
        let input = format!("{} replacing={}", key.describe(), replacing.unwrap_or("-"));
        audited(tenant, "add_face", input, |r| format!("sample={}", r.sample.id), async {
            let mut subject = self.subject(tenant, key).await?;
            let tags = match tags {
                Some(tags) => Some(self.known_tags(tenant, &tags).await?),
                None => None,
            };
            let found = self.face_by_policy(image.bytes.clone(), policy).await?;
            subject.updated_at = now_rfc3339();
            let mut new_sample = self.new_sample(&subject, &found.face, image);
            if let Some(sample_id) = replacing {
                new_sample.sample.id = sample_id.to_owned();
            }
            let replace = replacing.is_some();
            let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
            let (subject, new_sample, tags) = self
                .with_store(move |store| {
                    if replace {
                        store.replace_sample(&subject, &new_sample, tags.as_deref())?;
                    } else {
                        store.update_subject(&subject, Some(&new_sample), tags.as_deref())?;
                    }
                    Ok((subject, new_sample, tags))
                })
                .await?;
            if let Some(tags) = tags {
                self.index.set_subject_tags(&subject.tenant_id, &subject.id, &tags);
            }
            // Inserting under an existing sample id replaces that template.
            self.index.insert(template_of(&subject, &new_sample));
            Ok(Registered { subject, sample: new_sample.sample, attributes: found.attributes })
        })
        .await
    }

    /// Replaces the profile (blank or missing fields are cleared) and adds the face of `image`
    /// that `policy` picks, if an image is given.
    pub async fn update_subject(
        &self,
        tenant: &Tenant,
        key: SubjectKey<'_>,
        profile: Profile,
        image: Option<ImageUpload>,
        policy: FacePolicy,
    ) -> Result<SubjectRecord> {
        let summary = |r: &SubjectRecord| format!("subject={} added_face={}", r.subject.id, r.new_face.is_some());
        audited(tenant, "update_subject", key.describe(), summary, async {
            let profile = validate_profile(profile)?;
            let mut subject = self.subject(tenant, key).await?;
            let new_sample = match image {
                Some(image) => {
                    let found = self.face_by_policy(image.bytes.clone(), policy).await?;
                    Some(self.new_sample(&subject, &found.face, image))
                }
                None => None,
            };
            subject.profile = profile;
            subject.updated_at = now_rfc3339();
            let subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
            let (subject, new_sample) = self
                .with_store(move |store| {
                    store.update_subject(&subject, new_sample.as_ref(), None).map(|()| (subject, new_sample))
                })
                .await?;
            if let Some(ns) = &new_sample {
                self.index.insert(template_of(&subject, ns));
            }
            drop(subject_lock);
            let samples = self.samples(&subject).await?;
            Ok(SubjectRecord { subject, samples, new_face: new_sample.map(|ns| ns.sample.bbox) })
        })
        .await
    }

    /// A subject with its samples, newest first.
    pub async fn subject_record(&self, tenant: &Tenant, key: SubjectKey<'_>) -> Result<SubjectRecord> {
        let subject = self.subject(tenant, key).await?;
        let samples = self.samples(&subject).await?;
        Ok(SubjectRecord { subject, samples, new_face: None })
    }

    /// A page of the tenant's subjects that have a customer id starting with `prefix`, in byte
    /// order of that id, after `after`; `limit` is capped at [`MAX_SUBJECT_PAGE`]. The page says
    /// where the next one starts, if one follows.
    pub async fn list_subjects(
        &self,
        tenant: &Tenant,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SubjectPage> {
        if prefix.chars().count() > MAX_ID_CHARS {
            return Err(Error::InvalidRequest(format!("the prefix is longer than {MAX_ID_CHARS} characters")));
        }
        let limit = limit.clamp(1, MAX_SUBJECT_PAGE);
        let (tenant_id, prefix, after) = (tenant.id.clone(), prefix.to_owned(), after.map(str::to_owned));
        // One more than asked tells whether another page follows.
        let mut subjects =
            self.with_store(move |store| store.list_subjects(&tenant_id, &prefix, after.as_deref(), limit + 1)).await?;
        let next = if subjects.len() > limit {
            subjects.truncate(limit);
            subjects.last().and_then(|s| s.subject.customer_person_id.clone())
        } else {
            None
        };
        Ok(SubjectPage { subjects, next })
    }

    /// The stored image of one of the tenant's face samples, as it was uploaded. `NotFound` when
    /// the tenant has no such sample (another tenant's sample is no different) or its image is
    /// gone; `Internal` when it cannot be opened.
    pub async fn face_image(&self, tenant: &Tenant, sample_id: &str) -> Result<Vec<u8>> {
        let (tenant_id, sample_id) = (tenant.id.clone(), sample_id.to_owned());
        match self.with_store(move |store| store.sample_image(&tenant_id, &sample_id)).await? {
            StoredImage::Bytes(bytes) => Ok(bytes),
            StoredImage::Missing => Err(Error::NotFound("face image")),
            StoredImage::Unreadable(why) => {
                Err(Error::Internal(format!("a stored face image cannot be opened: {why}")))
            }
        }
    }

    /// Deletes a subject with its samples, index entries and image files.
    pub async fn delete_subject(&self, tenant: &Tenant, key: SubjectKey<'_>) -> Result<Subject> {
        audited(tenant, "delete_subject", key.describe(), |s: &Subject| format!("subject={}", s.id), async {
            let subject = self.subject(tenant, key).await?;
            let (tenant_id, subject_id) = (subject.tenant_id.clone(), subject.id.clone());
            let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
            let existed = self.with_store(move |store| store.delete_subject(&tenant_id, &subject_id)).await?;
            self.index.remove_subject(&subject.tenant_id, &subject.id);
            // A concurrent delete got there first.
            if existed {
                Ok(subject)
            } else {
                Err(Error::NotFound("subject"))
            }
        })
        .await
    }

    /// Deletes one face sample of a subject.
    pub async fn delete_face(&self, tenant: &Tenant, key: SubjectKey<'_>, sample_id: &str) -> Result<()> {
        let input = format!("{} sample={sample_id}", key.describe());
        audited(tenant, "delete_face", input, |()| String::new(), async {
            let subject = self.subject(tenant, key).await?;
            let (tid, sid, eid) = (subject.tenant_id.clone(), subject.id.clone(), sample_id.to_owned());
            let _subject_lock = self.subject_locks.lock(&subject.tenant_id, &subject.id).await;
            if !self.with_store(move |store| store.delete_sample(&tid, &sid, &eid)).await? {
                return Err(Error::NotFound("face sample"));
            }
            self.index.remove_sample(&tenant.id, sample_id);
            Ok(())
        })
        .await
    }

    /// The subject `key` names, `NotFound` if it is not this tenant's.
    pub async fn subject(&self, tenant: &Tenant, key: SubjectKey<'_>) -> Result<Subject> {
        self.find_subject(tenant, key).await?.ok_or(Error::NotFound("subject"))
    }

    async fn find_subject(&self, tenant: &Tenant, key: SubjectKey<'_>) -> Result<Option<Subject>> {
        let tenant_id = tenant.id.clone();
        match key {
            SubjectKey::Id(id) => {
                let id = id.to_owned();
                self.with_store(move |store| store.subject_by_id(&tenant_id, &id)).await
            }
            SubjectKey::CustomerId(id) => {
                let id = id.to_owned();
                self.with_store(move |store| store.subject_by_customer_id(&tenant_id, &id)).await
            }
        }
    }

    async fn samples(&self, subject: &Subject) -> Result<Vec<FaceSample>> {
        let (tenant_id, subject_id) = (subject.tenant_id.clone(), subject.id.clone());
        self.with_store(move |store| store.samples_of(&tenant_id, &subject_id)).await
    }
}

/// Blank fields become `None`; over-long fields or control characters are refused.
fn validate_profile(profile: Profile) -> Result<Profile> {
    let check = |what: &str, v: Option<String>| -> Result<Option<String>> {
        match v {
            Some(v) if !v.trim().is_empty() => {
                validate_name(what, &v, MAX_FIELD_CHARS)?;
                Ok(Some(v))
            }
            _ => Ok(None),
        }
    };
    Ok(Profile {
        first_name: check("first_name", profile.first_name)?,
        last_name: check("last_name", profile.last_name)?,
        email: check("email", profile.email)?,
        phone: check("phone", profile.phone)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_profile_fields_are_cleared() {
        let p = validate_profile(Profile { first_name: Some("  ".into()), ..Default::default() }).expect("ok");
        assert_eq!(p.first_name, None);
        assert!(validate_profile(Profile { email: Some("a\u{7}".into()), ..Default::default() }).is_err());
    }
}
