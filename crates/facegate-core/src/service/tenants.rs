//! Tenants (a miiCloud customer and an NEC application at once) and their credentials.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

use std::sync::Arc;
use std::time::Duration;

use super::audit::record;
use super::state::FaceService;
use super::text::rfc3339_after;
use crate::error::{Error, Result};
use crate::model::{ApiCredentials, SightingPurge, StoredCredentials, Tenant, TenantPurge};
use crate::ports::Store;

/// Longest tenant name, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 64;

/// How long a tenant's old credentials keep working after `facegate tenant rotate-credentials`,
/// unless `--grace` says otherwise: a day, so that every client of the tenant (in every time
/// zone, on a working day's deploy schedule) can be given the new ones before the old ones stop,
/// while a leaked credential stays good for at most that day. `--grace 0` revokes at once, for a
/// credential known to be compromised.
pub const DEFAULT_CREDENTIAL_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The longest a tenant may keep the faces its searches find nobody for: a year. Faces of people
/// who never enrolled are personal data kept without their asking, so the keeping is bounded;
/// a year covers a yearly visitor (a conference, a season ticket) and no more.
pub const MAX_UNKNOWN_FACES_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A freshly created tenant with its plaintext credentials, shown once.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub tenant: Tenant,
    /// miiCloud `Authorization: Token …`.
    pub token: String,
    /// NEC ID `x-api-key` and AWS Signature V4 keys.
    pub credentials: ApiCredentials,
}

/// The tenant use cases that need no model: creating a tenant, rotating its credentials,
/// deleting it. `facegate tenant` and `facegate import` run them on a store without loading a
/// pack; a running service reaches the same through [`FaceService::create_tenant`]. Each call
/// blocks on the store.
#[derive(Clone)]
pub struct TenantAdmin {
    store: Arc<dyn Store>,
}

impl FaceService {
    /// Creates a tenant as [`TenantAdmin::create_tenant`] does, off the async threads.
    pub async fn create_tenant(&self, name: &str) -> Result<NewTenant> {
        let (admin, name) = (TenantAdmin::new(self.store.clone()), name.to_owned());
        super::state::blocking(move || admin.create_tenant(&name)).await
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.with_store(|store| store.list_tenants()).await
    }

    /// Makes sure `name` exists and accepts `token` (the sandbox's public token).
    pub async fn ensure_tenant_with_token(&self, name: &str, token: &str) -> Result<Tenant> {
        let (name, hash) = (name.to_owned(), hash_secret(token));
        self.with_store(move |store| store.ensure_tenant(&name, &hash)).await
    }

    /// The tenant a token belongs to.
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<Tenant>> {
        let hash = hash_secret(token);
        self.with_store(move |store| store.tenant_by_token_hash(&hash)).await
    }

    /// The tenant an API key belongs to.
    pub async fn authenticate_api_key(&self, api_key: &str) -> Result<Option<Tenant>> {
        let hash = hash_secret(api_key);
        self.with_store(move |store| store.tenant_by_api_key_hash(&hash)).await
    }

    /// Records a signed write's signature digest as used for `keep`; `false` for a replay.
    pub async fn admit_signature(&self, digest: [u8; 32], keep: Duration) -> Result<bool> {
        self.with_store(move |store| store.admit_signature(&digest, keep)).await
    }

    /// Forgets a signature digest, for a write refused before it did anything.
    pub async fn forget_signature(&self, digest: [u8; 32]) -> Result<()> {
        self.with_store(move |store| store.forget_signature(&digest)).await
    }

    /// The secret of `access_key_id` when it belongs to `tenant`, for signature verification.
    pub async fn access_key_secret(&self, tenant: &Tenant, access_key_id: &str) -> Result<Option<String>> {
        let (tenant_id, akid) = (tenant.id.clone(), access_key_id.to_owned());
        self.with_store(move |store| store.access_key_secret(&tenant_id, &akid)).await
    }
}

