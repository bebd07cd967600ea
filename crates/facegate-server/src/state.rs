//! What every handler can reach.

use std::sync::Arc;
use std::time::Duration;

use facegate_core::FaceService;

use crate::auth::forwarded::TrustedProxies;
use crate::auth::replay::ReplayGuard;
use crate::auth::throttle::AuthFailureThrottle;
use crate::auth::AuthGate;
use crate::config::Settings;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<FaceService>,
    pub settings: Arc<Settings>,
    /// The limit on failed authentications per client.
    pub auth_gate: Arc<AuthGate>,
    /// Signatures of NEC ID writes already accepted.
    pub replay_guard: Arc<ReplayGuard>,
}

impl AppState {
    pub fn new(service: Arc<FaceService>, settings: Settings) -> Self {
        let throttle = AuthFailureThrottle::new(
            settings.auth_failure_burst,
            Duration::from_secs(settings.auth_failure_refill_secs),
        );
        // `validate` has refused unparseable entries already; none reach here in `serve`.
        let trusted_proxies = TrustedProxies::parse(&settings.trusted_proxies).unwrap_or_else(|e| {
            tracing::error!(error = %e, "ignoring trusted_proxies");
            TrustedProxies::default()
        });
        let replay_guard = Arc::new(ReplayGuard::new(settings.sigv4().max_skew));
        Self {
            service,
            settings: Arc::new(settings),
            auth_gate: Arc::new(AuthGate::new(throttle, trusted_proxies)),
            replay_guard,
        }
    }
}
