//! [`FlatIndex`]: the index shell. Per tenant it owns subjects (interned to small ids), which
//! sample is which row slot, and tag names with their bits; the vectors and the search itself
//! are a [`VectorSearch`] behind it (`crate::vectors`), today a [`FlatScan`]. The id bookkeeping
//! (subjects, slots, each subject's tag bits) is a compact `crate::ids::TenantIds`.
//!
//! # Tags
//! Subjects carry tags; each tenant's tag names (at most 64, the NEC limit) map to bits, and
//! every row carries its subject's mask into the vector search, so a filter is applied inside
//! the search and never shrinks its results.
//!
//! Writes are visible to the next search. Each tenant has its own lock, so a long scan of one
//! tenant never delays another's writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use facegate_core::{Index, SubjectHit, Template};
use parking_lot::{Mutex, RwLock};

use crate::config::IndexConfig;
use crate::flat_scan::SearchTuning;
use crate::ids::TenantIds;
use crate::rebuild::{self, Change, ChangeLog, Rebuildable};
use crate::vectors::{Partition, ScoredRow, VectorSearch};

/// Per-tenant template search; see the module documentation.
#[derive(Default)]
pub struct FlatIndex {
    tenants: RwLock<HashMap<String, Arc<RwLock<TenantIndex>>>>,
    config: IndexConfig,
    /// Rebuilds running in the background (`crate::rebuild`), and ones finished but not joined.
    rebuilds: Mutex<Vec<JoinHandle<()>>>,
    /// While the whole gallery loads, no rebuild starts ([`Index::loading`]).
    loading: std::sync::atomic::AtomicBool,
    /// Held by the rebuild that runs: one at a time, since each trains on every core and holds
    /// a training sample of up to 512 MB; several tenants crossing a threshold at once (a
    /// start-up loading them all) take turns, their change logs growing meanwhile.
    rebuild_turn: Arc<Mutex<()>>,
}

