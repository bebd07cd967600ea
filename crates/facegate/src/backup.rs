//! `facegate backup --to FILE` and `facegate restore --from FILE --data-dir DIR`.
//!
//! A backup is one file: a consistent snapshot of the SQLite database (SQLite's online backup
//! API, taken beside a running server) and the image files that snapshot references, read after
//! it. The format is facegate's own, so that nothing but this command is needed to check it:
//!
//! ```text
//! MAGIC (16 bytes) | manifest length (u64 LE) | manifest (JSON) | entries | SHA-256 of all before (32 bytes)
//! ```
//!
//! The manifest lists every entry (`facegate.db` first, then `images/<tenant id>/<name>`) with
//! its size and SHA-256, and the entries follow in that order, back to back. Restore checks each
//! entry's hash and the whole file's before the restored database takes its name.
//!
//! Encrypted data stays encrypted: templates in the database and the image files are already
//! sealed under the data key, and are copied as they are; the key itself is never read. The
//! manifest records the key's id, so that the operator knows which key file the restored
//! server needs.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use clap::Args;
use facegate_core::service::{escape_controls, AUDIT_TARGET};
use facegate_store::{
    check_image_path, image_file, inspect_database, revoke_all_credentials, snapshot_database, DatabaseSummary,
};
use facegate_store::{DATABASE_FILE, IMAGES_DIR};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, FileConfig, Flags, StoreArgs};

/// Starts every backup file, so that another file given to `restore` is refused at once.
const MAGIC: &[u8; 16] = b"FACEGATE-BACKUP\n";
/// The layout above; a later change bumps it, and restore refuses a format it does not know.
const FORMAT: u32 = 1;
/// The manifest is read into memory before anything is written. About 150 bytes an image, so
/// this is room for over a million images, and a corrupted length cannot ask for more.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// A referenced image can vanish only when its person was deleted after the snapshot (files are
/// removed after their rows), and a fresh snapshot no longer references it; so the backup starts
/// over. Five such races in a row mean something else removes files (a person, a disk), and the
/// backup stops rather than loop.
const MAX_ATTEMPTS: u32 = 5;
/// Buffer of the backup file's reader and writer: large enough to stream at disk speed, small
/// beside any server's memory.
const COPY_BUFFER: usize = 1 << 20;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The backup file to write (replaced atomically when it exists; created 0600)
    #[arg(long)]
    to: PathBuf,
    #[command(flatten)]
    data: StoreArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file written by `facegate backup`
    #[arg(long)]
    from: PathBuf,
    /// The data directory to restore into; it must be empty or missing
    #[arg(long)]
    data_dir: PathBuf,
    /// Restore with every tenant's credentials revoked (for a restore after a compromise): the
    /// backup's tokens and keys, leaked or revoked since, open nothing, and each tenant gets new
    /// ones with `facegate tenant rotate-credentials NAME`
    #[arg(long)]
    revoke_credentials: bool,
}

/// The manifest: what the file holds and how to check it.
#[derive(Serialize, Deserialize, Debug)]
struct Manifest {
    format: u32,
    created_at: String,
    facegate_version: String,
    schema_version: i64,
    /// Whether templates and images are sealed under a data key; the restored server needs the
    /// same key file (`--encryption-key-file`).
    encrypted: bool,
    encryption_key_id: Option<String>,
    tenants: u64,
    subjects: u64,
    samples: u64,
    entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: String,
    bytes: u64,
    sha256: String,
}

impl Manifest {
    fn summary(&self, file_bytes: u64) -> serde_json::Value {
        let images = self.entries.iter().filter(|e| e.path != DATABASE_FILE);
        serde_json::json!({
            "tenants": self.tenants,
            "subjects": self.subjects,
            "samples": self.samples,
            "images": images.clone().count(),
            "image_bytes": images.map(|e| e.bytes).sum::<u64>(),
            "bytes": file_bytes,
            "encrypted": self.encrypted,
            "encryption_key_id": self.encryption_key_id,
            "schema_version": self.schema_version,
            "created_at": self.created_at,
        })
    }
}

