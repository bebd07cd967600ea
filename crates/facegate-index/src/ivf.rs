//! [`IvfSearch`]: one tenant's vectors in inverted lists over k-means centroids, so that a
//! search reads a few lists instead of every row.
//!
//! # Layout
//! - Per row, by slot: the vector as int8 with one f32 scale (`x ≈ scale · code`), its group,
//!   its tag mask, and where it sits in its list. int8 is half of f16 (512 bytes a 512-d row),
//!   which is what brings 10M such rows under 8 GB, and moves a similarity by about 3·10⁻⁴
//!   (unit vectors, `max |x| / 127` steps); the conformance suite holds it to 10⁻³, as f16.
//! - Per list: its rows' slots, tag masks and sign sketches (`dim` bits), each contiguous, so a
//!   probe streams through memory in order.
//!
//! # Search
//! The [`Quantizer`] ranks the lists by their centroid's similarity to the query; the best
//! [`IvfTuning::probes`] are scanned. A tag filter is applied in the scan, so it never shrinks
//! the answer: when the probed lists hold too few rows that pass it, the scan goes on into the
//! next lists, and when the filter is so rare that it would have to read most lists, every row
//! passing it is scored instead. The scan keeps the rows of smallest sketch distance (as the flat
//! scan's first stage), and those are scored on their int8 vectors; the best row of each group
//! ranks the group. When the lists scanned hold no more rows than that, every row is scored, so
//! a small or untrained search is exact.
//!
//! # Training
//! Before [`VectorSearch::train`] (or [`IvfSearch::with_quantizer`]) there is one list, and
//! every row is in it. Training learns the lists from the rows and moves every row into its
//! own; rows added later go straight to their nearest list. The shell retrains in the
//! background as the tenant grows (`crate::flat`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use crate::kernels::{dot_i8, hamming_distances, prefetch, sketch_cutoff, sketch_into, sketch_of_codes, TagFilter};
use crate::quantizer::{sample_indices, Quantizer, SplitMix, TRAINING_ROWS_PER_LIST};
use crate::vectors::{Learnt, Partition, RowCopy, ScoredRow, VectorSearch};

/// How a partitioned search is sized and how widely it looks.
#[derive(Debug, Clone, Copy)]
pub struct IvfTuning {
    /// Rows per list the training aims at. With the probes below, a search reads about
    /// `probes × rows_per_list` rows whatever the tenant's size: 65,536 rows, a few
    /// milliseconds of sketch scan.
    pub rows_per_list: usize,
    /// Lists a search scans, at least, at 512 values (shorter vectors read more:
    /// [`Self::probes_at`]). The rows of one cluster of faces spread over several lists (a few
    /// coarse cells' worth); 64 reads all of them for the synthetic population of
    /// `facegate bench search` up to 10M rows of 512 values.
    pub probes: usize,
    /// Rows the sketch stage passes on for scoring, at least ... At a million rows of 512
    /// values, 4,096 instead of 1,024 took recall@10 against the exact scan from 0.87 to 0.95
    /// and p50 from 2.3 to 3.3 ms.
    pub min_rerank: usize,
    /// ... or this fraction of the rows scanned, whichever is more.
    pub rerank_fraction: f64,
}

impl IvfTuning {
    /// Lists a search of `dim` values reads: `probes`, times 4 at 128 values (2 at 256). Shorter
    /// vectors spread a person's templates over more lists (noise crosses a list's border more
    /// easily in fewer dimensions: at 2M × 128 on the synthetic gallery, 64 probes found the
    /// mate first for 94 % of mated probes, 256 for 98.5 %), and a list costs less to read (a
    /// 128-bit sketch a row). Reading 4 times the lists, rather than scoring 4 times the rows
    /// (random reads of rows across the gallery, three quarters of a search), costs the same.
    pub fn probes_at(&self, dim: usize) -> usize {
        let shorter = (crate::flat_scan::TUNED_DIM / dim.max(1)).clamp(1, 4);
        self.probes.max(1).saturating_mul(shorter)
    }
}

impl Default for IvfTuning {
    fn default() -> Self {
        Self { rows_per_list: 1_024, probes: 64, min_rerank: 4_096, rerank_fraction: 0.02 }
    }
}

/// Rows drawn to train on, at most: 512 MB of 512-value rows while training runs, and enough
/// for 512 coarse centroids (a few hundred rows each) and their fine ones.
const MAX_TRAINING_ROWS: usize = 262_144;
/// A filtered search reads at most this many times `probes` lists before it scores every
/// passing row instead: past that, reading lists costs more than the exact filtered scan.
const MAX_FILTER_WIDENING: usize = 16;
/// A filter that at most this many rows pass is searched by scoring each of them, found through
/// the per-tag slot sets: a few milliseconds, and exact.
const EXACT_FILTERED_ROWS: usize = 16_384;
/// A filtered search keeps widening until this many rows per result passed the filter, so that
/// the sketch stage still has a choice.
const FILTERED_ROWS_PER_RESULT: usize = 8;
/// A search that came up short reads up to this many times more lists and candidates before it
/// scores every row instead.
const MAX_WIDENING: usize = 64;
/// Rows requested from memory ahead of the one being scored.
const PREFETCH_AHEAD: usize = 8;

