//! `<data_dir>/audit.log`: the core's audit events (tracing target `audit`) as JSON lines.
//!
//! The subscriber is set up before the settings say where the data directory is, so the file
//! is opened later by `serve`; until then audit events go only to the normal log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;

static AUDIT_FILE: OnceLock<Mutex<File>> = OnceLock::new();

/// Appends audit events to `path` from now on; readable by the owner only.
pub fn open(path: &Path) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).with_context(|| format!("opening the audit log {}", path.display()))?;
    if AUDIT_FILE.set(Mutex::new(file)).is_err() {
        anyhow::bail!("the audit log is already open");
    }
    tracing::info!(path = %path.display(), "audit log");
    Ok(())
}

/// Hands the JSON formatter one buffer per event.
pub struct AuditWriter;

impl<'a> MakeWriter<'a> for AuditWriter {
    type Writer = AuditLine;

    fn make_writer(&'a self) -> AuditLine {
        AuditLine(Vec::with_capacity(256))
    }
}

/// One event, written to the file in a single append when complete, so concurrent events
/// never interleave within a line.
pub struct AuditLine(Vec<u8>);

impl Write for AuditLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for AuditLine {
    fn drop(&mut self) {
        let Some(file) = AUDIT_FILE.get() else { return };
        if self.0.is_empty() {
            return;
        }
        let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&self.0) {
            // Not through tracing: this runs inside the subscriber.
            eprintln!("facegate: writing the audit log failed: {e}");
        }
    }
}
