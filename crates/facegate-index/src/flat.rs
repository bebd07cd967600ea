//! [`FlatIndex`]: per-tenant vectors in one contiguous block, searched by a full scan.
//!
//! # Layout
//! Each tenant's templates are rows: an f16 vector (`dim` values), a sign sketch (`dim / 64`
//! u64 words), a tag mask, an interned subject and a sample id, each in its own array so a
//! scan streams through memory in order. f16 halves the memory of f32 (1 KiB per 512-d
//! template) and changes a cosine similarity by less than 1e-3.
//!
//! # Search
//! Up to [`SearchTuning::exact_rows`] rows, every row is scored exactly. Above that, a search
//! runs in two stages: the Hamming distance of every row's sign sketch to the query's (64 bytes
//! a row, a few milliseconds over a million rows) picks the closest
//! [`SearchTuning::candidates`] rows, and only those are scored exactly. A sign sketch
//! preserves angles (SimHash), so a mate at similarity 0.4 or more sits far inside the
//! candidates; `facegate bench search` measures the recall against exact search.
//!
//! # Tags
//! Subjects carry tags; each tenant's tag names (at most 64, the NEC limit) map to bits, and
//! every row holds its subject's mask, so a filtered search skips rows with one AND in the
//! sketch scan and the filter never shrinks the candidates.
//!
//! Deletes swap the last row into the freed place, so they are visible to the next search.
//! Each tenant has its own lock, so a long scan of one tenant never delays another's writes.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use facegate_core::{Index, SubjectHit, Template};
use half::f16;
use parking_lot::RwLock;

use crate::kernels::{dot_f16, hamming_distances, prefetch, sketch_into, TagFilter};

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

/// Per-tenant template search; see the module documentation.
#[derive(Default)]
pub struct FlatIndex {
    tenants: RwLock<HashMap<String, Arc<RwLock<TenantIndex>>>>,
    tuning: SearchTuning,
}

impl FlatIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_tuning(tuning: SearchTuning) -> Self {
        Self { tuning, ..Self::default() }
    }

    /// Bytes of every tenant's rows in use (vectors, sketches, masks, subjects; not the id
    /// strings, nor the spare capacity of growing arrays).
    pub fn row_bytes(&self) -> usize {
        self.tenants.read().values().map(|t| t.read().row_bytes()).sum()
    }

    /// Exact search, every row scored whatever the tenant's size: the reference the two-stage
    /// search is measured against.
    pub fn search_exact(&self, tenant_id: &str, query: &[f32], limit: usize, tags: &[String]) -> Vec<SubjectHit> {
        self.search_filtered(tenant_id, tags, |tenant, filter| tenant.search_exact(query, limit, filter))
    }

    /// Runs `search` on the tenant with the tag filter `tags` makes; nothing when the tenant is
    /// unknown or none of the tags is held by anyone.
    fn search_filtered(
        &self,
        tenant_id: &str,
        tags: &[String],
        search: impl FnOnce(&TenantIndex, Option<u64>) -> Vec<SubjectHit>,
    ) -> Vec<SubjectHit> {
        let Some(tenant) = self.tenant(tenant_id) else { return Vec::new() };
        let tenant = tenant.read();
        match tenant.tag_mask(tags) {
            TagMask::All => search(&tenant, None),
            TagMask::Bits(bits) => search(&tenant, Some(bits)),
            TagMask::NoneKnown => Vec::new(),
        }
    }

    fn tenant(&self, tenant_id: &str) -> Option<Arc<RwLock<TenantIndex>>> {
        self.tenants.read().get(tenant_id).cloned()
    }

    fn tenant_or_insert(&self, tenant_id: &str) -> Arc<RwLock<TenantIndex>> {
        if let Some(t) = self.tenant(tenant_id) {
            return t;
        }
        self.tenants.write().entry(tenant_id.to_owned()).or_default().clone()
    }
}

impl Index for FlatIndex {
    fn clear(&self) {
        self.tenants.write().clear();
    }

    fn remove_tenant(&self, tenant_id: &str) {
        self.tenants.write().remove(tenant_id);
    }

    fn insert(&self, template: Template) {
        if template.embedding.is_empty() || !template.embedding.iter().all(|x| x.is_finite()) {
            tracing::warn!(sample = %template.sample_id, "ignoring an empty or non-finite template");
            return;
        }
        let tenant = self.tenant_or_insert(&template.tenant_id);
        let mut tenant = tenant.write();
        if let Err(reason) = tenant.insert(&template.subject_id, &template.sample_id, &template.embedding) {
            tracing::warn!(tenant = %template.tenant_id, sample = %template.sample_id, reason, "template not indexed");
        }
    }

