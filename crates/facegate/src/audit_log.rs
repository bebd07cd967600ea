//! `<data_dir>/audit.log`: the core's audit events (tracing target `audit`) as JSON lines.
//!
//! The subscriber is set up before the settings say where the data directory is, so the file
//! is opened later, by each command that changes or copies the gallery ([`open_in`]: `serve`,
//! direct `import`, `reindex`, `tenant delete` and `rotate-credentials`, `backup`, `restore`);
//! until then audit events go only to the normal log. Every process appends whole lines (`O_APPEND`), so a command beside a
//! running server interleaves lines with it, never bytes. [`reopen`] starts a new file after
//! logrotate has moved the old one away (`serve` calls it on SIGHUP).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;

/// The file's name in the data directory.
pub const AUDIT_LOG_FILE: &str = "audit.log";

/// The open file, and its path for [`reopen`].
struct AuditFile {
    path: PathBuf,
    file: Mutex<File>,
}

static AUDIT_FILE: OnceLock<AuditFile> = OnceLock::new();

/// Appends audit events to `<data_dir>/audit.log` from now on, creating the directory (0700)
/// when missing.
pub fn open_in(data_dir: &Path) -> anyhow::Result<()> {
    facegate_store::private_fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    open(&data_dir.join(AUDIT_LOG_FILE))
}

/// Appends audit events to `path` from now on; readable by the owner only.
fn open(path: &Path) -> anyhow::Result<()> {
    let file = open_file(path)?;
    if AUDIT_FILE.set(AuditFile { path: path.to_owned(), file: Mutex::new(file) }).is_err() {
        anyhow::bail!("the audit log is already open");
    }
    tracing::info!(path = %path.display(), "audit log");
    Ok(())
}

fn open_file(path: &Path) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("opening the audit log {}", path.display()))
}

/// Opens the audit log's path anew (creating the file if it was moved away) and writes every
/// later event there; a line being written finishes in the old file. The logrotate convention:
/// rename the file, then signal the process. Nothing to do before [`open_in`]. On failure the
/// old file stays in use.
pub fn reopen() -> anyhow::Result<Option<PathBuf>> {
    let Some(audit) = AUDIT_FILE.get() else { return Ok(None) };
    let file = open_file(&audit.path)?;
    *audit.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = file;
    Ok(Some(audit.path.clone()))
}

/// The layer that writes audit events as JSON lines to the file, whatever the stderr log's filter
/// says: audit events, and the request spans they sit in (for their fields; a span is no line).
/// The current span is the HTTP request's, when there is one: its `request_id` ties each audit
/// line to the request's log lines and to the id the client got back. Every subscriber the
/// binary installs carries it (the global one, and `import`'s quieter one), so no command loses
/// its audit lines to a log setting.
pub fn layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(AuditWriter)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() == facegate_core::service::AUDIT_TARGET
                || (meta.is_span() && meta.name() == facegate_server::REQUEST_SPAN)
        }))
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
        let Some(audit) = AUDIT_FILE.get() else { return };
        if self.0.is_empty() {
            return;
        }
        let mut file = audit.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&self.0) {
            // Not through tracing: this runs inside the subscriber.
            eprintln!("facegate: writing the audit log failed: {e}");
        }
    }
}
