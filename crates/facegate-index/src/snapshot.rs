//! Snapshots of a tenant's index on local disk, so that a restarting node loads its index from
//! one file and the changes made since, instead of reading every template from the store and
//! learning its partition again.
//!
//! # What a snapshot holds
//! The index as it stands, not its in-memory layout: the tag names and their bits, each tagged
//! subject's bits, and each row's sample, subject, list and vector (f16 for a flat search, int8
//! with its scale for a partitioned one, which is all either keeps), plus a partitioned
//! search's centroids. A restore inserts the rows again into their lists, which takes seconds
//! at millions of rows where reading the store and training take minutes, and leaves the file
//! format free of the in-memory one.
//!
//! # Trust
//! A header names the model and the store position (the last change of the store's change log
//! the snapshot reflects); a CRC-32 of every byte before it closes the file. A file cut short,
//! with any byte changed, of another model, or of a position the log no longer reaches is
//! refused and deleted, and the tenant loads from the store. Files are written to a temporary
//! name, synced, and renamed over the old one, so a process killed while writing leaves the
//! previous snapshot (and a temporary file, removed at the next start).
//!
//! # Consistency
//! The rows are copied a few thousand at a time, each batch under the tenant's read lock, so
//! that writes wait for one batch at most. A snapshot is therefore not one instant of the index:
//! each row is as it stood at some moment after the position was read. Replaying the change log
//! from that position makes it whole: every change is idempotent (a sample is loaded from the
//! store and inserted under its id, a removal of what is gone does nothing), so a change the
//! snapshot already holds is applied again harmlessly, and one it missed is applied.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use facegate_core::{IndexSnapshots, RestoredSnapshot, SavedSnapshot};
use parking_lot::Mutex;

use crate::flat::{FlatIndex, TenantIndex};
use crate::ids::TenantIds;
use crate::ivf::IvfSearch;
use crate::quantizer::Quantizer;
use crate::vectors::VectorSearch;

const MAGIC: &[u8; 8] = b"FGIXSNAP";
const VERSION: u32 = 1;
/// Slots copied per hold of the read lock: a write waits at most this many rows' copy (about a
/// millisecond), as it does for a rebuild's batch.
const COPY_BATCH: u32 = 4096;
/// I/O buffer: large enough that a snapshot of gigabytes goes in few system calls.
const BUFFER: usize = 4 << 20;
/// Longest id a snapshot carries: sample and subject ids are the store's (UUIDs, or a client's
/// id of at most a few hundred bytes), so anything longer is damage.
const MAX_ID: usize = 4096;
/// Row markers: another row follows, or the rows end.
const ROW: u8 = 1;
const END: u8 = 0;

/// How the vectors of a snapshot are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// A flat search's rows: f16, as it holds them.
    F16 = 0,
    /// A partitioned search's rows: int8 codes with one f32 scale, as it holds them.
    I8 = 1,
}

/// A snapshot's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub tenant_id: String,
    pub model_id: String,
    /// The last change of the store's log the snapshot reflects.
    pub position: u64,
    pub dim: usize,
}