impl FlatIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(config: IndexConfig) -> Self {
        Self { config, ..Self::default() }
    }

    /// The default configuration with the flat scan tuned as `tuning`.
    pub fn with_tuning(tuning: SearchTuning) -> Self {
        Self::with_config(IndexConfig { flat: tuning, ..IndexConfig::default() })
    }

    /// Waits until no rebuild runs: a benchmark times the index it will search, and a test the
    /// search it rebuilt.
    pub fn wait_for_rebuilds(&self) {
        loop {
            let running: Vec<JoinHandle<()>> = std::mem::take(&mut *self.rebuilds.lock());
            if running.is_empty() {
                return;
            }
            for handle in running {
                if handle.join().is_err() {
                    tracing::error!("an index rebuild panicked; the tenant keeps its index as it was");
                }
            }
        }
    }

    /// How a tenant's vectors are partitioned; `None` for an unknown tenant or the flat scan.
    pub fn partition(&self, tenant_id: &str) -> Option<Partition> {
        self.tenant(tenant_id)?.read().vectors.partition()
    }

    /// Starts a rebuild of `tenant` (write-locked by the caller as `locked`) when its size calls
    /// for another search and none runs.
    fn rebuild_if_due(&self, tenant: &Arc<RwLock<TenantIndex>>, locked: &mut TenantIndex) {
        if locked.changes.is_some() || self.loading.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Some(target) = locked.rebuild_wanted(&self.config) else { return };
        locked.changes = Some(ChangeLog::new());
        let (tenant, config, turn) = (Arc::clone(tenant), self.config, Arc::clone(&self.rebuild_turn));
        let spawned = std::thread::Builder::new().name("index-rebuild".into()).spawn(move || {
            let _turn = turn.lock();
            let mut target = target;
            loop {
                rebuild::run(&tenant, &config, target);
                // Writes made while it ran may call for another (a tenant that doubled while
                // its lists were learnt): the tenant may see no further write to start it.
                let mut locked = tenant.write();
                match locked.rebuild_wanted(&config) {
                    Some(next) if locked.changes.is_none() => {
                        locked.changes = Some(ChangeLog::new());
                        target = next;
                    }
                    _ => return,
                }
            }
        });
        let mut rebuilds = self.rebuilds.lock();
        rebuilds.retain(|h| !h.is_finished());
        match spawned {
            Ok(handle) => rebuilds.push(handle),
            Err(error) => {
                tracing::error!(%error, "cannot start an index rebuild; the tenant keeps its index as it is");
                locked.changes = None;
            }
        }
    }

    /// Bytes of every tenant's rows in use: vectors, sketches, masks, and the id bookkeeping
    /// (slots, subjects, id bytes, their hash tables); not the spare capacity of growing arrays.
    pub fn row_bytes(&self) -> usize {
        self.tenants.read().values().map(|t| t.read().row_bytes()).sum()
    }

    /// Exact search, every row scored whatever the tenant's size: the reference the two-stage
    /// search is measured against.
    pub fn search_exact(&self, tenant_id: &str, query: &[f32], limit: usize, tags: &[String]) -> Vec<SubjectHit> {
        self.search_filtered(tenant_id, tags, |tenant, filter| tenant.vectors.search_exact(query, limit, filter))
    }

    /// Runs `search` on the tenant's vectors with the tag filter `tags` makes; nothing when the
    /// tenant is unknown or none of the tags is held by anyone.
    fn search_filtered(
        &self,
        tenant_id: &str,
        tags: &[String],
        search: impl FnOnce(&TenantIndex, Option<u64>) -> Vec<ScoredRow>,
    ) -> Vec<SubjectHit> {
        let Some(tenant) = self.tenant(tenant_id) else { return Vec::new() };
        let tenant = tenant.read();
        let rows = match tenant.tag_mask(tags) {
            TagMask::All => search(&tenant, None),
            TagMask::Bits(bits) => search(&tenant, Some(bits)),
            TagMask::NoneKnown => Vec::new(),
        };
        rows.into_iter().filter_map(|row| tenant.hit(row)).collect()
    }

    /// Every tenant the index holds.
    pub fn tenant_ids(&self) -> Vec<String> {
        self.tenants.read().keys().cloned().collect()
    }

    /// A number that changes whenever the tenant's index does; `None` for an unknown tenant.
    pub fn version(&self, tenant_id: &str) -> Option<u64> {
        Some(self.tenant(tenant_id)?.read().version)
    }

    /// Puts `index` in place of whatever the tenant held, and starts whatever rebuild its size
    /// calls for.
    pub(crate) fn install_tenant(&self, tenant_id: &str, index: TenantIndex) {
        let tenant = Arc::new(RwLock::new(index));
        self.tenants.write().insert(tenant_id.to_owned(), Arc::clone(&tenant));
        let mut locked = tenant.write();
        self.rebuild_if_due(&tenant, &mut locked);
    }

    pub(crate) fn config(&self) -> &IndexConfig {
        &self.config
    }

    pub(crate) fn tenant(&self, tenant_id: &str) -> Option<Arc<RwLock<TenantIndex>>> {
        self.tenants.read().get(tenant_id).cloned()
    }

    fn tenant_or_insert(&self, tenant_id: &str) -> Arc<RwLock<TenantIndex>> {
        if let Some(t) = self.tenant(tenant_id) {
            return t;
        }
        let config = self.config;
        self.tenants
            .write()
            .entry(tenant_id.to_owned())
            .or_insert_with(|| Arc::new(RwLock::new(TenantIndex::new(rebuild::initial(&config)))))
            .clone()
    }
}

