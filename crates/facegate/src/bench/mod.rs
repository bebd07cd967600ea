//! `facegate bench`: speed figures measured in the repo, printed as a table or as JSON.

mod export;
mod http;
mod pipeline;
pub(crate) mod recall;
mod replication;
mod search;
mod unknown;

use clap::{Args, Subcommand};
use facegate_index::{IndexConfig, IvfTuning};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// `match_faces` against a running server at concurrency 1, 4 and 16: throughput,
    /// p50/p99, and how many requests the server turned away with 503.
    Http(http::HttpArgs),
    /// Time per stage (decode, detect, align, embed) and images/s and faces/s end to end, at 1
    /// thread and at the configured workers.
    Pipeline(pipeline::PipelineArgs),
    /// How long a write on one node of a PostgreSQL gallery takes to reach search on another
    /// node: p50/p99 of enrolls and deletes.
    Replication(replication::ReplicationArgs),
    /// 1:N search over N synthetic templates: build time, memory, p50/p99 latency of top-10
    /// search (some with tag filters), and recall against exact search.
    Search(search::SearchArgs),
    /// What keeping the faces nobody enrolled adds to a 1:N search, at a tenant holding
    /// `--sightings` of them already: p50/p99 of searches with and without it.
    UnknownFaces(unknown::UnknownArgs),
}

pub fn run(command: BenchCommand, file: &crate::config::FileConfig) -> anyhow::Result<()> {
    match command {
        BenchCommand::Http(args) => http::run(args),
        BenchCommand::Pipeline(args) => pipeline::run(args, file),
        BenchCommand::Replication(args) => replication::run(args),
        BenchCommand::Search(args) => search::run(args),
        BenchCommand::UnknownFaces(args) => unknown::run(args, file),
    }
}

/// How inverted lists are made and searched: the flags of `bench search` and `eval
/// index-recall` beside `--index`.
#[derive(Args, Debug)]
pub(crate) struct IvfArgs {
    /// Rows from which `auto` partitions a tenant into lists.
    #[arg(long, default_value_t = IndexConfig::default().partition_rows)]
    pub partition_rows: usize,
    /// Rows per list the partition aims at.
    #[arg(long, default_value_t = IvfTuning::default().rows_per_list)]
    rows_per_list: usize,
    /// Lists a partitioned search reads, at least (at 512 values; 4x at 128) ...
    #[arg(long, default_value_t = IvfTuning::default().probes)]
    probes: usize,
    /// Rows a partitioned search scores exactly, at least ...
    #[arg(long, default_value_t = IvfTuning::default().min_rerank)]
    rerank: usize,
    /// ... or this fraction of the rows it reads.
    #[arg(long, default_value_t = IvfTuning::default().rerank_fraction)]
    rerank_fraction: f64,
}

impl IvfArgs {
    pub(crate) fn tuning(&self) -> IvfTuning {
        IvfTuning {
            rows_per_list: self.rows_per_list.max(1),
            probes: self.probes.max(1),
            min_rerank: self.rerank,
            rerank_fraction: self.rerank_fraction,
        }
    }
}

/// A sorted copy of timings, for [`quantile`].
pub(crate) fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The value at quantile `q` (0..=1) of `sorted`, nearest rank; 0 when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Resident memory of this process, from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