impl FlatIndex {
    /// Writes the tenant's snapshot to `out`, headed by `model_id` and `position` (see the
    /// module documentation for what the caller must guarantee of `position`). Returns the rows
    /// written; `None` for a tenant the index does not hold.
    pub fn write_snapshot(
        &self,
        tenant_id: &str,
        model_id: &str,
        position: u64,
        out: &mut dyn Write,
    ) -> io::Result<Option<u64>> {
        let Some(tenant) = self.tenant(tenant_id) else { return Ok(None) };
        let mut out = Encoder { out, crc: crc32fast::Hasher::new(), buffer: Vec::with_capacity(BUFFER) };
        let (encoding, dim) = {
            // Everything but the rows in one hold of the lock: tag bits and the subjects' masks
            // must agree with each other.
            let locked = tenant.read();
            let vectors = locked.vectors.as_ref();
            let learnt = vectors.learnt();
            let encoding = if learnt.is_some() { Encoding::I8 } else { Encoding::F16 };
            out.bytes(MAGIC);
            out.u32(VERSION);
            out.str(tenant_id);
            out.str(model_id);
            out.u64(position);
            out.u32(vectors.dim() as u32);
            out.u8(encoding as u8);
            // The rows there were when the copy began: room to reserve when loading.
            out.u64(vectors.len() as u64);
            let mut tags: Vec<(&String, &u32)> = locked.tag_bits.iter().collect();
            tags.sort_by_key(|(_, &bit)| bit);
            out.u32(tags.len() as u32);
            for (name, &bit) in tags {
                out.u8(bit as u8);
                out.str(name);
            }
            let subjects = locked.ids.tagged_subjects();
            out.u64(subjects.len() as u64);
            for (subject, mask) in &subjects {
                out.str(subject);
                out.u64(*mask);
            }
            if let Some(learnt) = learnt {
                let (coarse, fine, offsets) = learnt.quantizer.parts();
                out.u64(learnt.trained_rows as u64);
                out.f32s(coarse);
                out.f32s(fine);
                out.u32(offsets.len() as u32);
                offsets.iter().for_each(|&o| out.u32(o));
            }
            (encoding, vectors.dim())
        };
        out.flush()?;
        let mut rows = 0u64;
        let mut start = 0u32;
        loop {
            {
                let locked = tenant.read();
                let bound = locked.vectors.slot_bound();
                if start >= bound {
                    break;
                }
                let end = start.saturating_add(COPY_BATCH).min(bound);
                for slot in start..end {
                    let (Some((subject, sample)), Some(row)) = (locked.ids.names(slot), locked.vectors.row(slot))
                    else {
                        continue;
                    };
                    if row.vector.len() != dim {
                        continue;
                    }
                    out.u8(ROW);
                    out.str(&sample);
                    out.str(&subject);
                    out.u32(row.placement.unwrap_or(u32::MAX));
                    encode_vector(&mut out, encoding, &row.vector);
                    rows += 1;
                }
                start = end;
            }
            out.flush()?;
        }
        out.u8(END);
        out.u64(rows);
        out.flush()?;
        let crc = out.crc.clone().finalize();
        out.out.write_all(&crc.to_le_bytes())?;
        Ok(Some(rows))
    }

