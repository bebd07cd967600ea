//! Where `facegate import` writes: straight into a stopped server's data directory, or through
//! a running server's miiCloud API (`--url`). Both answer the same two questions, so planning,
//! concurrency and the summary are shared.

use facegate_core::service::{FacePolicy, NewSubject, SubjectKey};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use facegate_core::{Code, Error, FaceService, ImageUpload, Profile, Tenant};
use facegate_server::error::ERROR_CODE_HEADER;
use reqwest::{multipart, StatusCode, Url};
use serde::Deserialize;

/// A person already stored: what a re-run needs to skip their imported images and keep their
/// profile.
pub struct StoredPerson {
    pub profile: Profile,
    /// Stored image names, `enroll/<stem>_<random>.<ext>`.
    pub image_names: Vec<String>,
}

/// Why one image was not imported.
pub struct Failure {
    /// Short, stable reason for the summary's counts.
    pub reason: &'static str,
    pub detail: String,
    /// Nothing more can succeed (storage full, credentials refused): stop attempting.
    pub fatal: bool,
}

impl Failure {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into(), fatal: false }
    }
}

pub enum Destination {
    /// The service over a data directory or a PostgreSQL database; `_backend` holds the data
    /// directory's lock for the whole import.
    DataDir {
        service: Arc<FaceService>,
        _backend: crate::runtime::Backend,
        tenant: Tenant,
    },
    Api(ApiClient),
}

impl Destination {
    pub async fn stored_person(&self, customer_person_id: &str) -> anyhow::Result<Option<StoredPerson>> {
        match self {
            // The service's own lookup, which runs the store off the async threads.
            Destination::DataDir { service, tenant, .. } => {
                match service.subject_record(tenant, SubjectKey::CustomerId(customer_person_id)).await {
                    Ok(record) => Ok(Some(StoredPerson {
                        profile: record.subject.profile,
                        image_names: record.samples.into_iter().map(|s| s.image_name).collect(),
                    })),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Destination::Api(api) => api.stored_person(customer_person_id).await,
        }
    }

    /// Enrolls a new person with `upload` or, with `exists`, adds it to the stored person.
    pub async fn add_image(
        &self,
        customer_person_id: &str,
        profile: &Profile,
        upload: ImageUpload,
        exists: bool,
    ) -> Result<(), Failure> {
        match self {
            Destination::DataDir { service, tenant, .. } => {
                let result = if exists {
                    let key = SubjectKey::CustomerId(customer_person_id);
                    service
                        .update_subject(tenant, key, profile.clone(), Some(upload), FacePolicy::Largest)
                        .await
                        .map(|_| ())
                } else {
                    let new = NewSubject {
                        customer_id: Some(customer_person_id.to_owned()),
                        profile: profile.clone(),
                        tags: Vec::new(),
                        image: upload,
                        policy: FacePolicy::Largest,
                    };
                    service.create_subject(tenant, new).await.map(|_| ())
                };
                result.map_err(|e| Failure {
                    reason: failure_reason(&e),
                    detail: e.to_string(),
                    fatal: matches!(e, Error::StorageFull),
                })
            }
            Destination::Api(api) => api.add_image(customer_person_id, profile, upload, exists).await,
        }
    }
}

/// A short, stable name for why an image was not imported.
fn failure_reason(error: &Error) -> &'static str {
    match error {
        Error::Storage(_) => "storage error",
        Error::Engine(_) => "inference error",
        other => code_reason(other.code()),
    }
}

/// The reason for a core error code, whether the error happened here or on a remote server.
fn code_reason(code: Code) -> &'static str {
    match code {
        Code::NoFace => "no face",
        Code::MultipleFaces => "multiple faces",
        Code::PoorQuality => "poor quality",
        Code::PayloadTooLarge => "too large",
        Code::UnsupportedMediaType => "unsupported image",
        Code::InvalidImage => "invalid image",
        Code::InvalidRequest => "invalid request",
        Code::NotFound => "not found",
        Code::Conflict => "conflict",
        Code::Overloaded => "overloaded",
        Code::InsufficientStorage => "storage full",
        Code::Internal => "internal error",
    }
}

/// A running server's miiCloud API, with the tenant's token.
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    authorization: String,
}

/// How often a request the server refused as busy (503) is tried before it counts as failed.
const BUSY_ATTEMPTS: u32 = 8;

#[derive(Deserialize)]
struct PersonView {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    #[serde(default)]
    images: Vec<ImageEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    image: String,
}

#[derive(Deserialize)]
struct FailureBody {
    message: String,
}