const NO_LIST: u32 = u32::MAX;
/// Rows added since the lists were learnt that are kept in the fresh list, which every search
/// reads as if it were among the lists it probes, before the older half moves to their own lists. A list is only as good as the
/// rows it was learnt from: a face unlike them (a real face in a gallery of synthetic vectors,
/// a new camera or population) lands in a list that a search for another photo of the same
/// person may not read. Measured: 3M synthetic rows of 128 values, one real face enrolled after
/// training, its other photos searched with 64 probes: found 1 time in 4 from its list, 4 in 4
/// from the fresh list. What misses such a face is which lists are read, not the sketch stage
/// (a mate's sketch is as close as ever), so the fresh list goes through the sketch stage with
/// the probed lists' rows: 16,384 more sketch distances beside the 65,536 or so a search reads,
/// where scoring them all had doubled the time of a search at 1M × 512. The newest enrollments
/// are the ones most likely searched for next, and a retrain takes every row into the lists it
/// learns.
const FRESH_ROWS: usize = 16_384;

/// Per-thread buffers of a search, kept between searches: the sketch distances of every row
/// read (a few hundred thousand) and their histogram, from which the rows to score are picked
/// without sorting them.
#[derive(Default)]
struct ListScratch {
    distances: Vec<u16>,
    histogram: Vec<u32>,
    /// The lists read, each with where its distances start.
    read: Vec<(u32, usize)>,
}

thread_local! {
    static SCRATCH: RefCell<ListScratch> = RefCell::new(ListScratch::default());
}

#[derive(Default, Clone)]
struct List {
    slots: Vec<u32>,
    tags: Vec<u64>,
    /// `words` per row.
    sketches: Vec<u64>,
    /// The fresh list only: each row's own list, where it moves when the fresh list is full.
    homes: Vec<u32>,
}

/// See the module documentation.
pub struct IvfSearch {
    tuning: IvfTuning,
    quantizer: Arc<Quantizer>,
    /// Rows in the tenant when the lists were learnt; 0 before training.
    trained_rows: usize,
    dim: usize,
    words: usize,
    len: usize,
    /// By slot, `dim` values each.
    codes: Vec<i8>,
    scales: Vec<f32>,
    groups: Vec<u32>,
    tags: Vec<u64>,
    /// By slot: its list, [`NO_LIST`] for a slot not in use.
    list_of: Vec<u32>,
    position: Vec<u32>,
    lists: Vec<List>,
    /// Rows holding each tag bit: how rare a filter is.
    bit_counts: [usize; 64],
    /// Per tag bit, a bit per slot holding it: a filter few rows pass is scored from these
    /// without reading every slot (at 10M rows, 1.25 MB a tag bit in use instead of 80 MB of
    /// masks).
    tag_slots: Vec<Vec<u64>>,
    group_bound: usize,
    /// The longest any list has been since the lists were learnt.
    largest_list: usize,
}

impl IvfSearch {
    /// An untrained search: one list, searched exactly.
    pub fn new(tuning: IvfTuning) -> Self {
        Self::with_quantizer(tuning, Arc::new(Quantizer::single(0)), 0)
    }

    /// A search over the lists of `quantizer`, learnt from `trained_rows` rows.
    pub fn with_quantizer(tuning: IvfTuning, quantizer: Arc<Quantizer>, trained_rows: usize) -> Self {
        // The quantizer's lists, then the fresh list.
        let lists = vec![List::default(); quantizer.lists().max(1) + 1];
        let dim = quantizer.dim();
        Self {
            tuning,
            quantizer,
            trained_rows,
            dim,
            words: dim.div_ceil(64),
            len: 0,
            codes: Vec::new(),
            scales: Vec::new(),
            groups: Vec::new(),
            tags: Vec::new(),
            list_of: Vec::new(),
            position: Vec::new(),
            lists,
            bit_counts: [0; 64],
            tag_slots: vec![Vec::new(); 64],
            group_bound: 0,
            largest_list: 0,
        }
    }

    /// The lists to learn for `rows` rows.
    pub fn lists_for(tuning: &IvfTuning, rows: usize) -> usize {
        rows.div_ceil(tuning.rows_per_list.max(1)).max(1)
    }

    /// Learns lists from `sample` (rows of `dim`, drawn from a tenant of `rows` rows).
    pub fn train_quantizer(tuning: &IvfTuning, sample: &[f32], dim: usize, rows: usize, threads: usize) -> Quantizer {
        Quantizer::train(sample, dim, Self::lists_for(tuning, rows), threads, rows as u64)
    }

    /// Rows to draw from a tenant of `rows` rows to train on.
    pub fn training_rows(tuning: &IvfTuning, rows: usize) -> usize {
        (Self::lists_for(tuning, rows) * TRAINING_ROWS_PER_LIST).min(MAX_TRAINING_ROWS).min(rows)
    }

    fn row_code(&self, slot: usize) -> &[i8] {
        &self.codes[slot * self.dim..(slot + 1) * self.dim]
    }

