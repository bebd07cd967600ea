//! [`FlatIndex`]: exact cosine search over contiguous per-tenant vectors.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use facegate_core::{Index, SubjectHit, Template};
use parking_lot::RwLock;

/// Exact search over every template of a tenant.
///
/// Each tenant's templates sit in one `Vec<f32>` of `rows × dim`, so a search streams through
/// memory in order; subject and sample ids sit in parallel arrays, subjects interned to `u32`.
/// Each tenant has its own lock, so a long scan of one tenant never delays another's writes.
#[derive(Default)]
pub struct FlatIndex {
    tenants: RwLock<HashMap<String, Arc<RwLock<TenantIndex>>>>,
}

impl FlatIndex {
    pub fn new() -> Self {
        Self::default()
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
    fn insert(&self, template: Template) {
        if template.embedding.is_empty() {
            tracing::warn!(sample = %template.sample_id, "ignoring an empty template");
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
        match self.tenant(tenant_id) {
            Some(tenant) => tenant.read().search(query, limit),
            None => Vec::new(),
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

#[derive(Default)]
struct TenantIndex {
    /// Length of every vector; set by the first insert into an empty tenant.
    dim: usize,
    /// `len() × dim` floats, row after row.
    vectors: Vec<f32>,
    row_subject: Vec<u32>,
    row_sample: Vec<Arc<str>>,
    sample_rows: HashMap<Arc<str>, u32>,
    subject_ids: HashMap<Arc<str>, u32>,
    /// Indexed by interned subject id; `None` for a freed id awaiting reuse.
    subjects: Vec<Option<SubjectRows>>,
    free_subjects: Vec<u32>,
}

struct SubjectRows {
    name: Arc<str>,
    rows: Vec<u32>,
}

impl TenantIndex {
    fn len(&self) -> usize {
        self.row_subject.len()
    }

    fn insert(&mut self, subject_id: &str, sample_id: &str, embedding: &[f32]) -> Result<(), &'static str> {
        if let Some(&row) = self.sample_rows.get(sample_id) {
            // Re-inserting a sample replaces it (it may even have moved subject).
            self.remove_row(row);
        }
        if self.len() == 0 {
            self.dim = embedding.len();
        } else if embedding.len() != self.dim {
            return Err("embedding length differs from the tenant's other templates");
        }
        let row = u32::try_from(self.len()).map_err(|_| "tenant holds too many templates")?;
        let subject = self.intern(subject_id);
        let sample: Arc<str> = Arc::from(sample_id);
        self.vectors.extend_from_slice(embedding);
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
        let Some(&id) = self.subject_ids.get(subject_id) else { return };
        // Each removal updates this subject's row list (and frees the id after the last row).
        while let Some(&row) = self.subjects.get(id as usize).and_then(|s| s.as_ref()).and_then(|s| s.rows.last()) {
            self.remove_row(row);
        }
        // Give memory back after a large purge, keeping headroom for growth.
        if self.vectors.capacity() > 4 * self.vectors.len().max(1 << 16) {
            self.vectors.shrink_to(self.vectors.len() * 2);
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
            let dim = self.dim;
            self.vectors.copy_within(last * dim..(last + 1) * dim, r * dim);
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
        self.row_subject.swap_remove(r);
        self.row_sample.swap_remove(r);
    }

    fn search(&self, query: &[f32], limit: usize) -> Vec<SubjectHit> {
        if limit == 0 || self.len() == 0 || query.len() != self.dim {
            return Vec::new();
        }
        // Best row per interned subject; a plain array indexed by id is cheaper than a map.
        let mut best: Vec<(f32, u32)> = vec![(f32::NEG_INFINITY, u32::MAX); self.subjects.len()];
        for ((row, vector), &subject) in self.vectors.chunks_exact(self.dim).enumerate().zip(&self.row_subject) {
            let score = dot(vector, query);
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
                Some(Scored { score: dot(vector, query), row })
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

/// Accumulators kept in flight. Float addition is not associative, so the compiler will not
/// split one running sum across SIMD lanes by itself; 16 independent sums give it two AVX (or
/// four SSE) registers of lanes plus enough independent chains to hide the add latency.
const LANES: usize = 16;

/// Dot product of the common prefix of `a` and `b` (cosine similarity for unit vectors).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    // Pairwise reduction of the lanes, which also vectorises.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

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
    fn dot_matches_the_naive_sum_for_every_length() {
        for n in 0..80 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[1.0]), 1.0);
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
