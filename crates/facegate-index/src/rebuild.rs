//! Replacing a tenant's vector search in the background: the flat scan by inverted lists as the
//! tenant grows (and back as it shrinks), or the lists by new ones learnt from today's rows.
//!
//! Searches never wait for it, and no write is lost:
//! 1. the shell starts a [`ChangeLog`] under the tenant's write lock: from then on every
//!    change to the vectors names its slot there;
//! 2. a thread learns the new lists from a sample and copies every row into the new search,
//!    a chunk of slots at a time under the read lock (searches go on; writes wait at most one
//!    chunk);
//! 3. it catches up with the log: each slot named there is copied again as it is now (or
//!    removed when it is gone), in rounds, until what is left is small;
//! 4. under the write lock, it replays the rest and swaps the new search in.
//!
//! Replaying a slot copies its current state, so a slot changed twice, or copied in step 2 after
//! its change, ends the same. A move of tag bits is replayed in its place in the log; replayed
//! on a row copied after it, it finds no bit to move unless a later change set one, and that
//! change comes after it in the log.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::{IndexConfig, IndexKind, RETRAIN_GROWTH, RETRAIN_IMBALANCE};
use crate::flat_scan::FlatScan;
use crate::ivf::IvfSearch;
use crate::quantizer::{sample_indices, SplitMix};
use crate::vectors::{RowCopy, VectorSearch};

/// Slots copied per read lock: a few milliseconds of copying, the longest a write waits.
const CHUNK_SLOTS: u32 = 4_096;
/// Catch-up rounds before the last one runs under the write lock whatever is left.
const CATCH_UP_ROUNDS: usize = 8;
/// Logged changes few enough to replay under the write lock: well under a millisecond each.
const FINAL_REPLAY: usize = 4_096;
/// An `ivf` tenant is first trained at this many times the rows of one list: fewer would make
/// a partition of two or three lists, which saves nothing over scanning them.
const MIN_TRAINING_LISTS: usize = 4;

/// How long a rebuild put off for want of memory waits before memory is looked at again: a
/// write calls for it every time, and reading `/proc/meminfo` at every write of a bulk load
/// would cost more than the writes.
pub const DEFERRED_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// The share of the memory available that a rebuild may take. While it runs, the old and the
/// new vectors are both held (step 2 above); the rest is for other tenants' growth, searches'
/// buffers and the page cache the store reads through. A node that retrains its largest tenant
/// into swap, or into the OOM killer, serves nobody.
const REBUILD_MEMORY_SHARE: f64 = 0.8;

/// Memory a rebuild would need and what the machine has available, when it has too little.
#[derive(Debug, Clone, Copy)]
pub struct MemoryShort {
    pub needed: u64,
    pub available: u64,
}

/// Whether a rebuild of `vectors` must wait for memory: the new search is about the size of
/// the old one (a flat scan's rows are larger than the lists built from them), and it must fit
/// in [`REBUILD_MEMORY_SHARE`] of what the kernel says is available. `None` where the kernel
/// does not say (not Linux): the rebuild goes ahead.
pub fn memory_short(vectors: &dyn VectorSearch) -> Option<MemoryShort> {
    short_of(vectors.row_bytes() as u64, available_memory()?)
}

fn short_of(needed: u64, available: u64) -> Option<MemoryShort> {
    ((needed as f64) > available as f64 * REBUILD_MEMORY_SHARE).then_some(MemoryShort { needed, available })
}

/// `MemAvailable` of `/proc/meminfo`, in bytes: what can be allocated without swapping.
fn available_memory() -> Option<u64> {
    meminfo(&["MemAvailable:"]).map(|[available]| available)
}

/// The `fields` of one read of `/proc/meminfo`, in bytes.
fn meminfo<const N: usize>(fields: &[&str; N]) -> Option<[u64; N]> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mut out = [0u64; N];
    for (value, field) in out.iter_mut().zip(fields) {
        let line = info.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        *value = kib * 1024;
    }
    Some(out)
}

/// The share of the machine's memory below which a running rebuild gives up (at least
/// [`MIN_MEMORY_FLOOR`]). The check before a rebuild cannot see a bulk load that goes on
/// growing the tenant while it runs, and both the old and the new search grow with it: a 50M ×
/// 128 load peaked at 23.5 GB resident of 24 GB at the end of its last rebuild, and got through.
/// Close to nothing available the kernel evicts the process's own code and then kills it; a
/// rebuild put off costs a slower search until memory allows, a node killed costs every search.
/// The floor is low so that a rebuild that fits, however tightly, is not given up.
const MEMORY_FLOOR_SHARE: f64 = 0.01;
const MIN_MEMORY_FLOOR: u64 = 256 << 20;
/// Chunks copied between two looks at the memory left: about a quarter of a million rows.
const CHUNKS_PER_MEMORY_CHECK: u32 = 64;