    fn in_use(&self, slot: u32) -> bool {
        self.list_of.get(slot as usize).is_some_and(|&l| l != NO_LIST)
    }

    fn score_slot(&self, slot: usize, query: &[f32]) -> f32 {
        dot_i8(self.row_code(slot), query) * self.scales[slot]
    }

    /// Counts slot `slot`'s `tags` in (`held`) or out.
    fn count_bits(&mut self, slot: u32, tags: u64, held: bool) {
        let (word, mask) = (slot as usize / 64, 1u64 << (slot % 64));
        let mut bits = tags;
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            let slots = &mut self.tag_slots[bit];
            if held {
                self.bit_counts[bit] += 1;
                if slots.len() <= word {
                    slots.resize(word + 1, 0);
                }
                slots[word] |= mask;
            } else {
                self.bit_counts[bit] = self.bit_counts[bit].saturating_sub(1);
                if let Some(w) = slots.get_mut(word) {
                    *w &= !mask;
                }
            }
            bits &= bits - 1;
        }
    }

    /// The fresh list's number: the one after the quantizer's.
    fn fresh(&self) -> u32 {
        (self.lists.len() - 1) as u32
    }

    /// Puts slot `slot` (in use) at the end of list `list`; `home` is its own list when `list`
    /// is the fresh one.
    fn push_to_list(&mut self, slot: u32, list: u32, sketch: &[u64], home: u32) {
        let fresh = list == self.fresh();
        let l = &mut self.lists[list as usize];
        self.position[slot as usize] = l.slots.len() as u32;
        l.slots.push(slot);
        l.tags.push(self.tags[slot as usize]);
        l.sketches.extend_from_slice(sketch);
        if fresh {
            l.homes.push(home);
        } else {
            self.largest_list = self.largest_list.max(l.slots.len());
        }
        self.list_of[slot as usize] = list;
    }

    /// Moves the older half of a full fresh list to their own lists, in the order they came.
    fn settle_fresh(&mut self) {
        let fresh = self.fresh();
        if self.lists[fresh as usize].slots.len() <= FRESH_ROWS {
            return;
        }
        let words = self.words;
        let old = std::mem::take(&mut self.lists[fresh as usize]);
        let keep_from = old.slots.len() / 2;
        for (i, &slot) in old.slots.iter().enumerate() {
            let (list, home) = if i < keep_from { (old.homes[i], old.homes[i]) } else { (fresh, old.homes[i]) };
            self.push_to_list(slot, list, &old.sketches[i * words..(i + 1) * words], home);
        }
    }

    /// Takes slot `slot` out of its list, moving the list's last row into its place.
    fn take_from_list(&mut self, slot: u32) {
        let list = self.list_of[slot as usize];
        let words = self.words;
        let pos = self.position[slot as usize] as usize;
        let l = &mut self.lists[list as usize];
        let last = l.slots.len() - 1;
        if pos != last {
            let moved = l.slots[last];
            l.slots[pos] = moved;
            l.tags[pos] = l.tags[last];
            l.sketches.copy_within(last * words..(last + 1) * words, pos * words);
            if !l.homes.is_empty() {
                l.homes[pos] = l.homes[last];
            }
            self.position[moved as usize] = pos as u32;
        }
        l.slots.pop();
        l.tags.pop();
        l.homes.pop();
        l.sketches.truncate(last * words);
        self.list_of[slot as usize] = NO_LIST;
    }

    /// Every row moved to the list `quantizer` gives it; the lists start over.
    fn relist(&mut self, quantizer: Arc<Quantizer>, trained_rows: usize) {
        let words = self.words;
        let mut sketches = vec![0u64; self.list_of.len() * words];
        for l in &self.lists {
            for (i, &slot) in l.slots.iter().enumerate() {
                sketches[slot as usize * words..(slot as usize + 1) * words]
                    .copy_from_slice(&l.sketches[i * words..(i + 1) * words]);
            }
        }
        self.lists = vec![List::default(); quantizer.lists().max(1) + 1];
        self.quantizer = quantizer;
        self.trained_rows = trained_rows;
        self.largest_list = 0;
        let mut vector = vec![0.0f32; self.dim];
        for slot in 0..self.list_of.len() {
            if self.list_of[slot] == NO_LIST {
                continue;
            }
            self.decode(slot, &mut vector);
            let list = self.quantizer.assign(&vector);
            self.push_to_list(slot as u32, list, &sketches[slot * words..(slot + 1) * words], list);
        }
    }

    fn decode(&self, slot: usize, out: &mut [f32]) {
        let scale = self.scales[slot];
        for (o, &c) in out.iter_mut().zip(self.row_code(slot)) {
            *o = f32::from(c) * scale;
        }
    }

    /// Rows the sketch stage passes on out of `scanned`.
    fn rerank_budget(&self, scanned: usize) -> usize {
        let by_fraction = (scanned as f64 * self.tuning.rerank_fraction).ceil() as usize;
        by_fraction.max(self.tuning.min_rerank)
    }

    /// Lists a search reads ([`IvfTuning::probes_at`]).
    fn probes(&self) -> usize {
        self.tuning.probes_at(self.dim)
    }

    /// Rows that may pass `filter`: at most the sum of its bits' counts.
    fn passing_at_most(&self, filter: u64) -> usize {
        let mut bits = filter;
        let mut total = 0usize;
        while bits != 0 {
            total = total.saturating_add(self.bit_counts[bits.trailing_zeros() as usize]);
            bits &= bits - 1;
        }
        total.min(self.len)
    }

    /// Scores `slots` and keeps the best row of each of the best `limit` groups.
    fn best_per_group(&self, slots: &[u32], query: &[f32], limit: usize) -> Vec<ScoredRow> {
        let mut scored: Vec<(f32, u32)> = Vec::with_capacity(slots.len());
        for (i, &slot) in slots.iter().enumerate() {
            if let Some(&ahead) = slots.get(i + PREFETCH_AHEAD) {
                // The scale is a second read from elsewhere: fetched late, it stalled a
                // search as long as the codes did.
                prefetch(self.row_code(ahead as usize));
                prefetch(std::slice::from_ref(&self.scales[ahead as usize]));
            }
            let score = self.score_slot(slot as usize, query);
            if !score.is_nan() {
                scored.push((score, slot));
            }
        }
        // Best first; ties to the lower slot, so that answers do not depend on list order.
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut seen = HashSet::with_capacity(limit);
        let mut hits = Vec::with_capacity(limit);
        for (score, slot) in scored {
            if seen.insert(self.groups[slot as usize]) {
                hits.push(ScoredRow { slot, score });
                if hits.len() == limit {
                    break;
                }
            }
        }
        hits
    }

    /// Every row passing `filter` scored.
    fn exact(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow> {
        if limit == 0 || self.len == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let Some(filter) = filter else { return self.exact_all(query, limit) };
        // The slots passing: the union of the filter's bits' slot sets, a word at a time. A
        // filter worth scoring row by row passes few rows, so they are ranked as the lists'
        // candidates are, with no array over every group.
        let maps: Vec<&Vec<u64>> = (0..64).filter(|b| filter & (1 << b) != 0).map(|b| &self.tag_slots[b]).collect();
        let words = maps.iter().map(|m| m.len()).max().unwrap_or(0);
        let mut slots = Vec::new();
        for w in 0..words {
            let mut passing = maps.iter().fold(0u64, |acc, m| acc | m.get(w).copied().unwrap_or(0));
            while passing != 0 {
                slots.push((w * 64) as u32 + passing.trailing_zeros());
                passing &= passing - 1;
            }
        }
        self.best_per_group(&slots, query, limit)
    }

    /// Every row scored, the best row of each group kept in an array indexed by group.
    fn exact_all(&self, query: &[f32], limit: usize) -> Vec<ScoredRow> {
        let mut best: Vec<(f32, u32)> = vec![(f32::NEG_INFINITY, u32::MAX); self.group_bound];
        for slot in (0..self.list_of.len()).filter(|&s| self.list_of[s] != NO_LIST) {
            let score = self.score_slot(slot, query);
            if let Some(b) = best.get_mut(self.groups[slot] as usize) {
                // `>` keeps the lower slot on ties and never takes a NaN.
                if score > b.0 {
                    *b = (score, slot as u32);
                }
            }
        }
        let mut top: Vec<(f32, u32)> = best.into_iter().filter(|b| b.1 != u32::MAX).collect();
        top.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        top.truncate(limit);
        top.into_iter().map(|(score, slot)| ScoredRow { slot, score }).collect()
    }
}