    /// Reads a snapshot of `len` bytes from `input` and, when `accept` takes its header and
    /// every check passes, puts it in place of the tenant's index. `InvalidData` for a damaged
    /// snapshot, `Other` for one `accept` refused; the index is left as it was on any error.
    ///
    /// Three threads restore the rows: one decodes them, one numbers them (ids), one lists them.
    pub fn read_snapshot(
        &self,
        input: &mut (dyn Read + Send),
        len: u64,
        accept: &dyn Fn(&SnapshotHeader) -> bool,
    ) -> io::Result<(SnapshotHeader, u64)> {
        if len < 4 {
            return Err(invalid("too short"));
        }
        let hashing = Hashing { inner: input, left: len - 4, crc: crc32fast::Hasher::new() };
        let mut buffered = BufReader::with_capacity(BUFFER, hashing);
        let mut input = Decoder { input: &mut buffered };
        let mut magic = [0u8; 8];
        input.read(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not an index snapshot"));
        }
        if input.u32()? != VERSION {
            return Err(invalid("an index snapshot of another version"));
        }
        let tenant_id = input.str()?;
        let model_id = input.str()?;
        let position = input.u64()?;
        let dim = input.u32()? as usize;
        let encoding = match input.u8()? {
            0 => Encoding::F16,
            1 => Encoding::I8,
            _ => return Err(invalid("unknown vector encoding")),
        };
        let rows_hint = input.u64()?;
        let header = SnapshotHeader { tenant_id, model_id, position, dim };
        if !accept(&header) {
            return Err(io::Error::other("snapshot not wanted"));
        }
        if dim == 0 || dim > 65_536 {
            return Err(invalid("vector length out of range"));
        }
        let mut tag_bits = HashMap::new();
        for _ in 0..input.u32()? {
            let bit = u32::from(input.u8()?);
            let name = input.str()?;
            if bit >= 64 || tag_bits.insert(name, bit).is_some() {
                return Err(invalid("bad tag table"));
            }
        }
        let subjects = input.u64()?;
        let mut tagged = Vec::new();
        for _ in 0..subjects {
            tagged.push((input.str()?, input.u64()?));
        }
        let vectors: Box<dyn VectorSearch> = match encoding {
            Encoding::F16 => Box::new(crate::flat_scan::FlatScan::new(self.config().flat)),
            Encoding::I8 => {
                let trained_rows = input.u64()? as usize;
                let coarse = input.f32s(dim)?;
                let fine = input.f32s(dim)?;
                let offsets = (0..input.u32()?).map(|_| input.u32()).collect::<io::Result<Vec<u32>>>()?;
                let quantizer =
                    Quantizer::from_parts(dim, coarse, fine, offsets).ok_or_else(|| invalid("bad centroids"))?;
                Box::new(IvfSearch::with_quantizer(self.config().ivf, Arc::new(quantizer), trained_rows))
            }
        };
        let mut tenant = TenantIndex::new(vectors);
        // A row takes at least its marker, two id lengths, its list and a byte a value, so a
        // damaged hint cannot reserve more than the file could hold.
        tenant.reserve(rows_hint.min(len / (13 + dim as u64)) as usize);
        tenant.tag_bits = tag_bits;
        for (subject, mask) in &tagged {
            tenant.ids.set_tags(subject, *mask).map_err(invalid)?;
        }
        let started = std::time::Instant::now();
        // Three stages, a batch of rows at a time: decoding; the ids (a slot and subject number
        // for each row, hash-table work); the vectors (lists). The last two took about half of
        // a restore each, so each has a core. A stage that fails drops its ends of the channels,
        // which stops the others; the first error found is the answer.
        let (decoded_sender, decoded) = std::sync::mpsc::sync_channel::<RowBatch>(4);
        let (numbered_sender, numbered) = std::sync::mpsc::sync_channel::<RowBatch>(4);
        let TenantIndex { ids, vectors, .. } = &mut tenant;
        let (placed, waited, numbering, decoding) = std::thread::scope(|scope| {
            let decoder = scope.spawn(move || decode_rows(&mut input, encoding, dim, decoded_sender));
            let numberer = scope.spawn(move || number_rows(ids, decoded, numbered_sender));
            let (placed, waited) = place_rows(vectors.as_mut(), dim, numbered);
            let gone = || invalid("a snapshot restoring thread panicked");
            (
                placed,
                waited,
                numberer.join().unwrap_or_else(|_| Err(gone())),
                decoder.join().unwrap_or_else(|_| Err(gone())),
            )
        });
        decoding?;
        numbering?;
        let rows = placed?;
        // One step a row, as inserting them one by one would have moved it.
        tenant.version = rows;
        tracing::debug!(
            rows,
            ms = started.elapsed().as_millis() as u64,
            waiting_for_ids_ms = waited.as_millis() as u64,
            "snapshot rows read"
        );
        let Hashing { inner, left, crc } = buffered.into_inner();
        debug_assert_eq!(left, 0);
        let mut stored = [0u8; 4];
        inner.read_exact(&mut stored)?;
        if u32::from_le_bytes(stored) != crc.finalize() {
            return Err(invalid("checksum differs"));
        }
        let mut rest = [0u8; 1];
        if inner.read(&mut rest)? != 0 {
            return Err(invalid("bytes after the checksum"));
        }
        if tenant.vectors.dim() != 0 && tenant.vectors.dim() != dim {
            return Err(invalid("vector length differs from the header"));
        }
        self.install_tenant(&header.tenant_id, tenant);
        Ok((header, rows))
    }
}

/// Rows decoded, a few thousand at a time.
struct RowBatch {
    /// The rows' ids end to end, each row's sample then its subject.
    ids: String,
    /// Where each row's sample and subject end in `ids`.
    id_ends: Vec<(usize, usize)>,
    lists: Vec<u32>,
    /// `dim` values a row, of a flat snapshot (f16 rows).
    vectors: Vec<f32>,
    /// `dim` codes a row and one scale, of a partitioned snapshot (int8 rows).
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Each row's slot, subject number and tag bits, once numbered.
    numbers: Vec<(u32, u32, u64)>,
}

/// How many rows a batch holds: enough that passing batches between threads costs nothing
/// next to the rows, few enough that four in flight are a few megabytes.
const BATCH: usize = 4096;

impl RowBatch {
    fn new() -> Self {
        Self {
            ids: String::new(),
            id_ends: Vec::with_capacity(BATCH),
            lists: Vec::with_capacity(BATCH),
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            numbers: Vec::new(),
        }
    }
}