pub fn backup(args: BackupArgs, file: &FileConfig) -> anyhow::Result<()> {
    let config = Config::resolve(file, Flags { store: Some(&args.data), ..Flags::default() })?;
    if config.store.database_url.is_some() {
        bail!(
            "`facegate backup` copies a SQLite data directory. With PostgreSQL (--database-url) the images live \
             in the database too, so `pg_dump --format=custom` of that database is the whole backup, and \
             `pg_restore` brings it back (docs/deployment.md)"
        );
    }
    let data_dir = &config.store.data_dir;
    // Before anything is written, the audit line included: a backup written into the data
    // directory would be renamed over a live file (the database itself, at worst).
    refuse_target_of_the_store(&args.to, data_dir, config.store.encryption_key_file.as_deref())?;
    // Beside a running server (which holds the lock): appends whole lines, as the server does.
    crate::audit_log::open_in(data_dir)?;
    let input = args.to.display().to_string();
    match write_backup(data_dir, &args.to) {
        Ok((manifest, bytes)) => {
            let summary = manifest.summary(bytes);
            audit("backup", &input, &summary.to_string(), "ok");
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"backup": input, "summary": summary}))?);
            Ok(())
        }
        Err(e) => {
            audit("backup", &input, "", "failed");
            Err(e)
        }
    }
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let (manifest, bytes, credentials) = restore_into(&args.from, &args.data_dir, args.revoke_credentials)?;
    // Only now: the audit log is a file of the data directory, which had to be empty.
    crate::audit_log::open_in(&args.data_dir)?;
    let mut summary = manifest.summary(bytes);
    // What a restore brings back into service is the backup's credentials as they were, revoked
    // ones included when revoked after it; the operator is told how many.
    summary["credentials_restored"] = serde_json::json!(if args.revoke_credentials { 0 } else { credentials });
    summary["credentials_revoked"] = serde_json::json!(if args.revoke_credentials { credentials } else { 0 });
    if args.revoke_credentials {
        tracing::warn!(
            revoked = credentials,
            "restored with every credential revoked: give each tenant new ones with `facegate tenant rotate-credentials NAME`"
        );
    } else if credentials > 0 {
        tracing::warn!(
            restored = credentials,
            "the backup's credentials work again, including any revoked after the backup was taken; after a \
             compromise, restore with --revoke-credentials"
        );
    }
    audit("restore", &args.from.display().to_string(), &summary.to_string(), "ok");
    if manifest.encrypted {
        tracing::warn!(
            key_id = manifest.encryption_key_id.as_deref().unwrap_or("unknown"),
            "the restored data is encrypted: start the server with the same --encryption-key-file"
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({"restored": args.data_dir.display().to_string(), "summary": summary})
        )?
    );
    Ok(())
}

/// Refuses a backup file inside the data directory, or one that is a file the store uses (the
/// key file, or another name of the database through a hard link), on resolved paths: `..`
/// and symbolic links in `to` or its folder are followed first. The backup is renamed into
/// place, so a target inside the directory would replace a live file under the running server,
/// which keeps answering from the old one until its restart finds the backup instead.
fn refuse_target_of_the_store(to: &Path, data_dir: &Path, key_file: Option<&Path>) -> anyhow::Result<()> {
    let data =
        fs::canonicalize(data_dir).with_context(|| format!("resolving the data directory {}", data_dir.display()))?;
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = to.file_name().with_context(|| format!("{} names no file", to.display()))?;
    let folder = fs::canonicalize(&parent).with_context(|| format!("resolving the folder of {}", to.display()))?;
    // Where the rename puts the file, and, when `to` is a link, the file it points at.
    let mut resolved = vec![folder.join(name)];
    if let Ok(target) = fs::canonicalize(to) {
        resolved.push(target);
    }
    for path in &resolved {
        ensure!(
            !path.starts_with(&data),
            "refusing to write the backup to {} (resolved: {}): it is inside the data directory {}, where it would              replace files the server is using. Write it outside the data directory",
            to.display(),
            path.display(),
            data.display()
        );
    }
    let mut used = vec![data.join(DATABASE_FILE)];
    used.extend(["-wal", "-shm"].map(|suffix| data.join(format!("{DATABASE_FILE}{suffix}"))));
    used.extend(key_file.map(Path::to_path_buf));
    let target_ids: Vec<(u64, u64)> = resolved.iter().filter_map(|p| file_id(p)).collect();
    for file in used {
        let same_path = fs::canonicalize(&file).is_ok_and(|f| resolved.contains(&f));
        let same_file = file_id(&file).is_some_and(|id| target_ids.contains(&id));
        ensure!(
            !same_path && !same_file,
            "refusing to write the backup to {}: it is {}, a file the store uses",
            to.display(),
            file.display()
        );
    }
    Ok(())
}