/// SHA-256 hex of a token or key; only hashes are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// 40 hex characters, the shape of the reference's tokens.
pub fn random_token() -> String {
    let bytes: [u8; 20] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// A tenant's new credentials in plaintext, shown once, and when its old ones stop working.
#[derive(Debug, Clone)]
pub struct RotatedCredentials {
    pub tenant: Tenant,
    /// miiCloud `Authorization: Token …`.
    pub token: String,
    /// NEC ID `x-api-key` and AWS Signature V4 keys.
    pub credentials: ApiCredentials,
    /// How many credentials (tokens, API keys, access keys) were set to expire.
    pub retired: u64,
    /// When the retired ones stop working (RFC 3339, UTC; now for a zero grace).
    pub old_expire_at: String,
}

impl TenantAdmin {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates a tenant with a token and NEC credentials; only their hashes (and the signing
    /// secret, which verifying a signature needs) are stored.
    pub fn create_tenant(&self, name: &str) -> Result<NewTenant> {
        validate_tenant_name(name)?;
        let token = random_token();
        let tenant = self.store.create_tenant(name, &hash_secret(&token))?;
        let credentials = random_credentials();
        self.store.add_api_credentials(
            &tenant.id,
            &hash_secret(&credentials.api_key),
            &credentials.access_key_id,
            &credentials.secret_access_key,
        )?;
        Ok(NewTenant { tenant, token, credentials })
    }

    /// Issues the tenant `name` a new token, API key and access key, and lets its old ones work for
    /// `grace` more. Audited as `rotate_credentials` (the new access key id, never a secret).
    pub fn rotate_credentials(&self, name: &str, grace: Duration) -> Result<RotatedCredentials> {
        let tenant = self.tenant_named(name)?;
        let token = random_token();
        let credentials = random_credentials();
        let stored = StoredCredentials {
            token_hash: hash_secret(&token),
            api_key_hash: hash_secret(&credentials.api_key),
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
        };
        let input = format!("grace_secs={}", grace.as_secs());
        match self.store.rotate_credentials(&tenant.id, &stored, grace) {
            Ok(retired) => {
                let output = format!("access_key_id={} retired={retired}", credentials.access_key_id);
                record(&tenant, "rotate_credentials", &input, &output, "ok");
                let old_expire_at = rfc3339_after(grace);
                Ok(RotatedCredentials { tenant, token, credentials, retired, old_expire_at })
            }
            Err(e) => {
                record(&tenant, "rotate_credentials", &input, "", e.code().name());
                Err(e)
            }
        }
    }

    /// Deletes the tenant `name` and everything stored under it. Audited as `delete_tenant`, with
    /// what was removed.
    pub fn delete_tenant(&self, name: &str) -> Result<(Tenant, TenantPurge)> {
        let tenant = self.tenant_named(name)?;
        match self.store.delete_tenant(&tenant.id) {
            Ok(purge) => {
                let p = &purge;
                let output = format!(
                    "subjects={} face_samples={} images={} tags={} bulk_jobs={} bulk_records={} credentials={}",
                    p.subjects, p.face_samples, p.images, p.tags, p.bulk_jobs, p.bulk_records, p.credentials
                );
                record(&tenant, "delete_tenant", "", &output, "ok");
                Ok((tenant, purge))
            }
            Err(e) => {
                record(&tenant, "delete_tenant", "", "", e.code().name());
                Err(e)
            }
        }
    }

    /// The tenant `name` and how long it keeps unknown faces (`None`: it keeps none).
    pub fn unknown_faces(&self, name: &str) -> Result<(Tenant, Option<Duration>)> {
        let tenant = self.tenant_named(name)?;
        let retention = self.store.unknown_faces_retention(&tenant.id)?;
        Ok((tenant, retention))
    }

    /// Turns the tenant's keeping of unknown faces on, for `retention` (whole seconds, at most
    /// [`MAX_UNKNOWN_FACES_RETENTION`]), or off with `None`, which deletes what it kept (the
    /// returned counts). Audited as `set_unknown_faces`.
    pub fn set_unknown_faces(&self, name: &str, retention: Option<Duration>) -> Result<(Tenant, SightingPurge)> {
        if let Some(keep) = retention {
            if keep.as_secs() == 0 || keep > MAX_UNKNOWN_FACES_RETENTION {
                return Err(Error::InvalidRequest(format!(
                    "the retention of unknown faces must be 1 second to {} days",
                    MAX_UNKNOWN_FACES_RETENTION.as_secs() / 86_400
                )));
            }
        }
        let tenant = self.tenant_named(name)?;
        let retention = retention.map(|keep| Duration::from_secs(keep.as_secs()));
        let input = match retention {
            Some(keep) => format!("on retention_secs={}", keep.as_secs()),
            None => "off".to_owned(),
        };
        let outcome = self.store.set_unknown_faces_retention(&tenant.id, retention);
        let output = outcome
            .as_ref()
            .map(|p| format!("sightings={} unknown_people={}", p.sightings, p.unknown_people))
            .unwrap_or_default();
        record(
            &tenant,
            "set_unknown_faces",
            &input,
            &output,
            outcome.as_ref().map_or_else(|e| e.code().name(), |_| "ok"),
        );
        outcome.map(|purge| (tenant, purge))
    }

    /// The tenant called `name`; `NotFound` when there is none.
    fn tenant_named(&self, name: &str) -> Result<Tenant> {
        self.store.list_tenants()?.into_iter().find(|t| t.name == name).ok_or(Error::NotFound("tenant"))
    }
}

/// Fresh NEC credentials, shaped like AWS's: a 20-character `AKIA…` access key id and a
/// 40-character secret; the API key is 40 alphanumerics.
pub fn random_credentials() -> ApiCredentials {
    let mut rng = rand::thread_rng();
    let mut alnum = |n: usize| -> String { (&mut rng).sample_iter(&Alphanumeric).take(n).map(char::from).collect() };
    let api_key = alnum(40);
    let access_key_id = format!("AKIA{}", alnum(16).to_ascii_uppercase());
    let secret_access_key = alnum(40);
    ApiCredentials { api_key, access_key_id, secret_access_key }
}

/// Tenant names name folders (a tenant's area of the bulk bucket), so they are kept to a safe
/// alphabet: ASCII letters, digits, `.`, `_` and `-`, not starting with a dot. No name can then
/// hold a `/`, be `..`, or be hidden.
pub fn validate_tenant_name(name: &str) -> Result<()> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_TENANT_NAME_CHARS || name.starts_with('.') || !name.chars().all(safe) {
        return Err(Error::InvalidRequest(format!(
            "tenant name must be 1 to {MAX_TENANT_NAME_CHARS} of A-Z a-z 0-9 . _ - and not start with a dot; got {name:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_cannot_name_another_folder() {
        for ok in ["acme", "Acme-2", "a.b_c", "sandbox"] {
            assert!(validate_tenant_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "evil/sub", "..", "evil/..", ".hidden", "a b", "ünï", "a\\b", &"x".repeat(65)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_faces_are_off_until_set_and_their_retention_is_bounded() {
        let store = Arc::new(crate::testing::MemoryStore::default());
        let admin = TenantAdmin::new(store);
        admin.create_tenant("acme").expect("create");
        assert_eq!(admin.unknown_faces("acme").expect("read").1, None, "off by default");
        let month = Duration::from_secs(30 * 86_400);
        admin.set_unknown_faces("acme", Some(month)).expect("on");
        assert_eq!(admin.unknown_faces("acme").expect("read").1, Some(month));
        for bad in [Duration::ZERO, Duration::from_millis(500), MAX_UNKNOWN_FACES_RETENTION + Duration::from_secs(1)] {
            let refused = admin.set_unknown_faces("acme", Some(bad));
            assert!(matches!(refused, Err(Error::InvalidRequest(_))), "{bad:?}: {refused:?}");
        }
        assert_eq!(admin.unknown_faces("acme").expect("read").1, Some(month), "a refused change changes nothing");
        admin.set_unknown_faces("acme", Some(MAX_UNKNOWN_FACES_RETENTION)).expect("a year is allowed");
        admin.set_unknown_faces("acme", None).expect("off");
        assert_eq!(admin.unknown_faces("acme").expect("read").1, None);
        assert!(matches!(admin.set_unknown_faces("nobody", None), Err(Error::NotFound("tenant"))));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), a);
        let c = random_credentials();
        assert_eq!(c.access_key_id.len(), 20);
        assert!(c.access_key_id.starts_with("AKIA"));
        assert_eq!(c.secret_access_key.len(), 40);
        assert_ne!(c.api_key, random_credentials().api_key);
    }
}