/// Decodes rows until the end marker and the row count, sending them in batches; the row count
/// checked against the rows decoded. Stops early, without error, when the next stage has.
fn decode_rows(
    input: &mut Decoder<'_>,
    encoding: Encoding,
    dim: usize,
    sender: std::sync::mpsc::SyncSender<RowBatch>,
) -> io::Result<()> {
    let mut decoded = 0u64;
    let mut batch = RowBatch::new();
    let mut vector = vec![0.0f32; dim];
    let mut scratch = Vec::new();
    loop {
        match input.u8()? {
            END => break,
            ROW => {}
            _ => return Err(invalid("bad row marker")),
        }
        input.str_onto(&mut scratch, &mut batch.ids)?;
        let sample_end = batch.ids.len();
        input.str_onto(&mut scratch, &mut batch.ids)?;
        batch.id_ends.push((sample_end, batch.ids.len()));
        batch.lists.push(input.u32()?);
        match encoding {
            Encoding::F16 => {
                decode_f16(input, &mut scratch, &mut vector)?;
                // A row the index would refuse (a non-finite vector) is damage too.
                if !vector.iter().all(|x| x.is_finite()) {
                    return Err(invalid("a non-finite vector"));
                }
                batch.vectors.extend_from_slice(&vector);
            }
            Encoding::I8 => {
                // Kept as codes: the lists store them as they are (`VectorSearch::add_coded`).
                let scale = input.f32()?;
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(invalid("a bad row scale"));
                }
                scratch.resize(dim, 0);
                input.read(&mut scratch)?;
                // Codes are rounded into -127..=127; -128 is no code the lists write.
                if scratch.contains(&0x80) {
                    return Err(invalid("a code out of range"));
                }
                batch.codes.extend(scratch.iter().map(|&b| b as i8));
                batch.scales.push(scale);
            }
        }
        decoded += 1;
        if batch.id_ends.len() == BATCH && sender.send(std::mem::replace(&mut batch, RowBatch::new())).is_err() {
            return Ok(());
        }
    }
    if input.u64()? != decoded {
        return Err(invalid("row count differs"));
    }
    let _ = sender.send(batch);
    Ok(())
}

/// Gives each decoded row a slot and its subject's number, passing the batches on.
fn number_rows(
    ids: &mut TenantIds,
    batches: std::sync::mpsc::Receiver<RowBatch>,
    sender: std::sync::mpsc::SyncSender<RowBatch>,
) -> io::Result<()> {
    for mut batch in batches {
        let mut start = 0;
        batch.numbers.reserve(batch.id_ends.len());
        for &(sample_end, subject_end) in &batch.id_ends {
            let (sample, subject) = (&batch.ids[start..sample_end], &batch.ids[sample_end..subject_end]);
            let (slot, group) = ids.add_new(subject, sample).map_err(invalid)?;
            batch.numbers.push((slot, group, ids.tags(group)));
            start = subject_end;
        }
        if sender.send(batch).is_err() {
            break;
        }
    }
    Ok(())
}

/// Puts each numbered row in the vector search; the rows placed, and the time spent waiting
/// for numbered rows (which says which stage bounds a restore).
fn place_rows(
    vectors: &mut dyn VectorSearch,
    dim: usize,
    batches: std::sync::mpsc::Receiver<RowBatch>,
) -> (io::Result<u64>, std::time::Duration) {
    let mut rows = 0u64;
    let mut waited = std::time::Duration::ZERO;
    let placed = (|| loop {
        let asked = std::time::Instant::now();
        let Ok(batch) = batches.recv() else { return Ok(rows) };
        waited += asked.elapsed();
        for (i, (&(slot, group, tags), &list)) in batch.numbers.iter().zip(&batch.lists).enumerate() {
            let placement = (list != u32::MAX).then_some(list);
            if let Some(&scale) = batch.scales.get(i) {
                let codes = &batch.codes[i * dim..(i + 1) * dim];
                vectors.add_coded(slot, group, tags, codes, scale, placement).map_err(invalid)?;
            } else {
                let vector = &batch.vectors[i * dim..(i + 1) * dim];
                vectors.add_placed(slot, group, tags, vector, placement).map_err(invalid)?;
            }
            rows += 1;
        }
    })();
    (placed, waited)
}

/// Counts every byte read into a CRC, up to `left` bytes (the checksum after them is not).
struct Hashing<'a> {
    inner: &'a mut (dyn Read + Send),
    left: u64,
    crc: crc32fast::Hasher,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.crc.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