/// The device and inode of an existing file: two names of one file share them.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// One audit event of an operator command that is not a tenant's (a backup covers them all).
fn audit(action: &'static str, input: &str, output: &str, outcome: &str) {
    tracing::info!(
        target: AUDIT_TARGET,
        action,
        input = %escape_controls(input),
        output = %escape_controls(output),
        outcome,
        "audit"
    );
}

/// Why one attempt at a backup did not finish.
enum AttemptError {
    /// A file the snapshot references was gone or changed: a race with a delete; start over.
    Raced(String),
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for AttemptError {
    fn from(e: E) -> Self {
        AttemptError::Failed(e.into())
    }
}

/// Writes the backup to a temporary file beside `to` and renames it into place; returns the
/// manifest and the file's size.
fn write_backup(data_dir: &Path, to: &Path) -> anyhow::Result<(Manifest, u64)> {
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut last_race = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        // Both temporary things are created private (0700 folder, 0600 file) and removed on drop.
        let work = tempfile::Builder::new()
            .prefix(".facegate-backup-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
        let snapshot = work.path().join(DATABASE_FILE);
        snapshot_database(data_dir, &snapshot)
            .with_context(|| format!("taking a snapshot of the database in {}", data_dir.display()))?;
        let db = inspect_database(&snapshot).context("reading the snapshot")?;
        ensure!(db.integrity == "ok", "the database fails SQLite's integrity check:\n{}", db.integrity);
        let out = tempfile::Builder::new()
            .prefix(".facegate-backup-")
            .suffix(".tmp")
            .tempfile_in(&parent)
            .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
        match write_attempt(data_dir, &snapshot, &db, out.as_file()) {
            Ok(manifest) => {
                let bytes = out.as_file().metadata()?.len();
                out.as_file().sync_all().context("syncing the backup file")?;
                out.persist(to).map_err(|e| e.error).with_context(|| format!("renaming into {}", to.display()))?;
                File::open(&parent).and_then(|d| d.sync_all()).context("syncing the backup's folder")?;
                return Ok((manifest, bytes));
            }
            Err(AttemptError::Raced(why)) => {
                tracing::info!(attempt, %why, "an image changed after the snapshot (a delete in progress); starting over");
                last_race = why;
            }
            Err(AttemptError::Failed(e)) => return Err(e),
        }
    }
    bail!("the images kept changing under {MAX_ATTEMPTS} snapshots in a row ({last_race}); is something else removing them?")
}

fn write_attempt(
    data_dir: &Path,
    snapshot: &Path,
    db: &DatabaseSummary,
    out: &File,
) -> std::result::Result<Manifest, AttemptError> {
    let mut entries = vec![Entry {
        path: DATABASE_FILE.to_owned(),
        bytes: fs::metadata(snapshot)?.len(),
        sha256: hash_file(snapshot)?,
    }];
    entries.extend(db.images.iter().map(|i| Entry {
        path: format!("{IMAGES_DIR}/{}", i.rel_path),
        bytes: i.bytes,
        sha256: i.sha256.clone(),
    }));
    let manifest = Manifest {
        format: FORMAT,
        created_at: facegate_core::service::now_rfc3339(),
        facegate_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: db.schema_version,
        encrypted: db.encryption_key_id.is_some(),
        encryption_key_id: db.encryption_key_id.clone(),
        tenants: db.tenants,
        subjects: db.subjects,
        samples: db.samples,
        entries,
    };
    let json = serde_json::to_vec(&manifest)?;
    let mut w = Hashing::new(BufWriter::with_capacity(COPY_BUFFER, out));
    w.write_all(MAGIC)?;
    w.write_all(&(json.len() as u64).to_le_bytes())?;
    w.write_all(&json)?;
    for entry in &manifest.entries {
        let path = if entry.path == DATABASE_FILE {
            snapshot.to_path_buf()
        } else {
            image_file(data_dir, entry.path.trim_start_matches(&format!("{IMAGES_DIR}/")))?
        };
        let source = match File::open(&path) {
            Ok(f) => f,
            // Images are written before their row commits, so a file the snapshot references
            // existed when it was taken; gone now, it was deleted after (its row first).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(AttemptError::Raced(format!("{} is gone", entry.path)))
            }
            Err(e) => {
                return Err(AttemptError::Failed(anyhow::Error::new(e).context(format!("reading {}", path.display()))))
            }
        };
        let (sha, n) =
            copy_exact(source, entry.bytes, &mut w).with_context(|| format!("copying {}", path.display()))?;
        if n != entry.bytes || sha != entry.sha256 {
            return Err(AttemptError::Raced(format!("{} differs from its row", entry.path)));
        }
    }
    let digest = w.hasher.finalize_reset();
    let mut inner = w.inner;
    inner.write_all(&digest)?;
    inner.flush()?;
    Ok(manifest)
}