/// The memory available, when it has fallen under the floor a running rebuild keeps clear of.
fn memory_running_out() -> Option<u64> {
    let [available, total] = meminfo(&["MemAvailable:", "MemTotal:"])?;
    under_floor(available, total).then_some(available)
}

fn under_floor(available: u64, total: u64) -> bool {
    available < ((total as f64 * MEMORY_FLOOR_SHARE) as u64).max(MIN_MEMORY_FLOOR)
}

/// Ends a rebuild that memory cannot hold, keeping the tenant's search; true when it did.
fn gave_up_for_memory<T: Rebuildable>(tenant: &RwLock<T>, new: &dyn VectorSearch) -> bool {
    let Some(available) = memory_running_out() else { return false };
    tracing::warn!(
        built = new.len(),
        available_mb = available >> 20,
        "index rebuild abandoned: memory is running out; the tenant keeps its search, and the rebuild waits for memory"
    );
    tenant.write().abandon();
    true
}

/// A change to the vectors made while a rebuild runs.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// The row in this slot was added, removed or retagged.
    Slot(u32),
    MoveTagBits {
        from: u64,
        to: u64,
    },
}

/// Changes logged since a rebuild started.
pub type ChangeLog = Vec<Change>;

/// What a tenant's vectors should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Flat,
    Partitioned,
}

/// The search a tenant of `config` starts with.
pub fn initial(config: &IndexConfig) -> Box<dyn VectorSearch> {
    match config.kind {
        IndexKind::Auto | IndexKind::Flat => Box::new(FlatScan::new(config.flat)),
        IndexKind::Ivf => Box::new(IvfSearch::new(config.ivf)),
    }
}

/// Whether `vectors` should be rebuilt, and into what; see [`crate::config`] for each rule.
pub fn wanted(config: &IndexConfig, vectors: &dyn VectorSearch) -> Option<Target> {
    let len = vectors.len();
    let Some(partition) = vectors.partition() else {
        return (config.kind == IndexKind::Auto && len >= config.partition_rows).then_some(Target::Partitioned);
    };
    if config.kind == IndexKind::Auto && len < config.partition_rows / 2 {
        return Some(Target::Flat);
    }
    let trained = partition.trained_rows;
    if trained == 0 {
        let enough = config.ivf.rows_per_list.saturating_mul(MIN_TRAINING_LISTS);
        return (len >= enough).then_some(Target::Partitioned);
    }
    let grown = len >= trained.saturating_mul(RETRAIN_GROWTH);
    let mean_list = (len / partition.lists.max(1)).max(config.ivf.rows_per_list);
    // Only once it has grown a quarter since, so that lists that stay unbalanced whatever they
    // are learnt from (many copies of one face) do not retrain on every write.
    let unbalanced =
        partition.largest_list > mean_list.saturating_mul(RETRAIN_IMBALANCE) && len >= trained + trained / 4;
    (grown || unbalanced).then_some(Target::Partitioned)
}

/// The state a rebuild needs of the tenant it runs for.
pub trait Rebuildable: Send + Sync + 'static {
    fn vectors(&self) -> &dyn VectorSearch;
    /// Takes the changes logged so far, leaving the log running.
    fn take_changes(&mut self) -> ChangeLog;
    /// Ends the log and puts `vectors` in place of the tenant's.
    fn install(&mut self, vectors: Box<dyn VectorSearch>);
    /// Ends the log, keeping the tenant's vectors.
    fn abandon(&mut self);
}