impl ApiClient {
    pub fn new(url: &str, token: &str) -> anyhow::Result<Self> {
        let mut base = Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(base.scheme(), "http" | "https") && !base.cannot_be_a_base(),
            "--url {url:?} must be an http:// or https:// address"
        );
        // Joined paths are relative to the last segment: make it a directory.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(120)).build().context("building the HTTP client")?;
        Ok(Self { http, base, authorization: format!("Token {token}") })
    }

    /// The address of `miicloud/person[/<customer_person_id>]`, the id percent-encoded.
    fn person_url(&self, customer_person_id: Option<&str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["miicloud", "person"]);
            if let Some(id) = customer_person_id {
                segments.push(id);
            }
        }
        url
    }

    /// Fails on a refused token at once, so that a wrong `--token` stops the import before it
    /// starts rather than failing every image.
    pub async fn stored_person(&self, customer_person_id: &str) -> anyhow::Result<Option<StoredPerson>> {
        let url = self.person_url(Some(customer_person_id));
        let response = self.send(|| self.http.get(url.clone())).await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let message = response.json::<FailureBody>().await.map(|b| b.message).unwrap_or_default();
            anyhow::bail!("GET {url}: {status} {message}");
        }
        let person: PersonView = response.json().await.with_context(|| format!("GET {url}: unexpected answer"))?;
        Ok(Some(StoredPerson {
            profile: Profile {
                first_name: person.first_name,
                last_name: person.last_name,
                email: person.email,
                phone: person.phone,
            },
            image_names: person.images.into_iter().map(|i| i.image).collect(),
        }))
    }

    async fn add_image(
        &self,
        customer_person_id: &str,
        profile: &Profile,
        upload: ImageUpload,
        exists: bool,
    ) -> Result<(), Failure> {
        let form = || {
            let mut form = multipart::Form::new().text("customer_person_id", customer_person_id.to_owned());
            let fields = [
                ("first_name", &profile.first_name),
                ("last_name", &profile.last_name),
                ("email", &profile.email),
                ("phone", &profile.phone),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    form = form.text(name, value.clone());
                }
            }
            let file = multipart::Part::bytes(upload.bytes.clone()).file_name(upload.file_name.clone());
            form.part("image_path", file)
        };
        let response = if exists {
            let url = self.person_url(Some(customer_person_id));
            self.send(|| self.http.put(url.clone()).multipart(form())).await
        } else {
            let url = self.person_url(None);
            self.send(|| self.http.post(url.clone()).multipart(form())).await
        };
        let response = response.map_err(|e| Failure::new("connection error", format!("{e:#}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let code = response.headers().get(ERROR_CODE_HEADER).and_then(|v| v.to_str().ok()).and_then(Code::from_name);
        let message = response.json::<FailureBody>().await.map(|b| b.message).unwrap_or_default();
        let reason = reason_of(status, code);
        let fatal =
            matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::INSUFFICIENT_STORAGE);
        Err(Failure { reason, detail: format!("{status}: {message}"), fatal })
    }

    /// Sends the request `build` makes, again with backoff while the server answers 503 (its
    /// inference queue is full) or cannot be reached for a moment.
    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=BUSY_ATTEMPTS {
            let last = attempt == BUSY_ATTEMPTS;
            match build().header(reqwest::header::AUTHORIZATION, &self.authorization).send().await {
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE && !last => {}
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() && !last => {}
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        unreachable!("the last attempt returns")
    }
}

/// The summary's reason for a refused upload: the one a local import gives for the core error
/// code the server names (`ERROR_CODE_HEADER`), else, for an answer with no code (credentials
/// refused, a proxy's own error page), the status's.
fn reason_of(status: StatusCode, code: Option<Code>) -> &'static str {
    match code {
        // A remote server's internal detail stays in its log; locally the variant is known.
        Some(Code::Internal) | None => match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported image",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid image",
            StatusCode::BAD_REQUEST => "invalid request",
            StatusCode::CONFLICT => "conflict",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "credentials refused",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded",
            StatusCode::INSUFFICIENT_STORAGE => "storage full",
            _ => "server error",
        },
        Some(code) => code_reason(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_urls_encode_the_id_under_any_base_path() {
        let api = ApiClient::new("http://127.0.0.1:8080", "t").expect("client");
        assert_eq!(api.person_url(None).as_str(), "http://127.0.0.1:8080/miicloud/person");
        assert_eq!(api.person_url(Some("a b/c")).as_str(), "http://127.0.0.1:8080/miicloud/person/a%20b%2Fc");
        let proxied = ApiClient::new("https://faces.example.com/gate/", "t").expect("client");
        assert_eq!(proxied.person_url(Some("x")).as_str(), "https://faces.example.com/gate/miicloud/person/x");
        assert!(ApiClient::new("faces.example.com", "t").is_err());
        assert!(ApiClient::new("ftp://faces.example.com", "t").is_err());
    }

    #[test]
    fn refusals_map_to_the_same_reasons_as_a_local_import() {
        let cases = [
            (StatusCode::UNPROCESSABLE_ENTITY, Error::NoFace),
            (StatusCode::UNPROCESSABLE_ENTITY, Error::MultipleFaces),
            (StatusCode::UNPROCESSABLE_ENTITY, Error::PoorQuality("blur".into())),
            (StatusCode::UNPROCESSABLE_ENTITY, Error::InvalidImage("truncated".into())),
            (StatusCode::PAYLOAD_TOO_LARGE, Error::TooLarge("big".into())),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, Error::UnsupportedImage("gif".into())),
            (StatusCode::INSUFFICIENT_STORAGE, Error::StorageFull),
        ];
        for (status, error) in cases {
            assert_eq!(reason_of(status, Some(error.code())), failure_reason(&error), "{error}");
        }
    }

    #[test]
    fn the_reason_follows_the_code_not_the_wording() {
        // The same status and no code: the status alone decides, whatever the message said.
        assert_eq!(reason_of(StatusCode::UNPROCESSABLE_ENTITY, None), "invalid image");
        assert_eq!(reason_of(StatusCode::UNPROCESSABLE_ENTITY, Some(Code::NoFace)), "no face");
        assert_eq!(reason_of(StatusCode::FORBIDDEN, None), "credentials refused");
        assert_eq!(reason_of(StatusCode::INTERNAL_SERVER_ERROR, Some(Code::Internal)), "server error");
    }
}
