//! The audit trail: who did what to which identity, and how it ended.
//!
//! Every enrollment, update, deletion, search and verification is one event on the `audit`
//! tracing target, with the tenant, the action, the ids it named, the ids it produced or found
//! and the outcome (`ok` or the error code). Ids and scores only: never an image, a template or
//! a profile field. `facegate serve` writes these events as JSON lines to
//! `<data_dir>/audit.log`.

use std::future::Future;

use super::FaceMatch;
use crate::{Result, Tenant};

/// The tracing target audit events are sent to.
pub const AUDIT_TARGET: &str = "audit";

/// Runs `work` and records its outcome; `output` describes a success.
pub(crate) async fn audited<T>(
    tenant: &Tenant,
    action: &'static str,
    input: String,
    output: impl FnOnce(&T) -> String,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let result = work.await;
    let (outcome, found) = match &result {
        Ok(value) => ("ok", output(value)),
        Err(e) => (e.code().name(), String::new()),
    };
    record(tenant, action, &input, &found, outcome);
    result
}

/// One audit event for work that is not a single call, such as a bulk job's record.
pub(crate) fn record(tenant: &Tenant, action: &'static str, input: &str, output: &str, outcome: &str) {
    tracing::info!(
        target: AUDIT_TARGET,
        tenant = %tenant.name,
        tenant_id = %tenant.id,
        action,
        input = %input,
        output = %output,
        outcome,
        "audit"
    );
}

/// Matched subjects and their scores for the audit trail, best first.
pub(crate) fn audit_candidates<'a>(found: impl Iterator<Item = (&'a str, u32)>) -> String {
    let listed: Vec<String> = found.map(|(subject, score)| format!("{subject}:{score}")).collect();
    format!("subjects={}", listed.join(","))
}

/// For each face of a probe: its candidate and score, or `-` when the gallery had none.
pub(crate) fn audit_matches(faces: &[FaceMatch]) -> String {
    let listed: Vec<String> = faces
        .iter()
        .map(|f| match &f.candidate {
            Some(c) => format!("{}:{}{}", c.subject.id, c.score, if f.known { "" } else { "(unknown)" }),
            None => "-".into(),
        })
        .collect();
    format!("faces={} matches={}", faces.len(), listed.join(","))
}