fn encode_vector(out: &mut Encoder<'_>, encoding: Encoding, vector: &[f32]) {
    match encoding {
        Encoding::F16 => {
            for &x in vector {
                out.bytes(&half::f16::from_f32(x).to_le_bytes());
            }
        }
        Encoding::I8 => {
            // The row came out of int8 codes times one scale: this finds the same codes again.
            let max = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            out.f32(scale);
            for &x in vector {
                out.u8((x / scale).round().clamp(-127.0, 127.0) as i8 as u8);
            }
        }
    }
}

/// Reads one f16 row's values into `vector`, through `bytes` (reused: no allocation a row).
fn decode_f16(input: &mut Decoder<'_>, bytes: &mut Vec<u8>, vector: &mut [f32]) -> io::Result<()> {
    bytes.resize(vector.len() * 2, 0);
    input.read(bytes)?;
    for (x, b) in vector.iter_mut().zip(bytes.chunks_exact(2)) {
        *x = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
    Ok(())
}

/// Little-endian fields into a buffer, flushed to `out` with a running CRC.
struct Encoder<'a> {
    out: &'a mut dyn Write,
    crc: crc32fast::Hasher,
    buffer: Vec<u8>,
}

impl Encoder<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buffer.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.buffer.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.bytes(&v.to_le_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        v.iter().for_each(|&x| self.f32(x));
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.bytes(s.as_bytes());
    }
    fn flush(&mut self) -> io::Result<()> {
        self.crc.update(&self.buffer);
        self.out.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }
}

/// Little-endian fields from `input`.
struct Decoder<'a> {
    input: &'a mut (dyn Read + Send),
}

impl Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf)
    }
    fn u8(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.read(&mut b)?;
        Ok(b[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn f32(&mut self) -> io::Result<f32> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(f32::from_le_bytes(b))
    }
    /// A vector of whole rows of `dim`, at most 2^28 values (1 GB), read as it arrives so that
    /// a damaged length fails at the end of the file rather than allocating it.
    fn f32s(&mut self, dim: usize) -> io::Result<Vec<f32>> {
        let len = self.u64()?;
        if len > 1 << 28 || !(len as usize).is_multiple_of(dim) {
            return Err(invalid("bad centroid table"));
        }
        let mut v = Vec::new();
        for _ in 0..len {
            v.push(self.f32()?);
        }
        Ok(v)
    }
    fn str(&mut self) -> io::Result<String> {
        let mut text = String::new();
        self.str_onto(&mut Vec::new(), &mut text)?;
        Ok(text)
    }
    /// As [`Self::str`], onto the end of `text`, read through `scratch`: no allocation a row.
    fn str_onto(&mut self, scratch: &mut Vec<u8>, text: &mut String) -> io::Result<()> {
        let len = self.u32()? as usize;
        if len > MAX_ID {
            return Err(invalid("an id too long"));
        }
        scratch.resize(len, 0);
        self.read(scratch)?;
        text.push_str(std::str::from_utf8(scratch).map_err(|_| invalid("an id not UTF-8"))?);
        Ok(())
    }
}

/// The snapshots of one process's index, one file a tenant in a private directory:
/// `<dir>/<tenant id, hex>.snap`. Implements the core's [`IndexSnapshots`].
pub struct SnapshotDir {
    dir: PathBuf,
    index: Arc<FlatIndex>,
    /// Per tenant, the index's version when its snapshot was last written or restored, and how
    /// its vectors were partitioned then (lists; 0 for flat).
    saved: Mutex<HashMap<String, (u64, usize)>>,
}

impl SnapshotDir {
    /// Snapshots of `index` in `dir`, created (0700) if missing. Removes the temporary files of
    /// a process killed while writing one.
    pub fn open(dir: &Path, index: Arc<FlatIndex>) -> io::Result<Self> {
        create_private_dir(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                tracing::warn!(file = %path.display(), "removing an index snapshot left half-written");
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Self { dir: dir.to_owned(), index, saved: Mutex::new(HashMap::new()) })
    }

    fn path_of(&self, tenant_id: &str) -> PathBuf {
        self.dir.join(file_name(tenant_id))
    }

    fn form(&self, tenant_id: &str) -> usize {
        self.index.partition(tenant_id).map_or(0, |p| p.lists)
    }

    fn restore_file(
        &self,
        path: &Path,
        model_id: &str,
        usable: &std::ops::RangeInclusive<u64>,
    ) -> io::Result<(SnapshotHeader, u64)> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let expected_name = |h: &SnapshotHeader| self.path_of(&h.tenant_id) == path;
        self.index.read_snapshot(&mut file, len, &|h| {
            h.model_id == model_id && usable.contains(&h.position) && expected_name(h)
        })
    }
}