/// Restores `from` into `data_dir`, which must be empty or missing; on failure leaves it as found.
/// Returns the manifest, the file's size and the live credentials restored (or, with `revoke`,
/// removed).
fn restore_into(from: &Path, data_dir: &Path, revoke: bool) -> anyhow::Result<(Manifest, u64, u64)> {
    let created = match fs::read_dir(data_dir) {
        Ok(mut listing) => {
            ensure!(
                listing.next().is_none(),
                "{} is not empty: restore writes only into an empty or missing directory, so that it never mixes \
                 with or overwrites a gallery. Move it away, or give another --data-dir",
                data_dir.display()
            );
            facegate_store::private_fs::restrict(data_dir, facegate_store::private_fs::DIR_MODE)?;
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            facegate_store::private_fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            true
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", data_dir.display()))),
    };
    let result = unpack(from, data_dir, revoke);
    if result.is_err() {
        // It was empty: whatever is there now is a part of this restore.
        let cleanup = if created { fs::remove_dir_all(data_dir) } else { empty_dir(data_dir) };
        if let Err(e) = cleanup {
            tracing::warn!(error = %e, dir = %data_dir.display(), "could not remove a failed restore's files");
        }
    }
    result
}

fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn unpack(from: &Path, data_dir: &Path, revoke: bool) -> anyhow::Result<(Manifest, u64, u64)> {
    let file = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let file_bytes = file.metadata()?.len();
    let mut r = Hashing::new(BufReader::with_capacity(COPY_BUFFER, file));
    let corrupt = || format!("{} is not a whole facegate backup", from.display());
    let mut magic = [0u8; 16];
    r.read_exact(&mut magic).with_context(corrupt)?;
    ensure!(&magic == MAGIC, "{} is not a facegate backup file", from.display());
    let mut len = [0u8; 8];
    r.read_exact(&mut len).with_context(corrupt)?;
    let len = u64::from_le_bytes(len);
    ensure!(len <= MAX_MANIFEST_BYTES, "{}: the manifest's length ({len} bytes) is corrupt", from.display());
    let mut json = vec![0u8; usize::try_from(len)?];
    r.read_exact(&mut json).with_context(corrupt)?;
    let manifest: Manifest =
        serde_json::from_slice(&json).with_context(|| format!("{}: corrupt manifest", from.display()))?;
    ensure!(manifest.format == FORMAT, "backup format {} is not the {FORMAT} this build reads", manifest.format);
    check_entries(&manifest.entries)?;

    // The database arrives under a temporary name and takes its own only when everything checks
    // out, so that a restore cut short never looks like a data directory to a server.
    let pending_db = data_dir.join(format!("{DATABASE_FILE}.restoring"));
    for entry in &manifest.entries {
        let path = if entry.path == DATABASE_FILE {
            pending_db.clone()
        } else {
            let target = image_file(data_dir, entry.path.trim_start_matches(&format!("{IMAGES_DIR}/")))?;
            if let Some(dir) = target.parent() {
                facegate_store::private_fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            target
        };
        let mut out = facegate_store::private_fs::file_options()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let (sha, n) =
            copy_exact(&mut r, entry.bytes, &mut out).with_context(|| format!("restoring {}", entry.path))?;
        ensure!(n == entry.bytes, "{}: the file ends inside {}", from.display(), entry.path);
        ensure!(sha == entry.sha256, "{}: {} fails its SHA-256 check (corrupt backup)", from.display(), entry.path);
        out.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    }
    let digest = r.hasher.finalize_reset();
    let mut trailer = [0u8; 32];
    r.inner.read_exact(&mut trailer).with_context(corrupt)?;
    ensure!(trailer[..] == digest[..], "{} fails its SHA-256 check (corrupt backup)", from.display());
    ensure!(r.inner.read(&mut [0u8; 1])? == 0, "{} has data after its end (corrupt backup)", from.display());

    let db = inspect_database(&pending_db).context("reading the restored database")?;
    ensure!(db.integrity == "ok", "the restored database fails SQLite's integrity check:\n{}", db.integrity);
    let referenced: Vec<Entry> = db
        .images
        .iter()
        .map(|i| Entry { path: format!("{IMAGES_DIR}/{}", i.rel_path), bytes: i.bytes, sha256: i.sha256.clone() })
        .collect();
    let mut packed: Vec<Entry> = manifest.entries.iter().filter(|e| e.path != DATABASE_FILE).cloned().collect();
    packed.sort_by(|a, b| a.path.cmp(&b.path));
    ensure!(referenced == packed, "the backup's images are not the ones its database references");
    ensure!(
        (db.tenants, db.subjects, db.samples) == (manifest.tenants, manifest.subjects, manifest.samples),
        "the restored database's counts differ from the manifest's"
    );
    for dir in dirs_under(&data_dir.join(IMAGES_DIR))? {
        File::open(&dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
    }
    // Before the database takes its name, so that no server ever sees the revoked credentials.
    let credentials = if revoke {
        let revoked = revoke_all_credentials(&pending_db).context("revoking the restored credentials")?;
        File::open(&pending_db).and_then(|f| f.sync_all()).context("syncing the restored database")?;
        revoked
    } else {
        db.credentials
    };
    let db_path = data_dir.join(DATABASE_FILE);
    fs::rename(&pending_db, &db_path).with_context(|| format!("renaming into {}", db_path.display()))?;
    File::open(data_dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", data_dir.display()))?;
    Ok((manifest, file_bytes, credentials))
}

/// The database first, then image paths that stay in their tenant's folder, each once.
fn check_entries(entries: &[Entry]) -> anyhow::Result<()> {
    ensure!(entries.first().is_some_and(|e| e.path == DATABASE_FILE), "the backup does not start with its database");
    let mut seen = std::collections::HashSet::new();
    for entry in &entries[1..] {
        let rel = entry.path.strip_prefix(&format!("{IMAGES_DIR}/")).unwrap_or("");
        check_image_path(rel).with_context(|| format!("unsafe path {:?} in the backup", entry.path))?;
        ensure!(seen.insert(rel), "{:?} appears twice in the backup", entry.path);
    }
    Ok(())
}

/// `dir` and the folders under it, for fsyncing the entries just written.
fn dirs_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    if !dir.is_dir() {
        return Ok(dirs);
    }
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                todo.push(entry.path());
            }
        }
        dirs.push(d);
    }
    Ok(dirs)
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    Ok(copy_exact(File::open(path)?, u64::MAX, &mut io::sink())?.0)
}

/// Copies at most `limit` bytes from `r` to `w`; returns their SHA-256 (hex) and count.
fn copy_exact(r: impl Read, limit: u64, w: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hashing = Hashing::new(w);
    let n = io::copy(&mut r.take(limit), &mut hashing)?;
    Ok((hex::encode(hashing.hasher.finalize()), n))
}

/// A reader or writer that hashes every byte through it, for the whole-file checksum.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Self { inner, hasher: Sha256::new() }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