impl Index for FlatIndex {
    fn loading(&self, loading: bool) {
        self.loading.store(loading, std::sync::atomic::Ordering::Release);
        if !loading {
            // Whatever the load made due starts now.
            let tenants: Vec<_> = self.tenants.read().values().cloned().collect();
            for tenant in tenants {
                let mut locked = tenant.write();
                self.rebuild_if_due(&tenant, &mut locked);
            }
        }
    }

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
        let mut locked = tenant.write();
        if let Err(reason) = locked.insert(&template.subject_id, &template.sample_id, &template.embedding) {
            tracing::warn!(tenant = %template.tenant_id, sample = %template.sample_id, reason, "template not indexed");
        }
        self.rebuild_if_due(&tenant, &mut locked);
    }

    fn remove_subject(&self, tenant_id: &str, subject_id: &str) {
        if let Some(tenant) = self.tenant(tenant_id) {
            let mut locked = tenant.write();
            locked.remove_subject(subject_id);
            self.rebuild_if_due(&tenant, &mut locked);
        }
    }

    fn search(&self, tenant_id: &str, query: &[f32], limit: usize) -> Vec<SubjectHit> {
        self.search_tagged(tenant_id, query, limit, &[])
    }

    fn search_tagged(&self, tenant_id: &str, query: &[f32], limit: usize, tags: &[String]) -> Vec<SubjectHit> {
        self.search_filtered(tenant_id, tags, |tenant, filter| tenant.vectors.search(query, limit, filter))
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
        let tenant = self.tenant(tenant_id)?;
        let tenant = tenant.read();
        // Ties go to the slot listed first, as `subject_samples` ranks them.
        let best =
            tenant
                .scored_subject_slots(subject_id, query)
                .into_iter()
                .reduce(|a, b| if b.score > a.score { b } else { a })?;
        tenant.hit(best)
    }

    fn subject_samples(&self, tenant_id: &str, subject_id: &str, query: &[f32]) -> Vec<SubjectHit> {
        let Some(tenant) = self.tenant(tenant_id) else { return Vec::new() };
        let tenant = tenant.read();
        let mut scored = tenant.scored_subject_slots(subject_id, query);
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        scored.into_iter().filter_map(|s| tenant.hit(s)).collect()
    }

    fn remove_sample(&self, tenant_id: &str, sample_id: &str) {
        if let Some(tenant) = self.tenant(tenant_id) {
            let mut locked = tenant.write();
            if let Some(slot) = locked.ids.slot(sample_id) {
                locked.remove_slot(slot);
            }
            self.rebuild_if_due(&tenant, &mut locked);
        }
    }

    fn len(&self, tenant_id: &str) -> usize {
        self.tenant(tenant_id).map_or(0, |t| t.read().vectors.len())
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

/// One tenant: the shell's bookkeeping around its vector search.
pub(crate) struct TenantIndex {
    pub(crate) vectors: Box<dyn VectorSearch>,
    /// While a rebuild runs, every change to `vectors` (`crate::rebuild`).
    changes: Option<ChangeLog>,
    /// Subjects and their numbers and tag bits, samples and their slots.
    pub(crate) ids: TenantIds,
    /// Tag name -> bit.
    pub(crate) tag_bits: HashMap<String, u32>,
    /// Moves at every change, so that a snapshot knows whether it is behind (`crate::snapshot`).
    pub(crate) version: u64,
    /// When a due rebuild was last put off for want of memory ([`rebuild::memory_short`]).
    rebuild_deferred: Option<std::time::Instant>,
}

impl TenantIndex {
    pub(crate) fn new(vectors: Box<dyn VectorSearch>) -> Self {
        Self {
            vectors,
            changes: None,
            ids: TenantIds::default(),
            tag_bits: HashMap::new(),
            version: 0,
            rebuild_deferred: None,
        }
    }

    fn row_bytes(&self) -> usize {
        self.vectors.row_bytes() + self.ids.row_bytes()
    }

    /// What the vectors should be rebuilt into, when they should and memory allows; a rebuild
    /// put off for memory is looked at again after [`rebuild::DEFERRED_RECHECK`].
    fn rebuild_wanted(&mut self, config: &IndexConfig) -> Option<rebuild::Target> {
        let target = rebuild::wanted(config, self.vectors.as_ref())?;
        if self.rebuild_deferred.is_some_and(|at| at.elapsed() < rebuild::DEFERRED_RECHECK) {
            return None;
        }
        if let Some(short) = rebuild::memory_short(self.vectors.as_ref()) {
            tracing::warn!(
                rows = self.vectors.len(),
                needs_mb = short.needed >> 20,
                available_mb = short.available >> 20,
                "index rebuild deferred: a second copy of the tenant's vectors would not fit in memory; \
                 its search goes on as it is"
            );
            self.rebuild_deferred = Some(std::time::Instant::now());
            return None;
        }
        self.rebuild_deferred = None;
        Some(target)
    }

    /// Room for `rows` more rows: a snapshot's, loaded at once.
    pub(crate) fn reserve(&mut self, rows: usize) {
        self.ids.reserve(rows);
        self.vectors.reserve(rows);
    }

    fn insert(&mut self, subject_id: &str, sample_id: &str, embedding: &[f32]) -> Result<(), &'static str> {
        self.insert_placed(subject_id, sample_id, embedding, None)
    }

    /// As `insert`, into the list `placement` of a partitioned search when known (a snapshot's).
    pub(crate) fn insert_placed(
        &mut self,
        subject_id: &str,
        sample_id: &str,
        embedding: &[f32],
        placement: Option<u32>,
    ) -> Result<(), &'static str> {
        self.version += 1;
        if let Some(slot) = self.ids.slot(sample_id) {
            // Re-inserting a sample replaces it (it may even have moved subject).
            self.remove_slot(slot);
        }
        if !self.vectors.is_empty() && embedding.len() != self.vectors.dim() {
            return Err("embedding length differs from the tenant's other templates");
        }
        let (slot, subject) = self.ids.add_absent(subject_id, sample_id)?;
        let tags = self.ids.tags(subject);
        if let Err(reason) = self.vectors.add_placed(slot, subject, tags, embedding, placement) {
            // Handing the slot back puts the slot and subject number where they were: the next
            // `add` gets the same ones.
            self.ids.remove(slot);
            return Err(reason);
        }
        self.log(Change::Slot(slot));
        Ok(())
    }

    fn remove_subject(&mut self, subject_id: &str) {
        // Without tags, the subject's number is released with its last slot.
        let Ok(Some(id)) = self.ids.set_tags(subject_id, 0) else { return };
        // Each removal updates this subject's slot list (and frees the id after the last one).
        while let Some(slot) = self.ids.last_slot(id) {
            self.remove_slot(slot);
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        if !self.ids.remove(slot) {
            return;
        }
        self.version += 1;
        self.vectors.remove(slot);
        self.log(Change::Slot(slot));
    }

    fn set_subject_tags(&mut self, subject_id: &str, tags: &[String]) {
        self.version += 1;
        let mut mask = 0u64;
        for tag in tags {
            match self.tag_bit(tag) {
                Some(bit) => mask |= 1 << bit,
                None => tracing::warn!(tag, "more than 64 tags in one tenant; this one is not indexed"),
            }
        }
        let id = match self.ids.set_tags(subject_id, mask) {
            Ok(id) => id,
            Err(reason) => {
                tracing::warn!(subject = subject_id, reason, "subject tags not indexed");
                return;
            }
        };
        if let Some(id) = id {
            for slot in self.ids.slots(id) {
                self.vectors.set_tags(slot, mask);
                if let Some(log) = self.changes.as_mut() {
                    log.push(Change::Slot(slot));
                }
            }
        }
    }

    fn rename_tag(&mut self, old_name: &str, new_name: &str) {
        let Some(old_bit) = self.tag_bits.remove(old_name) else { return };
        self.version += 1;
        let Some(&new_bit) = self.tag_bits.get(new_name) else {
            self.tag_bits.insert(new_name.to_owned(), old_bit);
            return;
        };
        // The new name has a bit already: on a node following a shared gallery, a subject's
        // labels can be read from the store after the rename committed and before the rename
        // itself is applied here. Taking over the old bit would strand those subjects on a bit no
        // name maps to; the old bit's subjects move to the new one instead, as their labels did.
        let (from, to) = (1u64 << old_bit, 1u64 << new_bit);
        self.ids.move_tag_bits(from, to);
        self.vectors.move_tag_bits(from, to);
        self.log(Change::MoveTagBits { from, to });
    }

    fn log(&mut self, change: Change) {
        if let Some(log) = self.changes.as_mut() {
            log.push(change);
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

    /// Every slot of one subject scored against `query`, NaNs dropped; empty for an unknown
    /// subject or a query of the wrong length.
    fn scored_subject_slots(&self, subject_id: &str, query: &[f32]) -> Vec<ScoredRow> {
        let Some(id) = self.ids.subject(subject_id) else { return Vec::new() };
        let slots = self.ids.slots(id);
        slots.iter().filter_map(|&slot| Some(ScoredRow { slot, score: self.vectors.score(slot, query)? })).collect()
    }

    fn hit(&self, row: ScoredRow) -> Option<SubjectHit> {
        let (subject_id, sample_id) = self.ids.names(row.slot)?;
        Some(SubjectHit { subject_id, sample_id, similarity: row.score })
    }
}

impl Rebuildable for TenantIndex {
    fn vectors(&self) -> &dyn VectorSearch {
        self.vectors.as_ref()
    }

    fn take_changes(&mut self) -> ChangeLog {
        self.changes.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn install(&mut self, vectors: Box<dyn VectorSearch>) {
        self.version += 1;
        self.vectors = vectors;
        self.changes = None;
    }

    fn abandon(&mut self) {
        self.changes = None;
    }
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
        assert_eq!(t.vectors.len(), 5 * 3 * 3);
        assert!(t.ids.subject_bound() <= 10, "ids were not reused: {}", t.ids.subject_bound());
        assert!(t.ids.slot_bound() <= 10 * 3 * 2, "slots were not reused: {}", t.ids.slot_bound());
        let live = t.ids.assert_consistent();
        for &slot in &live {
            assert!(t.vectors.score(slot, &unit(&[1.0, 0.0, 0.0])).is_some(), "slot {slot} has a row");
        }
        assert_eq!(live.len(), t.vectors.len());
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