impl IndexSnapshots for SnapshotDir {
    fn restore(
        &self,
        model_id: &str,
        usable: std::ops::RangeInclusive<u64>,
    ) -> facegate_core::Result<Vec<RestoredSnapshot>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_error("listing index snapshots", &e))?;
        let mut restored = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io_error("listing index snapshots", &e))?.path();
            if path.extension().is_none_or(|e| e != "snap") {
                continue;
            }
            let started = std::time::Instant::now();
            match self.restore_file(&path, model_id, &usable) {
                Ok((header, rows)) => {
                    tracing::info!(
                        tenant = %header.tenant_id,
                        rows,
                        position = header.position,
                        ms = started.elapsed().as_millis() as u64,
                        "index restored from its snapshot"
                    );
                    let form = self.form(&header.tenant_id);
                    let version = self.index.version(&header.tenant_id).unwrap_or(0);
                    self.saved.lock().insert(header.tenant_id.clone(), (version, form));
                    restored.push(RestoredSnapshot { tenant_id: header.tenant_id, position: header.position, rows });
                }
                Err(error) => {
                    // Never trusted again: the tenant loads from the store, and its next
                    // snapshot takes this one's place.
                    tracing::warn!(file = %path.display(), %error, "index snapshot not used; removing it");
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(file = %path.display(), error = %e, "cannot remove an unused index snapshot");
                    }
                }
            }
        }
        Ok(restored)
    }

    fn due(&self) -> Vec<(String, bool)> {
        let saved = self.saved.lock();
        let mut due = Vec::new();
        for tenant in self.index.tenant_ids() {
            let Some(version) = self.index.version(&tenant) else { continue };
            match saved.get(&tenant) {
                Some(&(v, _)) if v == version => {}
                Some(&(_, form)) => due.push((tenant.clone(), form != self.form(&tenant))),
                None => due.push((tenant, true)),
            }
        }
        due
    }

    fn save(&self, tenant_id: &str, model_id: &str, position: u64) -> facegate_core::Result<Option<SavedSnapshot>> {
        let started = std::time::Instant::now();
        let version = self.index.version(tenant_id);
        let form = self.form(tenant_id);
        let path = self.path_of(tenant_id);
        // Named by process too: two nodes sharing a directory never write one file together.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let written = (|| -> io::Result<Option<u64>> {
            let file = create_private_file(&tmp)?;
            let mut out = BufWriter::with_capacity(BUFFER, file);
            let Some(rows) = self.index.write_snapshot(tenant_id, model_id, position, &mut out)? else {
                return Ok(None);
            };
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok(Some(rows))
        })();
        let rows = match written {
            Ok(Some(rows)) => rows,
            Ok(None) => {
                let _ = std::fs::remove_file(&tmp);
                return Ok(None);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_error("writing an index snapshot", &e));
            }
        };
        if let Some(version) = version {
            self.saved.lock().insert(tenant_id.to_owned(), (version, form));
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(Some(SavedSnapshot { rows, bytes, ms: started.elapsed().as_millis() as u64 }))
    }

    fn remove(&self, tenant_id: &str) -> facegate_core::Result<()> {
        self.saved.lock().remove(tenant_id);
        match std::fs::remove_file(self.path_of(tenant_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing an index snapshot", &e)),
        }
    }
}

/// Removes the snapshot of `tenant_id` from `dir`, for a command that deletes a tenant while no
/// server runs (`facegate tenant delete`): its faces must not outlive it on disk.
pub fn remove_tenant_snapshot(dir: &Path, tenant_id: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(file_name(tenant_id))) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A tenant's snapshot file: its id in hex, so that no id can name another path.
fn file_name(tenant_id: &str) -> String {
    let hex: String = tenant_id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.snap")
}

fn io_error(doing: &str, e: &io::Error) -> facegate_core::Error {
    facegate_core::Error::Internal(format!("{doing}: {e}"))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn create_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}
