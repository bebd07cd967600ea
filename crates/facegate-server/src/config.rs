//! What the HTTP layer needs at run time, and the defaults of the server's own limits.
//!
//! The binary owns the configuration (`crates/facegate/src/config.rs`): it reads flags,
//! environment variables and the TOML file, and builds a [`Settings`] from them. This module
//! parses nothing; it holds the plain struct the handlers read and the constants the binary's
//! configuration takes its server defaults from.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use facegate_core::service::DEFAULT_MAX_IMAGE_BYTES;

/// The public token printed in the miiCloud document, accepted by `serve --sandbox`.
pub const SANDBOX_TOKEN: &str = "0e653da4969a757d21de0ffa6387d5fbd6401131";
pub const SANDBOX_TENANT: &str = "sandbox";

/// Address to listen on: loopback, so that a fresh install is not exposed.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Largest request body: the core's image limit, since a request carries one image. Larger
/// bodies get 413.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = DEFAULT_MAX_IMAGE_BYTES;
/// Failed authentications one address may make in a burst before it gets 429. 20 is more than
/// any client misconfiguration needs to show itself, and far too few to guess a credential.
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 20;
/// Seconds after which a limited address may fail once more: 20 a minute at 3.
pub const DEFAULT_AUTH_FAILURE_REFILL_SECS: u64 = 3;
/// Seconds in-flight requests get to finish after SIGTERM: more than any one request takes, and
/// within the 30 s Kubernetes and systemd wait before they kill.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Seconds a client has to send a request's line and headers: ample for any real client, also
/// over a slow link, and a half-sent request's socket is freed quickly.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Seconds a kept-alive connection may sit with no request, as Apache's KeepAliveTimeout: long
/// enough for a client's next call in a burst, short enough that idle sockets do not pile up.
pub const DEFAULT_KEEP_ALIVE_IDLE_SECS: u64 = 5;
/// Seconds a client has to send a request body once its headers are in: a 10 MiB upload takes
/// 84 s at 1 Mbit/s; a client slower than that is holding a connection, not uploading.
pub const DEFAULT_REQUEST_BODY_TIMEOUT_SECS: u64 = 120;
/// Connections open at once: far more than the inference pool can serve at a time, and well
/// within the usual file limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// What the HTTP layer reads at run time, and nothing else: the service, the store and the
/// background work are configured and started by the composition root (`facegate serve`), which
/// fills this from its one configuration table. [`Settings::default`] is the defaults, for tests
/// and embedders.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest request body; larger bodies get 413.
    pub body_limit_bytes: usize,
    /// Seconds a client has to send a request body once its headers are in.
    pub request_body_timeout_secs: u64,
    /// Seconds a client has to send a request's line and headers, counted from when the
    /// connection is ready for one (accepted, or the previous answer sent).
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit with no request before it is closed. Must not
    /// exceed `header_read_timeout_secs`, whose timer also runs between requests.
    pub keep_alive_idle_secs: u64,
    /// Connections open at once; beyond it a new connection replaces the one idle the longest.
    /// Lowered at start when the process's file limit leaves less room.
    pub max_connections: usize,
    /// Addresses or CIDR blocks of reverse proxies whose `X-Forwarded-For` / `Forwarded`
    /// headers are believed, for the auth failure limit. Empty: every caller is its socket's
    /// address, and no header is believed.
    pub trusted_proxies: Vec<String>,
    /// Failed authentications one address may make in a burst before it gets 429; 0 turns
    /// the limit off.
    pub auth_failure_burst: u32,
    /// Seconds after which an address may fail once more.
    pub auth_failure_refill_secs: u64,
    /// AWS Signature V4 scope NEC ID clients sign for.
    pub sigv4_region: String,
    pub sigv4_service: String,
    /// Origins browsers may call the APIs from (`*`: any); empty: CORS off.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let sigv4 = crate::auth::sigv4::SigV4Config::default();
        Self {
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            request_body_timeout_secs: DEFAULT_REQUEST_BODY_TIMEOUT_SECS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            keep_alive_idle_secs: DEFAULT_KEEP_ALIVE_IDLE_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            trusted_proxies: Vec::new(),
            auth_failure_burst: DEFAULT_AUTH_FAILURE_BURST,
            auth_failure_refill_secs: DEFAULT_AUTH_FAILURE_REFILL_SECS,
            sigv4_region: sigv4.region,
            sigv4_service: sigv4.service,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// A setting, or a combination of them, that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// The signature verifier's settings; the allowed clock skew is AWS's five minutes.
    pub fn sigv4(&self) -> crate::auth::sigv4::SigV4Config {
        crate::auth::sigv4::SigV4Config {
            region: self.sigv4_region.clone(),
            service: self.sigv4_service.clone(),
            ..Default::default()
        }
    }

    /// Checks the HTTP layer's limits, alone and in the combinations that no single field can.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError("body_limit_bytes must be at least 1024".into()));
        }
        for (name, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("keep_alive_idle_secs", self.keep_alive_idle_secs),
            ("request_body_timeout_secs", self.request_body_timeout_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if self.keep_alive_idle_secs > self.header_read_timeout_secs {
            return Err(ConfigError(format!(
                "keep_alive_idle_secs ({}) must not exceed header_read_timeout_secs ({}): the header timer also runs \
                 while a kept-alive connection waits for its next request",
                self.keep_alive_idle_secs, self.header_read_timeout_secs
            )));
        }
        if self.max_connections == 0 {
            return Err(ConfigError("max_connections must be at least 1".into()));
        }
        crate::auth::forwarded::TrustedProxies::parse(&self.trusted_proxies).map_err(ConfigError)?;
        for origin in &self.cors_allowed_origins {
            crate::cors::check_origin(origin).map_err(ConfigError)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_validation() {
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn keep_alive_may_not_outlast_the_header_timer() {
        let s = Settings { keep_alive_idle_secs: 11, header_read_timeout_secs: 10, ..Default::default() };
        assert!(s.validate().is_err_and(|e| e.to_string().contains("must not exceed")));
    }

    #[test]
    fn the_body_limit_is_the_image_limit() {
        assert_eq!(Settings::default().body_limit_bytes, DEFAULT_MAX_IMAGE_BYTES);
    }
}
