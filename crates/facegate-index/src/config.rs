//! [`IndexConfig`]: which vector search a tenant gets, and when it changes.

use crate::flat_scan::SearchTuning;
use crate::ivf::IvfTuning;

/// The kind of vector search a tenant gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexKind {
    /// The flat scan below [`IndexConfig::partition_rows`], inverted lists from there on.
    #[default]
    Auto,
    /// The flat scan at every size: exact to 32,768 rows, two-stage above.
    Flat,
    /// Inverted lists at every size, trained once a tenant has rows enough to learn lists from.
    Ivf,
}

impl IndexKind {
    pub const NAMES: [&'static str; 3] = ["auto", "flat", "ivf"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Flat => "flat",
            Self::Ivf => "ivf",
        }
    }
}

impl std::str::FromStr for IndexKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "flat" => Ok(Self::Flat),
            "ivf" => Ok(Self::Ivf),
            other => Err(format!("unknown index kind {other:?}; one of {}", Self::NAMES.join(", "))),
        }
    }
}

/// Rows from which `auto` gives a tenant inverted lists. The flat scan's two-stage search costs
/// about 2 ms at 250,000 rows of 512 values on the 2-core development VM and grows in step with
/// the rows; the lists cost about the same there and stay flat beyond (`docs/benchmarks.md`),
/// and training them takes a few seconds at this size.
pub const DEFAULT_PARTITION_ROWS: usize = 250_000;

/// A partitioned tenant is retrained once it holds this many times the rows its lists were
/// learnt from: lists stay within twice their planned length, and the rows re-listed over a
/// tenant's growth add up to at most twice its size.
pub const RETRAIN_GROWTH: usize = 2;

/// A partitioned tenant is retrained when its longest list holds this many times the mean:
/// writes that all land near one centroid (one camera's visitors, say) would otherwise make
/// every search near it read one huge list.
pub const RETRAIN_IMBALANCE: usize = 16;

/// Which vector search each tenant gets, and how each searches.
#[derive(Debug, Clone, Copy)]
pub struct IndexConfig {
    pub kind: IndexKind,
    /// See [`DEFAULT_PARTITION_ROWS`].
    pub partition_rows: usize,
    pub flat: SearchTuning,
    pub ivf: IvfTuning,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            kind: IndexKind::Auto,
            partition_rows: DEFAULT_PARTITION_ROWS,
            flat: SearchTuning::default(),
            ivf: IvfTuning::default(),
        }
    }
}
