//! `facegate eval grouping`: every photo of a folder of people fed as a sighting of an unknown
//! face, in a random order, grouped one at a time by the core's rule
//! ([`facegate_core::grouping`]), and the groups compared with the true identities.
//!
//! The earlier sightings a new one is compared with are all of them (an exact scan over a
//! similarity matrix computed once), so the figures measure the rule, not an index's recall.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use facegate_core::grouping::{GroupingPolicy, Neighbour};
use facegate_core::Engine;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::{dot, embed_all, engine, lowest_similarity_with_score, read_people, EmbedArgs};
use crate::config::FileConfig;

#[derive(Args, Debug)]
pub struct GroupingArgs {
    /// Folder with one sub-folder per person.
    #[arg(long)]
    images: PathBuf,
    /// A file naming people (folder names, one per line, `#` comments) to leave out: known
    /// label noise, such as one person filed under two spellings.
    #[arg(long)]
    exclude_people: Option<PathBuf>,
    /// Grouping scores to try (the least score at which an earlier sighting counts). The default
    /// grid brackets the service's default, 8750 (`GroupingPolicy::DEFAULT`).
    #[arg(long, value_delimiter = ',', default_values_t = [7000u32, 8000, 8500, 8750, 9000, 9250])]
    scores: Vec<u32>,
    /// Neighbour counts to try (how many of a group's sightings must reach the score).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 3])]
    neighbours: Vec<usize>,
    /// Seed of the order the sightings arrive in.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embed: EmbedArgs,
}

/// How groups compare with identities. `people` and `groups` index the same sightings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupingQuality {
    pub pairwise_precision: f64,
    pub pairwise_recall: f64,
    pub bcubed_precision: f64,
    pub bcubed_recall: f64,
    /// BCubed recall over the sightings of people with 3 or more of them.
    pub bcubed_recall_3plus: f64,
    /// People with 2 or more sightings whose sightings are in more than one group.
    pub people_split: usize,
    /// Groups holding sightings of more than one person.
    pub groups_mixed: usize,
    pub groups: usize,
}

/// Pairwise and BCubed precision and recall (Amigó et al. 2009) of `groups` against `people`.
pub(crate) fn grouping_quality(people: &[usize], groups: &[usize]) -> GroupingQuality {
    assert_eq!(people.len(), groups.len());
    let mut per_person: HashMap<usize, usize> = HashMap::new();
    let mut per_group: HashMap<usize, usize> = HashMap::new();
    let mut per_both: HashMap<(usize, usize), usize> = HashMap::new();
    for (&p, &g) in people.iter().zip(groups) {
        *per_person.entry(p).or_default() += 1;
        *per_group.entry(g).or_default() += 1;
        *per_both.entry((p, g)).or_default() += 1;
    }
    let pairs = |n: usize| (n * n.saturating_sub(1) / 2) as f64;
    let same_both: f64 = per_both.values().map(|&n| pairs(n)).sum();
    let same_group: f64 = per_group.values().map(|&n| pairs(n)).sum();
    let same_person: f64 = per_person.values().map(|&n| pairs(n)).sum();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };

    let (mut precision, mut recall, mut recall_3plus, mut n_3plus) = (0.0, 0.0, 0.0, 0usize);
    for (&p, &g) in people.iter().zip(groups) {
        let both = per_both[&(p, g)] as f64;
        precision += both / per_group[&g] as f64;
        let r = both / per_person[&p] as f64;
        recall += r;
        if per_person[&p] >= 3 {
            recall_3plus += r;
            n_3plus += 1;
        }
    }
    let n = people.len().max(1) as f64;
    let mut groups_of_person: HashMap<usize, usize> = HashMap::new();
    let mut people_of_group: HashMap<usize, usize> = HashMap::new();
    for &(p, g) in per_both.keys() {
        *groups_of_person.entry(p).or_default() += 1;
        *people_of_group.entry(g).or_default() += 1;
    }
    GroupingQuality {
        pairwise_precision: ratio(same_both, same_group),
        pairwise_recall: ratio(same_both, same_person),
        bcubed_precision: precision / n,
        bcubed_recall: recall / n,
        bcubed_recall_3plus: if n_3plus > 0 { recall_3plus / n_3plus as f64 } else { 1.0 },
        people_split: groups_of_person.values().filter(|&&g| g > 1).count(),
        groups_mixed: people_of_group.values().filter(|&&p| p > 1).count(),
        groups: per_group.len(),
    }
}

/// Groups sightings `0..n` in that order under `policy`; `similar(i, j)` lists, for sighting
/// `i`, the earlier sightings `j < i` with their scores that may count (at least the policy's
/// score). Returns each sighting's group (the index of the sighting that started it).
fn group_in_order(n: usize, policy: &GroupingPolicy, similar: impl Fn(usize) -> Vec<(usize, u32)>) -> Vec<usize> {
    let mut group_of: Vec<usize> = Vec::with_capacity(n);
    let mut sizes: HashMap<usize, usize> = HashMap::new();
    for i in 0..n {
        let neighbours: Vec<Neighbour<usize>> =
            similar(i).into_iter().map(|(j, score)| Neighbour { group: group_of[j], score }).collect();
        let group = policy.place(&neighbours, |g| sizes.get(&g).copied().unwrap_or(0)).unwrap_or(i);
        *sizes.entry(group).or_default() += 1;
        group_of.push(group);
    }
    group_of
}

