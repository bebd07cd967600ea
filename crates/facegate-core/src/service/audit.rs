//! The audit trail: who did what to which identity, and how it ended.
//!
//! Every enrollment, update, deletion, search and verification is one event on the `audit`
//! tracing target, with the tenant, the action, the ids it named, the ids it produced or found
//! and the outcome (`ok` or the error code). Ids and scores only: never an image, a template or
//! a profile field. `facegate serve` writes these events as JSON lines to
//! `<data_dir>/audit.log`.

use std::future::Future;

use crate::error::Result;
use crate::model::Tenant;

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
        tenant = %escape_controls(&tenant.name),
        tenant_id = %tenant.id,
        action,
        input = %escape_controls(input),
        output = %escape_controls(output),
        outcome,
        "audit"
    );
}

/// `text` with every control character (newlines, ANSI escapes) written as a Rust escape, so
/// that ids and file names a client chose cannot forge or colour lines of the operator's log.
/// Everything else is left as it is, so the JSON audit lines stay readable.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain ünï"), "plain ünï");
        assert_eq!(escape_controls("a\nFORGED \u{1b}[31mred"), "a\\nFORGED \\u{1b}[31mred");
        assert!(!escape_controls("x\r\n\t\u{85}").chars().any(char::is_control));
    }
}