impl VectorSearch for IvfSearch {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.len
    }

    fn add(&mut self, slot: u32, group: u32, tags: u64, embedding: &[f32]) -> Result<(), &'static str> {
        self.add_to_list(slot, group, tags, embedding, None, None)
    }

    fn remove(&mut self, slot: u32) {
        self.remove_row(slot);
    }

    fn reserve(&mut self, rows: usize) {
        self.codes.reserve(rows * self.dim);
        self.scales.reserve(rows);
        self.groups.reserve(rows);
        self.tags.reserve(rows);
        self.list_of.reserve(rows);
        self.position.reserve(rows);
    }
    fn set_tags(&mut self, slot: u32, tags: u64) {
        if !self.in_use(slot) {
            return;
        }
        let s = slot as usize;
        self.count_bits(slot, self.tags[s], false);
        self.count_bits(slot, tags, true);
        self.tags[s] = tags;
        let (list, pos) = (self.list_of[s] as usize, self.position[s] as usize);
        self.lists[list].tags[pos] = tags;
    }

    fn move_tag_bits(&mut self, from: u64, to: u64) {
        let moved = |mask: &mut u64| {
            if *mask & from != 0 {
                *mask = (*mask & !from) | to;
            }
        };
        for (slot, mask) in self.tags.iter_mut().enumerate() {
            if self.list_of[slot] != NO_LIST {
                moved(mask);
            }
        }
        for l in &mut self.lists {
            l.tags.iter_mut().for_each(moved);
        }
        self.bit_counts = [0; 64];
        self.tag_slots = vec![Vec::new(); 64];
        for slot in 0..self.list_of.len() {
            if self.list_of[slot] != NO_LIST {
                self.count_bits(slot as u32, self.tags[slot], true);
            }
        }
    }

    fn score(&self, slot: u32, query: &[f32]) -> Option<f32> {
        if query.len() != self.dim || !self.in_use(slot) {
            return None;
        }
        let score = self.score_slot(slot as usize, query);
        (!score.is_nan()).then_some(score)
    }

    fn search(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow> {
        if limit == 0 || self.len == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let probes = self.probes();
        let mut widen = 1;
        loop {
            match self.search_lists(query, limit, filter, probes.saturating_mul(widen), widen) {
                Scan::Found(hits) => return hits,
                // Fewer groups than asked for among the rows read (one subject's many samples
                // crowding the nearest lists, or a filter few rows pass): read more, and past a
                // point score everything, so that the answer is never short.
                Scan::Short if widen < MAX_WIDENING => widen *= 4,
                Scan::Short | Scan::Everything => return self.exact(query, limit, filter),
            }
        }
    }

    fn search_exact(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow> {
        self.exact(query, limit, filter)
    }

    fn row_bytes(&self) -> usize {
        let per_slot = self.dim + 4 + 4 + 8 + 4 + 4;
        let per_row_in_list = 4 + 8 + self.words * 8;
        self.list_of.len() * per_slot + self.len * per_row_in_list
    }

    fn train(&mut self) {
        if self.len == 0 {
            return;
        }
        let sample = self.training_sample(Self::training_rows(&self.tuning, self.len));
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let quantizer = Self::train_quantizer(&self.tuning, &sample, self.dim, self.len, threads);
        self.relist(Arc::new(quantizer), self.len);
    }

    fn slot_bound(&self) -> u32 {
        self.list_of.len() as u32
    }

    fn row(&self, slot: u32) -> Option<RowCopy> {
        if !self.in_use(slot) {
            return None;
        }
        let mut vector = vec![0.0f32; self.dim];
        self.decode(slot as usize, &mut vector);
        let s = slot as usize;
        Some(RowCopy { group: self.groups[s], tags: self.tags[s], vector, placement: Some(self.list_of[s]) })
    }

    fn placement(&self, embedding: &[f32]) -> Option<u32> {
        (embedding.len() == self.dim).then(|| self.quantizer.assign(embedding))
    }

    fn add_placed(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        embedding: &[f32],
        placement: Option<u32>,
    ) -> Result<(), &'static str> {
        self.add_to_list(slot, group, tags, embedding, placement, None)
    }

    fn add_coded(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        codes: &[i8],
        scale: f32,
        placement: Option<u32>,
    ) -> Result<(), &'static str> {
        match placement {
            Some(list) if list < self.fresh() && codes.len() == self.dim && scale.is_finite() && scale > 0.0 => {
                self.add_codes_to_list(slot, group, tags, codes, scale, list)
            }
            // A fresh row needs its home list worked out from its values.
            _ => self.add_placed(slot, group, tags, &crate::kernels::decode_codes(codes, scale), placement),
        }
    }

    fn add_recent(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        embedding: &[f32],
        home: Option<u32>,
    ) -> Result<(), &'static str> {
        self.add_to_list(slot, group, tags, embedding, None, home)
    }

    fn partition(&self) -> Option<Partition> {
        Some(Partition {
            lists: self.fresh() as usize,
            trained_rows: self.trained_rows,
            largest_list: self.largest_list,
        })
    }

    fn learnt(&self) -> Option<Learnt> {
        Some(Learnt { quantizer: Arc::clone(&self.quantizer), trained_rows: self.trained_rows })
    }
}