pub fn run(args: GroupingArgs, file: &FileConfig) -> anyhow::Result<()> {
    anyhow::ensure!(!args.scores.is_empty() && !args.neighbours.is_empty(), "--scores and --neighbours need values");
    let (config, engine) = engine(&args.embed.engine, file)?;
    let people = read_people(&args.images, args.exclude_people.as_deref())?;
    let all: Vec<PathBuf> = people.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    let embeddings = embed_all(&engine, &all, config.engine.inference_workers, &args.embed, false)?;
    let mut sightings: Vec<(usize, &[f32])> = Vec::new();
    for (person, (_, photos)) in people.iter().enumerate() {
        for p in photos {
            if let Some(Some(e)) = embeddings.get(p) {
                sightings.push((person, &e.embedding));
            }
        }
    }
    anyhow::ensure!(sightings.len() >= 2, "fewer than two photos with a face");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed);
    sightings.shuffle(&mut rng);
    let owners: Vec<usize> = sightings.iter().map(|s| s.0).collect();

    // The similarity of every earlier sighting, once: row i holds i's against 0..i.
    let n = sightings.len();
    let rows: Vec<Vec<f32>> = (0..n).map(|i| (0..i).map(|j| dot(sightings[i].1, sightings[j].1)).collect()).collect();
    let calibration = &engine.model_info().calibration;

    let mut results = Vec::new();
    for &min_score in &args.scores {
        let floor = lowest_similarity_with_score(calibration, min_score);
        for &neighbours in &args.neighbours {
            let policy = GroupingPolicy { min_score, neighbours };
            let groups = group_in_order(n, &policy, |i| {
                rows[i]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &s)| s >= floor)
                    .map(|(j, &s)| (j, calibration.score(s)))
                    .collect()
            });
            let q = grouping_quality(&owners, &groups);
            results.push(json!({
                "score": min_score, "neighbours": neighbours, "groups": q.groups,
                "pairwise_precision": q.pairwise_precision, "pairwise_recall": q.pairwise_recall,
                "bcubed_precision": q.bcubed_precision, "bcubed_recall": q.bcubed_recall,
                "bcubed_recall_3plus": q.bcubed_recall_3plus,
                "people_split": q.people_split, "groups_mixed": q.groups_mixed,
            }));
        }
    }
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for &o in &owners {
        *counts.entry(o).or_default() += 1;
    }
    let report = json!({
        "model_id": engine.model_info().model_id,
        "sightings": n,
        "people": counts.len(),
        "people_with_3_or_more": counts.values().filter(|&&c| c >= 3).count(),
        "seed": args.seed,
        "results": results,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(report: &Value) {
    println!(
        "{} sightings of {} people ({} with 3 or more), {}, order seed {}",
        report["sightings"], report["people"], report["people_with_3_or_more"], report["model_id"], report["seed"]
    );
    println!("score  k  groups  pairwise P / R    BCubed P / R      R (3+)  split  mixed");
    for r in report["results"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<6} {:<2} {:<7} {:.4} / {:.4}   {:.4} / {:.4}   {:.4}  {:<6} {}",
            r["score"],
            r["neighbours"],
            r["groups"],
            f("pairwise_precision"),
            f("pairwise_recall"),
            f("bcubed_precision"),
            f("bcubed_recall"),
            f("bcubed_recall_3plus"),
            r["people_split"],
            r["groups_mixed"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_grouping_scores_one_everywhere() {
        let q = grouping_quality(&[0, 0, 1, 1, 1], &[5, 5, 7, 7, 7]);
        assert_eq!(
            (q.pairwise_precision, q.pairwise_recall, q.bcubed_precision, q.bcubed_recall),
            (1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!((q.people_split, q.groups_mixed, q.groups), (0, 0, 2));
    }

    #[test]
    fn a_mixed_group_costs_precision_and_a_split_person_recall() {
        // Person 0's three sightings in one group with one of person 1's; person 1 split.
        let q = grouping_quality(&[0, 0, 0, 1, 1], &[0, 0, 0, 0, 4]);
        // BCubed precision: person 0's three see 3/4 each, person 1's first 1/4, its second 1/1.
        assert!((q.bcubed_precision - (3.0 * 0.75 + 0.25 + 1.0) / 5.0).abs() < 1e-12);
        // BCubed recall: person 0's see 3/3, person 1's 1/2 each.
        assert!((q.bcubed_recall - (3.0 + 0.5 + 0.5) / 5.0).abs() < 1e-12);
        assert!((q.bcubed_recall_3plus - 1.0).abs() < 1e-12);
        // Pairwise: 6 same-group pairs, of which 3 are the same person; 4 same-person pairs.
        assert!((q.pairwise_precision - 0.5).abs() < 1e-12 && (q.pairwise_recall - 0.75).abs() < 1e-12);
        assert_eq!((q.people_split, q.groups_mixed, q.groups), (1, 1, 2));
    }

    #[test]
    fn sightings_group_in_arrival_order_under_the_policy() {
        let policy = GroupingPolicy { min_score: 8000, neighbours: 2 };
        // 0 and 1 match; 2 matches only 1 of the group {0, 1} (size 2 needs 2): a group of its own;
        // 3 matches 0 and 1.
        let similar = |i: usize| match i {
            1 => vec![(0, 9000)],
            2 => vec![(1, 8500)],
            3 => vec![(0, 8100), (1, 8200)],
            _ => vec![],
        };
        assert_eq!(group_in_order(4, &policy, similar), vec![0, 0, 2, 0]);
    }
}
