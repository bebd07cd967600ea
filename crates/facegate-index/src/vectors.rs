//! The port between the index shell ([`crate::FlatIndex`]) and one tenant's vector search.
//!
//! The shell owns what every kind of search shares: tenants, subject ids and their interning,
//! which sample is which row, tag names and their bits. A [`VectorSearch`] holds only vectors
//! and what a search must see beside each one: the row's tag mask, so that a tag filter is
//! applied inside the search and never shrinks its results, and the row's group (the shell's
//! interned subject), so that a search can return the best row of each subject rather than
//! several rows of one. [`crate::FlatScan`] is the implementation today.

/// A row the shell knows by its slot, with its similarity to a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredRow {
    pub slot: u32,
    pub score: f32,
}

/// A copy of one row, for building another search from this one.
#[derive(Debug, Clone, PartialEq)]
pub struct RowCopy {
    pub group: u32,
    pub tags: u64,
    pub vector: Vec<f32>,
    /// Its list in a partitioned search, for [`VectorSearch::add_placed`] into one that shares
    /// the partition (a snapshot's); `None` in a flat one.
    pub placement: Option<u32>,
}

/// What a partitioned search learnt from its rows, which a snapshot keeps so that a restored
/// search need not learn it again.
#[derive(Debug, Clone)]
pub struct Learnt {
    pub quantizer: std::sync::Arc<crate::quantizer::Quantizer>,
    pub trained_rows: usize,
}

/// How a partitioned search is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub lists: usize,
    /// Rows it held when its lists were learnt; 0 before.
    pub trained_rows: usize,
    /// Rows of the longest list since the lists were learnt, at least.
    pub largest_list: usize,
}

/// One tenant's vectors. Rows are named by slots the shell hands out: a slot names one row from
/// `add` until `remove`, and may be handed out again after. Every vector of one tenant has the
/// same length, set by the first `add` into an empty search.
pub trait VectorSearch: Send + Sync {
    /// The length of every vector; 0 while empty.
    fn dim(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds the row `slot` (not in use) of subject `group` with tag mask `tags`. Refused when
    /// `embedding`'s length differs from the others', or the search holds all it can.
    fn add(&mut self, slot: u32, group: u32, tags: u64, embedding: &[f32]) -> Result<(), &'static str>;
    /// Room for `rows` more rows, to load a known number without growing step by step.
    fn reserve(&mut self, rows: usize) {
        let _ = rows;
    }
    /// Forgets the row `slot`; nothing when there is none.
    fn remove(&mut self, slot: u32);
    fn set_tags(&mut self, slot: u32, tags: u64);
    /// Every row holding a bit of `from` holds `to` instead.
    fn move_tag_bits(&mut self, from: u64, to: u64);
    /// The similarity of row `slot` to `query`; `None` for no such row, a query of another
    /// length, or a NaN.
    fn score(&self, slot: u32, query: &[f32]) -> Option<f32>;
    /// The best row of each of the best `limit` groups among the rows whose tags meet `filter`
    /// (any bit in common; every row when `None`), best first, ties in a fixed order. An
    /// implementation may look at fewer than all rows; `search_exact` may not.
    fn search(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow>;
    /// As `search`, every row scored: the reference an approximate search is measured against.
    fn search_exact(&self, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<ScoredRow>;
    /// Bytes of the rows in use, not counting spare capacity.
    fn row_bytes(&self) -> usize;
    /// Learns whatever the search learns from its rows (a partition), in place; nothing for a
    /// search that learns nothing.
    fn train(&mut self) {}
    /// One past the largest slot that may be in use.
    fn slot_bound(&self) -> u32;
    /// A copy of row `slot`, its vector as stored (rounded); `None` for no such row.
    fn row(&self, slot: u32) -> Option<RowCopy>;
    /// How the search is partitioned; `None` for one that scans every row.
    fn partition(&self) -> Option<Partition> {
        None
    }
    /// The partition it learnt, to rebuild the same search from a snapshot; `None` for one that
    /// learns nothing.
    fn learnt(&self) -> Option<Learnt> {
        None
    }
    /// Where a row of `embedding` would go (its list), worked out without changing anything, so
    /// that many rows can be placed at once on several threads; `None` where there is nothing
    /// to work out.
    fn placement(&self, embedding: &[f32]) -> Option<u32> {
        let _ = embedding;
        None
    }
    /// As `add_placed`, for a row written since the search's partition was learnt (a rebuild
    /// replaying the writes made while it ran): a partitioned search keeps it with its newest
    /// rows, as `add` does. `home` is its [`Self::placement`] when worked out.
    fn add_recent(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        embedding: &[f32],
        home: Option<u32>,
    ) -> Result<(), &'static str> {
        self.add_placed(slot, group, tags, embedding, home)
    }
    /// As [`Self::add_placed`] for a row stored as int8 `codes` times `scale` (a snapshot of a
    /// partitioned search); a search that keeps such codes may take them as they are.
    fn add_coded(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        codes: &[i8],
        scale: f32,
        placement: Option<u32>,
    ) -> Result<(), &'static str> {
        self.add_placed(slot, group, tags, &crate::kernels::decode_codes(codes, scale), placement)
    }
    /// As `add`, with the row's [`Self::placement`] when it was worked out.
    fn add_placed(
        &mut self,
        slot: u32,
        group: u32,
        tags: u64,
        embedding: &[f32],
        placement: Option<u32>,
    ) -> Result<(), &'static str> {
        let _ = placement;
        self.add(slot, group, tags, embedding)
    }
}