/// `x` (|x| < 2^22) rounded to the nearest integer, ties to even: adding and taking away 1.5·2^23
/// leaves no fraction bits. Unlike `f32::round`, no library call, so a row's loop vectorizes:
/// rounding was a third of loading a snapshot.
#[inline]
fn round_small(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

/// The int8 code of value `x` at `inverse` = 1 / scale.
#[inline(always)]
fn code_of(x: f32, inverse: f32) -> i8 {
    round_small((x * inverse).clamp(-127.0, 127.0)) as i8
}

/// What one pass over the nearest lists came to.
enum Scan {
    Found(Vec<ScoredRow>),
    /// Fewer groups than the limit, with rows left unread.
    Short,
    /// The filter is so rare that reading enough lists to meet it costs more than scoring every
    /// row that passes it.
    Everything,
}

impl IvfSearch {
    /// Reads the `probes` nearest lists (more while too few rows passed `filter`), keeps the rows
    /// of smallest sketch distance, `widen` times the usual number, and scores them.
    fn search_lists(&self, query: &[f32], limit: usize, filter: Option<u64>, probes: usize, widen: usize) -> Scan {
        let lists_total = self.fresh() as usize;
        let max_lists = probes.saturating_mul(MAX_FILTER_WIDENING);
        let mut need_passing = 0usize;
        let mut passing_total = self.len;
        if let Some(f) = filter {
            passing_total = self.passing_at_most(f);
            if passing_total == 0 {
                return Scan::Found(Vec::new());
            }
            // Lists to read, at this filter's share of the rows, to meet as many passing rows
            // as the probes hold unfiltered.
            let expected_lists = probes.saturating_mul(self.len).div_ceil(passing_total);
            if passing_total <= EXACT_FILTERED_ROWS || (expected_lists > max_lists && lists_total > max_lists) {
                return Scan::Everything;
            }
            need_passing = (limit * FILTERED_ROWS_PER_RESULT).min(passing_total);
        }
        let mut ranked = Vec::new();
        self.quantizer.ranked_lists(query, probes, &mut ranked);
        let mut query_sketch = vec![0u64; self.words];
        sketch_into(query, &mut query_sketch);
        let (slots, every_row) = SCRATCH.with_borrow_mut(|scratch| {
            let ListScratch { distances, histogram, read } = scratch;
            distances.clear();
            histogram.clear();
            histogram.resize(self.words * 64 + 1, 0);
            read.clear();
            // Each list's sketch distances go after the previous list's, counted in `histogram`;
            // a row the filter leaves out is at u16::MAX, past any cutoff.
            let mut scan = |list: u32, passing: &mut usize| {
                let l = &self.lists[list as usize];
                let from = distances.len();
                distances.resize(from + l.slots.len(), 0);
                let row_filter = filter.map(|any_of| TagFilter { row_tags: &l.tags, any_of });
                hamming_distances(&l.sketches, &query_sketch, row_filter, &mut distances[from..], histogram);
                if filter.is_some() {
                    *passing += distances[from..].iter().filter(|&&d| d != u16::MAX).count();
                } else {
                    *passing += l.slots.len();
                }
                read.push((list, from));
            };
            let mut passing = 0usize;
            let mut lists_read = 0;
            for (i, &list) in ranked.iter().enumerate() {
                if i >= probes && (passing >= need_passing || i >= max_lists) {
                    break;
                }
                lists_read += 1;
                scan(list, &mut passing);
            }
            // The fresh list is read by every search, as one more list.
            scan(self.fresh(), &mut passing);
            let every_list = lists_read == ranked.len();
            let budget = self.rerank_budget(passing).saturating_mul(widen);
            let every_row = every_list && passing <= budget;
            let (cutoff, at_cutoff) = sketch_cutoff(histogram, budget);
            let mut slots = Vec::with_capacity(budget.min(passing));
            let mut tied = Vec::new();
            for &(list, from) in read.iter() {
                let l = &self.lists[list as usize];
                for (&d, &slot) in distances[from..from + l.slots.len()].iter().zip(&l.slots) {
                    let d = usize::from(d);
                    if d < cutoff {
                        slots.push(slot);
                    } else if d == cutoff {
                        tied.push(slot);
                    }
                }
            }
            // Rows at the cutoff are taken by lowest slot, not in the order the lists hold
            // them, so that a search answers the same after a snapshot restores the lists in
            // another order.
            if tied.len() > at_cutoff {
                tied.select_nth_unstable(at_cutoff);
                tied.truncate(at_cutoff);
            }
            slots.extend(tied);
            (slots, every_row)
        });
        let hits = self.best_per_group(&slots, query, limit);
        if hits.len() < limit && !every_row && passing_total > hits.len() {
            return Scan::Short;
        }
        Scan::Found(hits)
    }

    /// Adds a row as [`VectorSearch::add`] does, into `list` when the caller placed it already;
    /// `home`, when known, is the row's own list (its placement), saving the work of finding it.
    fn add_to_list(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        embedding: &[f32],
        list: Option<u32>,
        home: Option<u32>,
    ) -> Result<(), &'static str> {
        if self.in_use(slot) {
            return Err("slot already in use");
        }
        if self.len == 0 && embedding.len() != self.dim {
            // Empty: the first row sets the length, and lists of another length are void.
            *self = Self::with_quantizer(self.tuning, Arc::new(Quantizer::single(embedding.len())), 0);
        } else if embedding.len() != self.dim {
            return Err("embedding length differs from the tenant's other templates");
        }
        if slot == u32::MAX {
            return Err("tenant holds too many templates");
        }
        let s = slot as usize;
        self.make_room(s);
        let max = embedding.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let inverse = 1.0 / scale;
        for (c, &x) in self.codes[s * self.dim..(s + 1) * self.dim].iter_mut().zip(embedding) {
            *c = code_of(x, inverse);
        }
        self.scales[s] = scale;
        self.groups[s] = group;
        self.tags[s] = tags;
        let fresh = self.fresh();
        let known_home = home.filter(|&h| h < fresh);
        let (list, home) = match list {
            // Placed by a rebuild or a snapshot.
            Some(list) if list < fresh => (list, list),
            // A new row of a trained search: the fresh list first.
            Some(list) if list == fresh => (fresh, known_home.unwrap_or_else(|| self.quantizer.assign(embedding))),
            _ if self.trained_rows > 0 => (fresh, known_home.unwrap_or_else(|| self.quantizer.assign(embedding))),
            _ => {
                let home = known_home.unwrap_or_else(|| self.quantizer.assign(embedding));
                (home, home)
            }
        };
        self.file_row(slot, group, tags, list, home);
        Ok(())
    }

    /// As [`Self::add_to_list`] for a row already coded, into a learnt list: the codes are
    /// taken as they are, with no round trip through f32 (most of restoring a snapshot at 512
    /// values). The sketch is the codes' signs, as it is of the values they decode to.
    fn add_codes_to_list(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        codes: &[i8],
        scale: f32,
        list: u32,
    ) -> Result<(), &'static str> {
        if self.in_use(slot) {
            return Err("slot already in use");
        }
        if slot == u32::MAX {
            return Err("tenant holds too many templates");
        }
        let s = slot as usize;
        self.make_room(s);
        self.codes[s * self.dim..(s + 1) * self.dim].copy_from_slice(codes);
        self.scales[s] = scale;
        self.groups[s] = group;
        self.tags[s] = tags;
        self.file_row(slot, group, tags, list, list);
        Ok(())
    }

    /// Room in the per-slot arrays for slot `s`.
    fn make_room(&mut self, s: usize) {
        if self.list_of.len() <= s {
            let n = s + 1;
            self.list_of.resize(n, NO_LIST);
            self.position.resize(n, 0);
            self.codes.resize(n * self.dim, 0);
            self.scales.resize(n, 0.0);
            self.groups.resize(n, 0);
            self.tags.resize(n, 0);
        }
    }

    /// Puts a row whose codes are stored into `list` and counts it. Its sketch is the signs of
    /// its codes, for a new row as for a restored one (a snapshot keeps only codes): a value
    /// that rounds to code 0 would otherwise set a bit before a restart and not after, and a
    /// search would answer differently. The sketch is built on the stack up to 1,024 values (an
    /// allocation a row was a tenth of loading a snapshot).
    fn file_row(&mut self, slot: u32, group: u32, tags: u64, list: u32, home: u32) {
        let mut stack = [0u64; 16];
        let mut heap = Vec::new();
        let buffer = if self.words <= stack.len() {
            &mut stack[..self.words]
        } else {
            heap.resize(self.words, 0);
            &mut heap[..]
        };
        let s = slot as usize;
        sketch_of_codes(&self.codes[s * self.dim..(s + 1) * self.dim], buffer);
        self.push_to_list(slot, list, buffer, home);
        self.settle_fresh();
        self.count_bits(slot, tags, true);
        self.len += 1;
        self.group_bound = self.group_bound.max(group as usize + 1);
    }

    fn remove_row(&mut self, slot: u32) {
        if !self.in_use(slot) {
            return;
        }
        self.take_from_list(slot);
        self.count_bits(slot, self.tags[slot as usize], false);
        self.tags[slot as usize] = 0;
        self.len -= 1;
        if self.len == 0 {
            // Nothing left: start again untrained, ready for any length.
            *self = Self::new(self.tuning);
            return;
        }
        // Give memory back when the highest slots are free (after a large purge).
        let mut end = self.list_of.len();
        while end > 0 && self.list_of[end - 1] == NO_LIST {
            end -= 1;
        }
        if end < self.list_of.len() / 2 {
            self.list_of.truncate(end);
            self.position.truncate(end);
            self.codes.truncate(end * self.dim);
            self.scales.truncate(end);
            self.groups.truncate(end);
            self.tags.truncate(end);
            for v in [&mut self.position, &mut self.list_of] {
                v.shrink_to_fit();
            }
            self.codes.shrink_to_fit();
        }
    }

    /// Up to `count` rows drawn at random, decoded, row after row.
    fn training_sample(&self, count: usize) -> Vec<f32> {
        let live: Vec<usize> = (0..self.list_of.len()).filter(|&s| self.list_of[s] != NO_LIST).collect();
        let mut rng = SplitMix(live.len() as u64);
        let mut out = vec![0.0f32; count.min(live.len()) * self.dim];
        for (i, pick) in sample_indices(live.len(), count, &mut rng).into_iter().enumerate() {
            self.decode(live[pick], &mut out[i * self.dim..(i + 1) * self.dim]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dot;

    fn random_unit(rng: &mut SplitMix, dim: usize) -> Vec<f32> {
        // Sums of uniforms: near enough to Gaussian for a direction.
        let mut v: Vec<f32> = (0..dim)
            .map(|_| (0..4).map(|_| rng.next_u64() as f64 / u64::MAX as f64 - 0.5).sum::<f64>() as f32)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    #[test]
    fn int8_rows_score_within_half_a_thousandth_at_face_embedding_lengths() {
        for dim in [128, 512] {
            let mut rng = SplitMix(dim as u64);
            let mut search = IvfSearch::new(IvfTuning::default());
            let rows: Vec<Vec<f32>> = (0..500).map(|_| random_unit(&mut rng, dim)).collect();
            for (slot, row) in rows.iter().enumerate() {
                search.add(slot as u32, slot as u32, 0, row).expect("add");
            }
            let (mut worst, mut total, mut n) = (0.0f32, 0.0f32, 0);
            for _ in 0..20 {
                let query = random_unit(&mut rng, dim);
                for (slot, row) in rows.iter().enumerate() {
                    let error = (search.score(slot as u32, &query).expect("a row") - dot(row, &query)).abs();
                    worst = worst.max(error);
                    total += error;
                    n += 1;
                }
            }
            let mean = total / n as f32;
            assert!(worst < 2e-3 && mean < 5e-4, "dim {dim}: worst {worst}, mean {mean}");
        }
    }

    #[test]
    fn training_moves_every_row_to_a_list_and_keeps_it_findable() {
        let mut rng = SplitMix(3);
        let dim = 64;
        let tuning = IvfTuning { rows_per_list: 50, probes: 3, ..IvfTuning::default() };
        let mut search = IvfSearch::new(tuning);
        let rows: Vec<Vec<f32>> = (0..3000).map(|_| random_unit(&mut rng, dim)).collect();
        for (slot, row) in rows.iter().enumerate() {
            search.add(slot as u32, slot as u32, 1 << (slot % 3), row).expect("add");
        }
        search.train();
        let partition = search.partition().expect("partitioned");
        assert!(partition.lists > 30 && partition.trained_rows == 3000, "{partition:?}");
        let listed: usize = search.lists.iter().map(|l| l.slots.len()).sum();
        assert_eq!(listed, 3000);
        for (slot, row) in rows.iter().enumerate().step_by(97) {
            let top = search.search(row, 1, None);
            assert_eq!(top.first().map(|r| r.slot), Some(slot as u32), "row {slot} finds itself");
            let tagged = search.search(row, 1, Some(1 << (slot % 3)));
            assert_eq!(tagged.first().map(|r| r.slot), Some(slot as u32), "row {slot} under its own tag");
        }
        // Emptied, it is untrained again and takes any length.
        for slot in 0..3000 {
            search.remove(slot);
        }
        assert_eq!(search.partition().map(|p| p.lists), Some(1));
        search.add(0, 0, 0, &[1.0, 0.0]).expect("a new length once empty");
    }

    /// A face unlike every row the lists were learnt from: in a list a search for another photo
    /// of it need not read. Kept in the fresh list, it is found; and the fresh list stays bounded.
    #[test]
    fn rows_added_after_training_are_found_however_unlike_the_training_rows() {
        let mut rng = SplitMix(11);
        let dim = 64;
        // 32 rows scored: what 8 came to when short vectors widened the rerank, not the probes.
        let tuning = IvfTuning { rows_per_list: 40, probes: 1, min_rerank: 32, rerank_fraction: 0.0 };
        let mut search = IvfSearch::new(tuning);
        // Trained on rows in the first half of the space only.
        let half = |rng: &mut SplitMix| {
            let mut v = random_unit(rng, dim / 2);
            v.resize(dim, 0.0);
            v
        };
        for slot in 0..4000u32 {
            search.add(slot, slot, 0, &half(&mut rng)).expect("add");
        }
        search.train();
        // Then faces in the other half, and "other photos" of them: similar, not equal.
        let mut probes = Vec::new();
        for k in 0..50u32 {
            let mut face = vec![0.0; dim / 2];
            face.extend(random_unit(&mut rng, dim / 2));
            let noise = random_unit(&mut rng, dim);
            let probe: Vec<f32> = face.iter().zip(&noise).map(|(f, n)| f + 0.6 * n).collect();
            search.add(4000 + k, 4000 + k, 0, &face).expect("add");
            probes.push((4000 + k, probe));
        }
        assert_eq!(search.lists[search.fresh() as usize].slots.len(), 50);
        for (slot, probe) in &probes {
            assert_eq!(search.search(probe, 1, None)[0].slot, *slot, "the face in slot {slot} is found");
        }
        // Past FRESH_ROWS, the older half goes to their own lists; every row stays in one list.
        for slot in 5000..5000 + FRESH_ROWS as u32 {
            search.add(slot, slot, 0, &half(&mut rng)).expect("add");
        }
        let fresh = search.lists[search.fresh() as usize].slots.len();
        assert!((FRESH_ROWS / 2..=FRESH_ROWS).contains(&fresh), "{fresh}");
        let listed: usize = search.lists.iter().map(|l| l.slots.len()).sum();
        assert_eq!(listed, search.len());
        let newest = 5000 + FRESH_ROWS as u32 - 1;
        assert_eq!(search.list_of[newest as usize], search.fresh(), "the newest row is still fresh");
        let home = search.lists[search.fresh() as usize].homes[search.position[newest as usize] as usize];
        assert_eq!(home, search.placement(&search.row(newest).expect("row").vector).expect("placed"));
    }

    #[test]
    fn the_rounding_of_codes_is_to_the_nearest_integer() {
        let mut rng = SplitMix(1);
        for _ in 0..100_000 {
            let x = (rng.next_u64() as f64 / u64::MAX as f64 * 254.0 - 127.0) as f32;
            assert_eq!(round_small(x), x.round_ties_even(), "{x}");
        }
        for x in [-127.0f32, -0.5, 0.5, 1.5, 2.5, 126.5, 127.0, 0.0] {
            assert_eq!(round_small(x), x.round_ties_even(), "{x}");
        }
    }
}
