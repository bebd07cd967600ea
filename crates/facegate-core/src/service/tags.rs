//! Tag labels: created first, at most 64 per tenant, carried by subjects and used to narrow a
//! search.

use super::state::FaceService;
use super::text::{nfc, visible_name};
use crate::error::{Error, Result};
use crate::model::Tenant;

/// Tags a tenant may hold: NEC ID's documented hard limit.
pub const MAX_TAGS: usize = 64;
/// Longest tag name, in characters.
pub const MAX_TAG_CHARS: usize = 64;

/// A tag name as it is stored and compared: in NFC, so that the two spellings of "é" are one tag,
/// and without invisible characters, so that no two tags look alike (`text::visible_name`).
fn tag_name(what: &str, name: &str) -> Result<String> {
    visible_name(what, name, MAX_TAG_CHARS)
}

impl FaceService {
    /// A name an existing tag already has, in either normal form, is a conflict.
    pub async fn create_tag(&self, tenant: &Tenant, name: &str) -> Result<()> {
        let (tenant_id, name) = (tenant.id.clone(), tag_name("tag name", name)?);
        self.with_store(move |store| store.create_tag(&tenant_id, &name, MAX_TAGS)).await
    }

    /// The current name is only looked up, so it is normalised but not refused: a tag made before
    /// names were checked can still be renamed to a visible name.
    pub async fn rename_tag(&self, tenant: &Tenant, old_name: &str, new_name: &str) -> Result<()> {
        let new = tag_name("new tag name", new_name)?;
        let (tenant_id, old) = (tenant.id.clone(), nfc(old_name));
        let names = (old.clone(), new.clone());
        self.with_store(move |store| store.rename_tag(&tenant_id, &names.0, &names.1)).await?;
        self.index.rename_tag(&tenant.id, &old, &new);
        Ok(())
    }

    /// Subjects keep the label of a deleted tag, in the store and so in the index: searching by
    /// it is refused until a tag of that name exists again. The name is looked up as
    /// [`Self::rename_tag`] looks up the current one.
    pub async fn delete_tag(&self, tenant: &Tenant, name: &str) -> Result<()> {
        let (tenant_id, name) = (tenant.id.clone(), nfc(name));
        if self.with_store(move |store| store.delete_tag(&tenant_id, &name)).await? {
            Ok(())
        } else {
            Err(Error::NotFound("tag"))
        }
    }

    pub async fn list_tags(&self, tenant: &Tenant) -> Result<Vec<String>> {
        let tenant_id = tenant.id.clone();
        self.with_store(move |store| store.list_tags(&tenant_id)).await
    }

    /// The tag labels of a subject.
    pub async fn subject_tags(&self, tenant: &Tenant, subject_id: &str) -> Result<Vec<String>> {
        let (tenant_id, subject_id) = (tenant.id.clone(), subject_id.to_owned());
        self.with_store(move |store| store.subject_tags(&tenant_id, &subject_id)).await
    }

    /// The labels a subject or a search names, as stored: each a tag name ([`tag_name`]) of an
    /// existing tag.
    pub(super) async fn known_tags(&self, tenant: &Tenant, tags: &[String]) -> Result<Vec<String>> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let tags = tags.iter().map(|t| tag_name("tag", t)).collect::<Result<Vec<_>>>()?;
        let known = self.list_tags(tenant).await?;
        match tags.iter().find(|t| !known.contains(t)) {
            Some(unknown) => Err(Error::InvalidRequest(format!("tag '{unknown}' does not exist; create it first"))),
            None => Ok(tags),
        }
    }
}
