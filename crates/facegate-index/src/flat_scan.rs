//! [`FlatScan`]: one tenant's vectors in one contiguous block, searched by a full scan.
//!
//! # Layout
//! Rows are an f16 vector (`dim` values), a sign sketch (`dim / 64` u64 words), a tag mask, a
//! group and a slot, each in its own array so a scan streams through memory in order. f16 halves
//! the memory of f32 (1 KiB per 512-d template) and changes a cosine similarity by less than
//! 1e-3. Removing a row moves the last row into its place, so the block stays dense; the slots
//! the shell knows rows by are mapped to positions.
//!
//! # Search
//! Up to [`SearchTuning::exact_rows`] rows, every row is scored exactly. Above that, a search
//! runs in two stages: the Hamming distance of every row's sign sketch to the query's (64 bytes
//! a row, a few milliseconds over a million rows) picks the closest
//! [`SearchTuning::candidates`] rows, and only those are scored exactly. A sign sketch
//! preserves angles (SimHash), so a mate at similarity 0.4 or more sits far inside the
//! candidates; `facegate bench search` measures the recall against exact search. A tag filter
//! skips rows with one AND in the sketch scan, so it never shrinks the candidates.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet};

use half::f16;

use crate::kernels::{dot_f16, hamming_distances, prefetch, sketch_cutoff, sketch_into, TagFilter};
use crate::vectors::{RowCopy, ScoredRow, VectorSearch};

/// Per-thread buffers of the sketch stage, kept between searches: a million-row search would
/// otherwise allocate and zero 2 MB each time.
#[derive(Default)]
struct Scratch {
    distances: Vec<u16>,
    histogram: Vec<u32>,
}

/// Rows requested from memory ahead of the one being scored.
const PREFETCH_AHEAD: usize = 8;
/// Threads of one sketch scan, at most.
const MAX_SCAN_THREADS: usize = 4;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// When a tenant is searched exactly and how many candidates the sketch stage keeps.
#[derive(Debug, Clone, Copy)]
pub struct SearchTuning {
    /// Tenants with at most this many templates are scored exactly, row by row.
    pub exact_rows: usize,
    /// Rows the sketch stage passes on for exact scoring, at least.
    pub min_candidates: usize,
    /// ... or this fraction of the rows, whichever is more ...
    pub candidate_fraction: f64,
    /// ... but never more than this many.
    pub max_candidates: usize,
    /// Tenants from this many rows scan their sketches on several threads.
    pub parallel_scan_rows: usize,
}

impl Default for SearchTuning {
    fn default() -> Self {
        Self {
            exact_rows: 32_768,
            min_candidates: 4_096,
            candidate_fraction: 0.016,
            max_candidates: 32_768,
            parallel_scan_rows: 200_000,
        }
    }
}

/// The embedding length the candidate counts above are tuned for.
pub const TUNED_DIM: usize = 512;

impl SearchTuning {
    /// Rows the sketch stage keeps for exact scoring out of `rows` of `dim`-value templates.
    ///
    /// A shorter template has a shorter sign sketch (`dim` bits), which ranks mates less
    /// sharply, and is cheaper to score exactly; so the counts grow by `512 / dim` (at most
    /// 4×), which keeps the bytes the exact stage reads, and the recall, where they are at 512.
    /// Measured at a million 128-d rows (`facegate bench search --dim 128`): recall@1 0.965 and
    /// @10 0.888 with the 512-d counts, 0.995 and 0.977 with four times as many, as at 512-d.
    pub fn candidates(&self, rows: usize, dim: usize) -> usize {
        let widen = (TUNED_DIM / dim.max(1)).clamp(1, 4);
        let by_fraction = (rows as f64 * self.candidate_fraction).ceil() as usize;
        (by_fraction.min(self.max_candidates).max(self.min_candidates) * widen).min(rows.max(1))
    }
}

/// Marks a slot with no row in `slot_row`.
const NO_ROW: u32 = u32::MAX;

/// One tenant's rows, scanned; see the module documentation.
#[derive(Default)]
pub struct FlatScan {
    tuning: SearchTuning,
    /// Length of every vector; set by the first add into an empty scan.
    dim: usize,
    /// Sketch words per row: `dim` bits rounded up to u64s.
    words: usize,
    /// `len() × dim` values, row after row.
    vectors: Vec<f16>,
    /// `len() × words` sign bits, row after row.
    sketches: Vec<u64>,
    row_tags: Vec<u64>,
    row_group: Vec<u32>,
    row_slot: Vec<u32>,
    /// Each slot's row, [`NO_ROW`] for a slot not in use.
    slot_row: Vec<u32>,
    /// One past the largest group added: the size of the exact scan's best-per-group array.
    /// The shell reuses freed subject ids, so it stays near the number of subjects.
    group_bound: usize,
}

impl FlatScan {
    pub fn new(tuning: SearchTuning) -> Self {
        Self { tuning, ..Self::default() }
    }