/// Runs a rebuild of `tenant` into `target`; the caller has started its change log.
pub fn run<T: Rebuildable>(tenant: &RwLock<T>, config: &IndexConfig, target: Target) {
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let (bound, rows, dim) = {
        let t = tenant.read();
        (t.vectors().slot_bound(), t.vectors().len(), t.vectors().dim())
    };
    let mut new: Box<dyn VectorSearch> = match target {
        Target::Flat => Box::new(FlatScan::new(config.flat)),
        Target::Partitioned => {
            let sample = training_sample(tenant, bound, IvfSearch::training_rows(&config.ivf, rows), dim);
            let quantizer = IvfSearch::train_quantizer(&config.ivf, &sample, dim, rows, threads);
            drop(sample);
            Box::new(IvfSearch::with_quantizer(config.ivf, Arc::new(quantizer), rows))
        }
    };
    let trained_ms = started.elapsed().as_millis() as u64;
    let mut start = 0;
    let mut chunk = 0u32;
    while start < bound {
        chunk += 1;
        if chunk.is_multiple_of(CHUNKS_PER_MEMORY_CHECK) && gave_up_for_memory(tenant, new.as_ref()) {
            return;
        }
        let end = start.saturating_add(CHUNK_SLOTS).min(bound);
        let rows: Vec<(u32, RowCopy)> = {
            let t = tenant.read();
            (start..end).filter_map(|slot| Some((slot, t.vectors().row(slot)?))).collect()
        };
        add_all(new.as_mut(), &rows, threads, false);
        start = end;
    }
    for round in 0.. {
        if gave_up_for_memory(tenant, new.as_ref()) {
            return;
        }
        let mut t = tenant.write();
        let overtaken = target == Target::Partitioned && t.vectors().len() >= rows.saturating_mul(RETRAIN_GROWTH);
        if overtaken && t.vectors().partition().is_some() {
            // The tenant doubled while these lists were learnt (a bulk load): they would be due
            // for retraining the moment they were in, and the tenant's own lists serve until
            // then. The next rebuild starts from today's rows. A tenant still scanned flat takes
            // them all the same (below): lists learnt from half its rows search it in a fraction
            // of a flat scan's time, and hold a row in about half the memory of its f16 row,
            // where starting over let a bulk load of 50M rows of 128 values fill 20 GB of flat
            // rows before any lists were in.
            tracing::info!(
                learnt_from = rows,
                now = t.vectors().len(),
                "index rebuild overtaken by growth; starting over"
            );
            t.abandon();
            return;
        }
        let changes = t.take_changes();
        if changes.len() <= FINAL_REPLAY || round >= CATCH_UP_ROUNDS {
            replay(&*t, new.as_mut(), &changes, threads);
            if new.len() != t.vectors().len() {
                // Only a tenant emptied and refilled with vectors of another length gets here.
                tracing::warn!(kept = t.vectors().len(), built = new.len(), "index rebuild abandoned");
                t.abandon();
                return;
            }
            tracing::info!(
                rows = new.len(),
                lists = new.partition().map_or(0, |p| p.lists),
                train_ms = trained_ms,
                total_ms = started.elapsed().as_millis() as u64,
                "tenant index rebuilt"
            );
            t.install(new);
            drop(t);
            return_freed_memory();
            return;
        }
        drop(t);
        if replay_unlocked(tenant, new.as_mut(), &changes, threads).is_err() {
            return;
        }
    }
}

/// Up to `count` rows drawn at random from slots below `bound`, row after row.
fn training_sample<T: Rebuildable>(tenant: &RwLock<T>, bound: u32, count: usize, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix(u64::from(bound));
    // Some slots are free: draw a few more than needed.
    let mut picks = sample_indices(bound as usize, count + count / 4, &mut rng);
    picks.sort_unstable();
    let mut out = Vec::with_capacity(count * dim);
    for chunk in picks.chunks(CHUNK_SLOTS as usize) {
        let t = tenant.read();
        for &slot in chunk {
            if out.len() >= count * dim {
                break;
            }
            if let Some(row) = t.vectors().row(slot as u32) {
                if row.vector.len() == dim {
                    out.extend_from_slice(&row.vector);
                }
            }
        }
    }
    out
}

/// Adds copied rows, placing them (in their lists) on `threads` threads first: placing is most
/// of the cost of adding a row to a partitioned search. `recent` rows were written while the
/// rebuild ran, after its training sample was drawn ([`VectorSearch::add_recent`]).
fn add_all(new: &mut dyn VectorSearch, rows: &[(u32, RowCopy)], threads: usize, recent: bool) {
    let placements = place(&*new, rows, threads);
    for ((slot, row), placement) in rows.iter().zip(placements) {
        let added = if recent {
            new.add_recent(*slot, row.group, row.tags, &row.vector, placement)
        } else {
            new.add_placed(*slot, row.group, row.tags, &row.vector, placement)
        };
        if let Err(reason) = added {
            tracing::debug!(slot, reason, "row not copied into the rebuilt index");
        }
    }
}

