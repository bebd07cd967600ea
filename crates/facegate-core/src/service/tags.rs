//! Tag labels: created first, at most 64 per tenant, carried by subjects and used to narrow a
//! search.

use super::state::FaceService;
use super::text::validate_name;
use crate::error::{Error, Result};
use crate::model::Tenant;

/// Tags a tenant may hold: NEC ID's documented hard limit.
pub const MAX_TAGS: usize = 64;
/// Longest tag name, in characters.
pub const MAX_TAG_CHARS: usize = 64;

impl FaceService {
    pub async fn create_tag(&self, tenant: &Tenant, name: &str) -> Result<()> {
        validate_name("tag name", name, MAX_TAG_CHARS)?;
        let (tenant_id, name) = (tenant.id.clone(), name.to_owned());
        self.with_store(move |store| store.create_tag(&tenant_id, &name, MAX_TAGS)).await
    }

    pub async fn rename_tag(&self, tenant: &Tenant, old_name: &str, new_name: &str) -> Result<()> {
        validate_name("new tag name", new_name, MAX_TAG_CHARS)?;
        let (tenant_id, old, new) = (tenant.id.clone(), old_name.to_owned(), new_name.to_owned());
        self.with_store(move |store| store.rename_tag(&tenant_id, &old, &new)).await?;
        self.index.rename_tag(&tenant.id, old_name, new_name);
        Ok(())
    }

    /// Subjects keep the label of a deleted tag, in the store and so in the index: searching by
    /// it is refused until a tag of that name exists again.
    pub async fn delete_tag(&self, tenant: &Tenant, name: &str) -> Result<()> {
        let (tenant_id, name) = (tenant.id.clone(), name.to_owned());
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

    /// Refuses labels that name no existing tag.
    pub(super) async fn check_tags_exist(&self, tenant: &Tenant, tags: &[String]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let known = self.list_tags(tenant).await?;
        match tags.iter().find(|t| !known.contains(t)) {
            Some(unknown) => Err(Error::InvalidRequest(format!("tag '{unknown}' does not exist; create it first"))),
            None => Ok(()),
        }
    }
}