    fn row_of(&self, slot: u32) -> Option<usize> {
        self.slot_row.get(slot as usize).filter(|&&r| r != NO_ROW).map(|&r| r as usize)
    }

    fn row_vector(&self, row: u32) -> &[f16] {
        let start = row as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    fn scored(&self, s: Scored) -> ScoredRow {
        ScoredRow { slot: self.row_slot[s.row as usize], score: s.score }
    }

    /// Every row (that passes the filter) scored exactly, the best row kept per group.
    fn exact_scan(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow> {
        if limit == 0 || self.len() == 0 || query.len() != self.dim {
            return Vec::new();
        }
        // Best row per group; a plain array indexed by group is cheaper than a map.
        let mut best: Vec<(f32, u32)> = vec![(f32::NEG_INFINITY, u32::MAX); self.group_bound];
        let rows = self.vectors.chunks_exact(self.dim).zip(&self.row_group).zip(&self.row_tags).enumerate();
        for (row, ((vector, &group), &tags)) in rows {
            if filter.is_some_and(|f| f & tags == 0) {
                continue;
            }
            let score = dot_f16(vector, query);
            if let Some(b) = best.get_mut(group as usize) {
                // `>` keeps the earliest row on ties and never takes a NaN.
                if score > b.0 {
                    *b = (score, row as u32);
                }
            }
        }
        // Bounded min-heap: O(subjects · log limit), not a sort of every subject.
        let mut heap: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(limit.min(best.len()) + 1);
        for &(score, row) in &best {
            if row == u32::MAX {
                continue;
            }
            let candidate = Scored { score, row };
            if heap.len() < limit {
                heap.push(Reverse(candidate));
            } else if heap.peek().is_some_and(|Reverse(min)| candidate > *min) {
                heap.pop();
                heap.push(Reverse(candidate));
            }
        }
        let mut top: Vec<Scored> = heap.into_iter().map(|Reverse(s)| s).collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        top.into_iter().map(|s| self.scored(s)).collect()
    }

    /// Sketch distances pick `candidates` rows; those are scored exactly.
    fn two_stage_scan(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow> {
        let tuning = &self.tuning;
        if limit == 0 || self.len() == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut query_sketch = vec![0u64; self.words];
        sketch_into(query, &mut query_sketch);
        let max_distance = self.words * 64;
        let filter = filter.map(|any_of| TagFilter { row_tags: &self.row_tags, any_of });
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.distances.resize(self.len(), 0);
            scratch.histogram.clear();
            scratch.histogram.resize(max_distance + 1, 0);
            let parallel = self.len() >= tuning.parallel_scan_rows;
            self.sketch_distances(&query_sketch, filter, parallel, &mut scratch.distances, &mut scratch.histogram);
            let candidates = tuning.candidates(self.len(), self.dim);
            self.rerank_closest(query, limit, candidates, &scratch.distances, &scratch.histogram)
        })
    }

    /// The sketch scan, split across the cores for large tenants: one core cannot draw the
    /// memory bandwidth that streaming 64 MB of sketches per million rows needs.
    fn sketch_distances(
        &self,
        query_sketch: &[u64],
        filter: Option<TagFilter>,
        parallel: bool,
        out: &mut [u16],
        histogram: &mut [u32],
    ) {
        let parts = if parallel {
            std::thread::available_parallelism().map_or(1, usize::from).min(MAX_SCAN_THREADS)
        } else {
            1
        };
        if parts <= 1 {
            hamming_distances(&self.sketches, query_sketch, filter, out, histogram);
            return;
        }
        let rows_per_part = self.len().div_ceil(parts);
        let words = self.words;
        let partial: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = out
                .chunks_mut(rows_per_part)
                .enumerate()
                .map(|(part, out)| {
                    let start = part * rows_per_part;
                    let end = start + out.len();
                    let sketches = &self.sketches[start * words..end * words];
                    let filter = filter.map(|f| TagFilter { row_tags: &f.row_tags[start..end], any_of: f.any_of });
                    let bins = histogram.len();
                    scope.spawn(move || {
                        let mut part_histogram = vec![0u32; bins];
                        hamming_distances(sketches, query_sketch, filter, out, &mut part_histogram);
                        part_histogram
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        for part in partial {
            for (total, count) in histogram.iter_mut().zip(part) {
                *total += count;
            }
        }
    }

    /// Scores the `candidates` rows of smallest sketch distance exactly and returns the best
    /// row of each group, best first.
    fn rerank_closest(
        &self,
        query: &[f32],
        limit: usize,
        candidates: usize,
        distances: &[u16],
        histogram: &[u32],
    ) -> Vec<ScoredRow> {
        // Rows under the cutoff all pass; rows at it fill what is left of the budget. A row
        // the filter left out is at u16::MAX, past any cutoff.
        let (cutoff, mut at_cutoff_left) = sketch_cutoff(histogram, candidates);
        let mut rows: Vec<u32> = Vec::with_capacity(candidates.min(self.len()));
        for (row, &d) in distances.iter().enumerate() {
            let d = usize::from(d);
            if d > cutoff {
                continue;
            }
            if d == cutoff {
                if at_cutoff_left == 0 {
                    continue;
                }
                at_cutoff_left -= 1;
            }
            rows.push(row as u32);
        }
        let mut scored: Vec<Scored> = Vec::with_capacity(rows.len());
        for (i, &row) in rows.iter().enumerate() {
            if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                prefetch(self.row_vector(ahead));
            }
            let score = dot_f16(self.row_vector(row), query);
            if !score.is_nan() {
                scored.push(Scored { score, row });
            }
        }
        scored.sort_unstable_by(|a, b| b.cmp(a));
        let mut seen = HashSet::with_capacity(limit);
        let mut hits = Vec::with_capacity(limit);
        for s in scored {
            if seen.insert(self.row_group[s.row as usize]) {
                hits.push(self.scored(s));
                if hits.len() == limit {
                    break;
                }
            }
        }
        hits
    }
}

impl VectorSearch for FlatScan {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.row_slot.len()
    }

    fn add(&mut self, slot: u32, group: u32, tags: u64, embedding: &[f32]) -> Result<(), &'static str> {
        if self.row_of(slot).is_some() {
            return Err("slot already in use");
        }
        if self.len() == 0 {
            self.dim = embedding.len();
            self.words = embedding.len().div_ceil(64);
        } else if embedding.len() != self.dim {
            return Err("embedding length differs from the tenant's other templates");
        }
        let row = u32::try_from(self.len()).ok().filter(|&r| r != NO_ROW).ok_or("tenant holds too many templates")?;
        self.vectors.extend(embedding.iter().map(|&x| f16::from_f32(x)));
        let start = self.sketches.len();
        self.sketches.resize(start + self.words, 0);
        sketch_into(embedding, &mut self.sketches[start..]);
        self.row_tags.push(tags);
        self.row_group.push(group);
        self.row_slot.push(slot);
        if self.slot_row.len() <= slot as usize {
            self.slot_row.resize(slot as usize + 1, NO_ROW);
        }
        self.slot_row[slot as usize] = row;
        self.group_bound = self.group_bound.max(group as usize + 1);
        Ok(())
    }

    fn remove(&mut self, slot: u32) {
        let Some(r) = self.row_of(slot) else { return };
        let last = self.len() - 1;
        if r != last {
            let (dim, words) = (self.dim, self.words);
            self.vectors.copy_within(last * dim..(last + 1) * dim, r * dim);
            self.sketches.copy_within(last * words..(last + 1) * words, r * words);
            let moved = self.row_slot[last];
            self.slot_row[moved as usize] = r as u32;
        }
        self.slot_row[slot as usize] = NO_ROW;
        self.vectors.truncate(last * self.dim);
        self.sketches.truncate(last * self.words);
        self.row_tags.swap_remove(r);
        self.row_group.swap_remove(r);
        self.row_slot.swap_remove(r);
        // Give memory back after a large purge, keeping headroom for growth.
        if self.vectors.capacity() > 4 * self.vectors.len().max(1 << 16) {
            self.vectors.shrink_to(self.vectors.len() * 2);
            self.sketches.shrink_to(self.sketches.len() * 2);
        }
    }

    fn set_tags(&mut self, slot: u32, tags: u64) {
        if let Some(r) = self.row_of(slot) {
            self.row_tags[r] = tags;
        }
    }

    fn move_tag_bits(&mut self, from: u64, to: u64) {
        for mask in &mut self.row_tags {
            if *mask & from != 0 {
                *mask = (*mask & !from) | to;
            }
        }
    }

    fn score(&self, slot: u32, query: &[f32]) -> Option<f32> {
        if query.len() != self.dim {
            return None;
        }
        let r = self.row_of(slot)?;
        let score = dot_f16(self.vectors.get(r * self.dim..(r + 1) * self.dim)?, query);
        (!score.is_nan()).then_some(score)
    }

    fn search(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow> {
        if self.len() <= self.tuning.exact_rows {
            self.exact_scan(query, limit, filter)
        } else {
            self.two_stage_scan(query, limit, filter)
        }
    }

    fn search_exact(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow> {
        self.exact_scan(query, limit, filter)
    }

    fn slot_bound(&self) -> u32 {
        self.slot_row.len() as u32
    }

    fn row(&self, slot: u32) -> Option<RowCopy> {
        let r = self.row_of(slot)?;
        let vector = self.row_vector(r as u32).iter().map(|x| x.to_f32()).collect();
        Some(RowCopy { group: self.row_group[r], tags: self.row_tags[r], vector, placement: None })
    }

    fn row_bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f16>()
            + self.sketches.len() * 8
            + self.row_tags.len() * 8
            + self.row_group.len() * 4
            + self.row_slot.len() * 4
    }
}

/// A scored row, ordered by score and then by lower row first, so results are deterministic.
#[derive(Clone, Copy)]
struct Scored {
    score: f32,
    row: u32,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.row.cmp(&self.row))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}