fn place(search: &dyn VectorSearch, rows: &[(u32, RowCopy)], threads: usize) -> Vec<Option<u32>> {
    let mut out = vec![None; rows.len()];
    let per_thread = rows.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (out, rows) in out.chunks_mut(per_thread).zip(rows.chunks(per_thread)) {
            scope.spawn(move || {
                for (o, (_, row)) in out.iter_mut().zip(rows) {
                    *o = search.placement(&row.vector);
                }
            });
        }
    });
    out
}

/// Replays `changes` onto `new` from the tenant as it is now, which the caller holds locked.
fn replay<T: Rebuildable>(tenant: &T, new: &mut dyn VectorSearch, changes: &[Change], threads: usize) {
    for segment in segments(changes) {
        match segment {
            Segment::Slots(slots) => {
                let rows: Vec<(u32, RowCopy)> =
                    slots.iter().filter_map(|&slot| Some((slot, tenant.vectors().row(slot)?))).collect();
                for &slot in &slots {
                    new.remove(slot);
                }
                add_all(new, &rows, threads, true);
            }
            Segment::Move { from, to } => new.move_tag_bits(from, to),
        }
    }
}

/// As [`replay`], reading the tenant a chunk at a time under its read lock.
fn replay_unlocked<T: Rebuildable>(
    tenant: &RwLock<T>,
    new: &mut dyn VectorSearch,
    changes: &[Change],
    threads: usize,
) -> Result<(), GaveUp> {
    for segment in segments(changes) {
        match segment {
            Segment::Slots(slots) => {
                for (i, chunk) in slots.chunks(CHUNK_SLOTS as usize).enumerate() {
                    if (i + 1).is_multiple_of(CHUNKS_PER_MEMORY_CHECK as usize) && gave_up_for_memory(tenant, new) {
                        return Err(GaveUp);
                    }
                    let rows: Vec<(u32, RowCopy)> = {
                        let t = tenant.read();
                        chunk.iter().filter_map(|&slot| Some((slot, t.vectors().row(slot)?))).collect()
                    };
                    for &slot in chunk {
                        new.remove(slot);
                    }
                    add_all(new, &rows, threads, true);
                }
            }
            Segment::Move { from, to } => new.move_tag_bits(from, to),
        }
    }
    Ok(())
}

/// A rebuild ended for want of memory ([`gave_up_for_memory`]).
struct GaveUp;

enum Segment {
    /// Distinct slots, in order.
    Slots(Vec<u32>),
    Move {
        from: u64,
        to: u64,
    },
}

/// The log cut at each move of tag bits, the slots between moves deduplicated.
fn segments(changes: &[Change]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut slots: Vec<u32> = Vec::new();
    for change in changes {
        match *change {
            Change::Slot(slot) => slots.push(slot),
            Change::MoveTagBits { from, to } => {
                if !slots.is_empty() {
                    out.push(Segment::Slots(dedup(std::mem::take(&mut slots))));
                }
                out.push(Segment::Move { from, to });
            }
        }
    }
    if !slots.is_empty() {
        out.push(Segment::Slots(dedup(slots)));
    }
    out
}

fn dedup(mut slots: Vec<u32>) -> Vec<u32> {
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Hands the heap pages the replaced search freed back to the system. Its lists were allocated
/// before the new search's, which now sit above them on the heap, so the allocator cannot
/// shrink the heap by itself: at 10M rows of 512 values, about 1 GB stayed resident without
/// this.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it touches no live allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_waits_when_its_copy_would_take_most_of_the_memory_left() {
        const GIB: u64 = 1 << 30;
        assert!(short_of(7 * GIB, 10 * GIB).is_none());
        assert!(short_of(9 * GIB, 10 * GIB).is_some(), "a copy must leave a fifth of what is available");
        // This machine says what it has: a search of no rows always fits.
        assert!(available_memory().is_some_and(|bytes| bytes > 0));
        assert!(memory_short(&FlatScan::new(IndexConfig::default().flat)).is_none());
    }

    #[test]
    fn a_running_rebuild_gives_up_only_near_the_end_of_memory() {
        const MIB: u64 = 1 << 20;
        // 1 % of 24 GiB is 246 MiB.
        assert!(under_floor(200 * MIB, 24 * 1024 * MIB));
        assert!(!under_floor(512 * MIB, 24 * 1024 * MIB));
        // A small machine keeps at least 256 MiB clear.
        assert!(under_floor(200 * MIB, 4 * 1024 * MIB));
        assert!(!under_floor(300 * MIB, 4 * 1024 * MIB));
        assert!(meminfo(&["MemTotal:"]).is_some_and(|[bytes]| bytes > 0));
    }
}