    fn remove_subject(&self, tenant_id: &str, subject_id: &str) {
        if let Some(tenant) = self.tenant(tenant_id) {
            tenant.write().remove_subject(subject_id);
        }
    }

    fn search(&self, tenant_id: &str, query: &[f32], limit: usize) -> Vec<SubjectHit> {
        self.search_tagged(tenant_id, query, limit, &[])
    }

    fn search_tagged(&self, tenant_id: &str, query: &[f32], limit: usize, tags: &[String]) -> Vec<SubjectHit> {
        self.search_filtered(tenant_id, tags, |tenant, filter| {
            if tenant.len() <= self.tuning.exact_rows {
                tenant.search_exact(query, limit, filter)
            } else {
                tenant.search_two_stage(query, limit, filter, &self.tuning)
            }
        })
    }

    fn set_subject_tags(&self, tenant_id: &str, subject_id: &str, tags: &[String]) {
        let tenant = self.tenant_or_insert(tenant_id);
        tenant.write().set_subject_tags(subject_id, tags);
    }

    fn rename_tag(&self, tenant_id: &str, old_name: &str, new_name: &str) {
        if let Some(tenant) = self.tenant(tenant_id) {
            tenant.write().rename_tag(old_name, new_name);
        }
    }

    fn best_of_subject(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Option<SubjectHit> {
        self.tenant(tenant_id)?.read().best_of_subject(subject_id, query)
    }

    fn subject_samples(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Vec<SubjectHit> {
        self.tenant(tenant_id).map_or_else(Vec::new, |t| t.read().subject_samples(subject_id, query))
    }

    fn remove_sample(&self, tenant_id: &str, sample_id: &str) {
        if let Some(t) = self.tenant(tenant_id) {
            let mut t = t.write();
            if let Some(&row) = t.sample_rows.get(sample_id) {
                t.remove_row(row);
            }
        }
    }

    fn len(&self, tenant_id: &str) -> usize {
        self.tenant(tenant_id).map_or(0, |t| t.read().len())
    }
}

/// What a list of tag names filters to.
enum TagMask {
    /// No tags asked for: no filter.
    All,
    Bits(u64),
    /// Tags asked for, none of them held by any subject: nothing matches.
    NoneKnown,
}

#[derive(Default)]
struct TenantIndex {
    /// Length of every vector; set by the first insert into an empty tenant.
    dim: usize,
    /// Sketch words per row: `dim` bits rounded up to u64s.
    words: usize,
    /// `len() × dim` values, row after row.
    vectors: Vec<f16>,
    /// `len() × words` sign bits, row after row.
    sketches: Vec<u64>,
    /// Each row's subject's tag bits.
    row_tags: Vec<u64>,
    row_subject: Vec<u32>,
    row_sample: Vec<Arc<str>>,
    sample_rows: HashMap<Arc<str>, u32>,
    subject_ids: HashMap<Arc<str>, u32>,
    /// Indexed by interned subject id; `None` for a freed id awaiting reuse.
    subjects: Vec<Option<SubjectRows>>,
    free_subjects: Vec<u32>,
    /// Tag bits of subjects with at least one tag, rows or not: tags may be set before the
    /// first template arrives.
    subject_tags: HashMap<String, u64>,
    /// Tag name -> bit.
    tag_bits: HashMap<String, u32>,
}

struct SubjectRows {
    name: Arc<str>,
    rows: Vec<u32>,
}

impl TenantIndex {
    fn len(&self) -> usize {
        self.row_subject.len()
    }

    fn row_vector(&self, row: u32) -> &[f16] {
        let start = row as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    fn row_bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f16>()
            + self.sketches.len() * 8
            + self.row_tags.len() * 8
            + self.row_subject.len() * 4
            + self.row_sample.len() * std::mem::size_of::<Arc<str>>()
    }

    fn insert(&mut self, subject_id: &str, sample_id: &str, embedding: &[f32]) -> Result<(), &'static str> {
        if let Some(&row) = self.sample_rows.get(sample_id) {
            // Re-inserting a sample replaces it (it may even have moved subject).
            self.remove_row(row);
        }
        if self.len() == 0 {
            self.dim = embedding.len();
            self.words = embedding.len().div_ceil(64);
        } else if embedding.len() != self.dim {
            return Err("embedding length differs from the tenant's other templates");
        }
        let row = u32::try_from(self.len()).map_err(|_| "tenant holds too many templates")?;
        let subject = self.intern(subject_id);
        let sample: Arc<str> = Arc::from(sample_id);
        self.vectors.extend(embedding.iter().map(|&x| f16::from_f32(x)));
        let start = self.sketches.len();
        self.sketches.resize(start + self.words, 0);
        sketch_into(embedding, &mut self.sketches[start..]);
        self.row_tags.push(self.subject_tags.get(subject_id).copied().unwrap_or(0));
        self.row_subject.push(subject);
        self.row_sample.push(sample.clone());
        self.sample_rows.insert(sample, row);
        if let Some(Some(s)) = self.subjects.get_mut(subject as usize) {
            s.rows.push(row);
        }
        Ok(())
    }
    fn intern(&mut self, subject_id: &str) -> u32 {
        if let Some(&id) = self.subject_ids.get(subject_id) {
            return id;
        }
        let name: Arc<str> = Arc::from(subject_id);
        let slot = Some(SubjectRows { name: name.clone(), rows: Vec::new() });
        let id = match self.free_subjects.pop() {
            Some(id) => {
                self.subjects[id as usize] = slot;
                id
            }
            None => {
                // Rows are bounded by u32 (checked by the caller) and each live subject has a
                // row, so the number of subject ids is too.
                self.subjects.push(slot);
                (self.subjects.len() - 1) as u32
            }
        };
        self.subject_ids.insert(name, id);
        id
    }

    fn remove_subject(&mut self, subject_id: &str) {
        self.subject_tags.remove(subject_id);
        let Some(&id) = self.subject_ids.get(subject_id) else { return };
        // Each removal updates this subject's row list (and frees the id after the last row).
        while let Some(&row) = self.subjects.get(id as usize).and_then(|s| s.as_ref()).and_then(|s| s.rows.last()) {
            self.remove_row(row);
        }
        // Give memory back after a large purge, keeping headroom for growth.
        if self.vectors.capacity() > 4 * self.vectors.len().max(1 << 16) {
            self.vectors.shrink_to(self.vectors.len() * 2);
            self.sketches.shrink_to(self.sketches.len() * 2);
        }
    }

    /// Removes one row by moving the last row into its place.
    fn remove_row(&mut self, row: u32) {
        let r = row as usize;
        let last = self.len() - 1;
        let subject = self.row_subject[r];
        if let Some(Some(s)) = self.subjects.get_mut(subject as usize) {
            if let Some(pos) = s.rows.iter().position(|&x| x == row) {
                s.rows.swap_remove(pos);
            }
            if s.rows.is_empty() {
                self.subject_ids.remove(&s.name);
                self.subjects[subject as usize] = None;
                self.free_subjects.push(subject);
            }
        }
        self.sample_rows.remove(&self.row_sample[r]);
        if r != last {
            let (dim, words) = (self.dim, self.words);
            self.vectors.copy_within(last * dim..(last + 1) * dim, r * dim);
            self.sketches.copy_within(last * words..(last + 1) * words, r * words);
            let moved_subject = self.row_subject[last];
            if let Some(Some(s)) = self.subjects.get_mut(moved_subject as usize) {
                if let Some(pos) = s.rows.iter().position(|&x| x as usize == last) {
                    s.rows[pos] = row;
                }
            }
            if let Some(slot) = self.sample_rows.get_mut(&self.row_sample[last]) {
                *slot = row;
            }
        }
        self.vectors.truncate(last * self.dim);
        self.sketches.truncate(last * self.words);
        self.row_tags.swap_remove(r);
        self.row_subject.swap_remove(r);
        self.row_sample.swap_remove(r);
    }

    fn set_subject_tags(&mut self, subject_id: &str, tags: &[String]) {
        let mut mask = 0u64;
        for tag in tags {
            match self.tag_bit(tag) {
                Some(bit) => mask |= 1 << bit,
                None => tracing::warn!(tag, "more than 64 tags in one tenant; this one is not indexed"),
            }
        }
        if mask == 0 {
            self.subject_tags.remove(subject_id);
        } else {
            self.subject_tags.insert(subject_id.to_owned(), mask);
        }
        if let Some(s) = self.subject_ids.get(subject_id).and_then(|&id| self.subjects.get(id as usize)) {
            for &row in s.as_ref().map_or(&[][..], |s| &s.rows[..]) {
                if let Some(t) = self.row_tags.get_mut(row as usize) {
                    *t = mask;
                }
            }
        }
    }

    fn rename_tag(&mut self, old_name: &str, new_name: &str) {
        let Some(old_bit) = self.tag_bits.remove(old_name) else { return };
        let Some(&new_bit) = self.tag_bits.get(new_name) else {
            self.tag_bits.insert(new_name.to_owned(), old_bit);
            return;
        };
        // The new name has a bit already: on a node following a shared gallery, a subject's
        // labels can be read from the store after the rename committed and before the rename
        // itself is applied here. Taking over the old bit would strand those subjects on a bit no
        // name maps to; the old bit's subjects move to the new one instead, as their labels did.
        let (from, to) = (1u64 << old_bit, 1u64 << new_bit);
        for mask in self.subject_tags.values_mut().chain(self.row_tags.iter_mut()) {
            if *mask & from != 0 {
                *mask = (*mask & !from) | to;
            }
        }
    }

    /// The bit of a tag name, given one now if it has none.
    fn tag_bit(&mut self, tag: &str) -> Option<u32> {
        if let Some(&bit) = self.tag_bits.get(tag) {
            return Some(bit);
        }
        let used = self.tag_bits.values().fold(0u64, |m, &b| m | 1 << b);
        let bit = (!used).trailing_zeros();
        (bit < 64).then(|| {
            self.tag_bits.insert(tag.to_owned(), bit);
            bit
        })
    }

    fn tag_mask(&self, tags: &[String]) -> TagMask {
        if tags.is_empty() {
            return TagMask::All;
        }
        let bits = tags.iter().filter_map(|t| self.tag_bits.get(t)).fold(0u64, |m, &b| m | 1 << b);
        if bits == 0 {
            TagMask::NoneKnown
        } else {
            TagMask::Bits(bits)
        }
    }

    /// Every row (that passes the filter) scored exactly.
    fn search_exact(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<SubjectHit> {
        if limit == 0 || self.len() == 0 || query.len() != self.dim {
            return Vec::new();
        }
        // Best row per interned subject; a plain array indexed by id is cheaper than a map.
        let mut best: Vec<(f32, u32)> = vec![(f32::NEG_INFINITY, u32::MAX); self.subjects.len()];
        let rows = self.vectors.chunks_exact(self.dim).zip(&self.row_subject).zip(&self.row_tags).enumerate();
        for (row, ((vector, &subject), &tags)) in rows {
            if filter.is_some_and(|f| f & tags == 0) {
                continue;
            }
            let score = dot_f16(vector, query);
            if let Some(b) = best.get_mut(subject as usize) {
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
        top.into_iter().map(|s| self.hit(s)).collect()
    }

    /// Sketch distances pick `candidates` rows; those are scored exactly.
    fn search_two_stage(
        &self,
        query: &[f32],
        limit: usize,
        filter: Option<u64>,
        tuning: &SearchTuning,
    ) -> Vec<SubjectHit> {
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
    /// row of each subject, best first.
    fn rerank_closest(
        &self,
        query: &[f32],
        limit: usize,
        candidates: usize,
        distances: &[u16],
        histogram: &[u32],
    ) -> Vec<SubjectHit> {
        let max_distance = self.words * 64;
        let mut cutoff = 0usize;
        let mut below = 0usize;
        for (d, &count) in histogram.iter().enumerate() {
            cutoff = d;
            let count = count as usize;
            if below + count >= candidates {
                break;
            }
            below += count;
        }
        // Rows under the cutoff all pass; rows at it fill what is left of the budget.
        let mut at_cutoff_left = candidates.saturating_sub(below);
        let mut rows: Vec<u32> = Vec::with_capacity(candidates.min(self.len()));
        for (row, &d) in distances.iter().enumerate() {
            let d = usize::from(d);
            if d > cutoff || d > max_distance {
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
            if seen.insert(self.row_subject[s.row as usize]) {
                hits.push(self.hit(s));
                if hits.len() == limit {
                    break;
                }
            }
        }
        hits
    }

    /// Every row of one subject scored against `query`, NaNs dropped; empty for an unknown
    /// subject or a query of the wrong length.
    fn scored_subject_rows(&self, subject_id: &str, query: &[f32]) -> Vec<Scored> {
        if query.len() != self.dim {
            return Vec::new();
        }
        let Some(rows) = self
            .subject_ids
            .get(subject_id)
            .and_then(|&id| self.subjects.get(id as usize))
            .and_then(|s| s.as_ref())
            .map(|s| &s.rows)
        else {
            return Vec::new();
        };
        rows.iter()
            .filter_map(|&row| {
                let r = row as usize;
                let vector = self.vectors.get(r * self.dim..(r + 1) * self.dim)?;
                Some(Scored { score: dot_f16(vector, query), row })
            })
            .filter(|s| !s.score.is_nan())
            .collect()
    }

    fn best_of_subject(&self, subject_id: &str, query: &[f32]) -> Option<SubjectHit> {
        let best = self.scored_subject_rows(subject_id, query).into_iter().max()?;
        Some(self.hit(best))
    }

    fn subject_samples(&self, subject_id: &str, query: &[f32]) -> Vec<SubjectHit> {
        let mut scored = self.scored_subject_rows(subject_id, query);
        scored.sort_by(|a, b| b.cmp(a));
        scored.into_iter().map(|s| self.hit(s)).collect()
    }

    fn hit(&self, s: Scored) -> SubjectHit {
        let r = s.row as usize;
        let subject_name = self
            .subjects
            .get(self.row_subject[r] as usize)
            .and_then(|s| s.as_ref())
            .map_or_else(String::new, |s| s.name.to_string());
        SubjectHit { subject_id: subject_name, sample_id: self.row_sample[r].to_string(), similarity: s.score }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    fn template(subject: &str, sample: &str, embedding: Vec<f32>) -> Template {
        Template { tenant_id: "t".into(), subject_id: subject.into(), sample_id: sample.into(), embedding }
    }

    #[test]
    fn reinserting_a_sample_replaces_it() {
        let index = FlatIndex::new();
        index.insert(template("s1", "a", unit(&[1.0, 0.0])));
        index.insert(template("s1", "a", unit(&[0.0, 1.0])));
        assert_eq!(index.len("t"), 1);
        let hit = index.best_of_subject("t", "s1", &[0.0, 1.0]).expect("hit");
        assert!((hit.similarity - 1.0).abs() < 1e-6);
        // Moving the sample to another subject leaves the first with nothing.
        index.insert(template("s2", "a", unit(&[0.0, 1.0])));
        assert_eq!(index.len("t"), 1);
        assert!(index.best_of_subject("t", "s1", &[0.0, 1.0]).is_none());
        assert_eq!(index.search("t", &[0.0, 1.0], 5)[0].subject_id, "s2");
    }

    #[test]
    fn freed_subject_ids_are_reused_and_bookkeeping_stays_consistent() {
        let index = FlatIndex::new();
        for round in 0..3 {
            for s in 0..10 {
                for k in 0..3 {
                    let v = unit(&[s as f32 + 1.0, k as f32, round as f32]);
                    index.insert(template(&format!("s{s}"), &format!("r{round}s{s}k{k}"), v));
                }
            }
            for s in (0..10).step_by(2) {
                index.remove_subject("t", &format!("s{s}"));
            }
        }
        let tenant = index.tenant("t").expect("tenant");
        let t = tenant.read();
        assert_eq!(t.len(), 5 * 3 * 3);
        assert!(t.subjects.len() <= 10, "ids were not reused: {}", t.subjects.len());
        for (row, (&subject, sample)) in t.row_subject.iter().zip(&t.row_sample).enumerate() {
            assert_eq!(t.sample_rows[sample], row as u32);
            let rows = &t.subjects[subject as usize].as_ref().expect("live subject").rows;
            assert!(rows.contains(&(row as u32)));
        }
        let live_rows: usize = t.subjects.iter().flatten().map(|s| s.rows.len()).sum();
        assert_eq!(live_rows, t.len());
        assert_eq!(t.vectors.len(), t.len() * t.dim);
    }

    #[test]
    fn nan_scores_never_win() {
        let index = FlatIndex::new();
        index.insert(template("nan", "a", vec![f32::NAN, 0.0]));
        index.insert(template("ok", "b", vec![0.0, 1.0]));
        let hits = index.search("t", &[0.0, 1.0], 5);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].subject_id, "ok");
        assert!(index.best_of_subject("t", "nan", &[0.0, 1.0]).is_none());
    }
}
