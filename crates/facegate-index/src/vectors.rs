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
}
