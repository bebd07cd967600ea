//! The `VectorSearch` conformance suite: the same tests, through the trait, against every
//! implementation and setting. Each is held to its own `search_exact`, which is held to a plain
//! f64 scan; an approximate setting must still find mated probes as the exact scan does.

use std::collections::{HashMap, HashSet};

use facegate_index::{FlatScan, IvfSearch, IvfTuning, ScoredRow, SearchTuning, VectorSearch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every implementation under test, with whether its `search` must equal `search_exact` on any
/// data (true) or only find mated probes (false).
fn implementations() -> Vec<(&'static str, Box<dyn VectorSearch>, bool)> {
    // Two-stage from the first row, with few candidates, so that the sketch stage really
    // chooses: 64 rows of a few thousand.
    let two_stage =
        SearchTuning { exact_rows: 0, min_candidates: 64, candidate_fraction: 0.0, ..SearchTuning::default() };
    // Every row scored while the lists scanned hold no more than the rerank budget.
    let ivf_exact = IvfTuning { min_rerank: 1 << 20, ..IvfTuning::default() };
    // Trained on few rows per list and probing few lists, with few candidates, so that both
    // the lists and the sketch stage really choose.
    let ivf_narrow = IvfTuning { rows_per_list: 40, probes: 4, min_rerank: 32, rerank_fraction: 0.0 };
    vec![
        ("flat scan, exact", Box::new(FlatScan::new(SearchTuning::default())), true),
        ("flat scan, two stages", Box::new(FlatScan::new(two_stage)), false),
        ("ivf, every row scored", Box::new(IvfSearch::new(ivf_exact)), true),
        ("ivf, narrow", Box::new(IvfSearch::new(ivf_narrow)), false),
    ]
}

fn random_unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// `centre` moved a little: a second photo of the same person.
fn near(rng: &mut StdRng, centre: &[f32]) -> Vec<f32> {
    let v: Vec<f32> = centre.iter().map(|x| x + rng.gen_range(-0.08f32..0.08)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// A row as the suite knows it.
struct Row {
    group: u32,
    tags: u64,
    vector: Vec<f32>,
}

/// The best row of each of the best `limit` groups by a plain f64 scan, over rows meeting
/// `filter`.
fn reference(rows: &HashMap<u32, Row>, query: &[f32], limit: usize, filter: Option<u64>) -> Vec<(u32, f64)> {
    let mut best: HashMap<u32, (u32, f64)> = HashMap::new();
    for (&slot, row) in rows {
        if filter.is_some_and(|f| f & row.tags == 0) {
            continue;
        }
        let score: f64 = row.vector.iter().zip(query).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        let entry = best.entry(row.group).or_insert((slot, f64::MIN));
        if score > entry.1 {
            *entry = (slot, score);
        }
    }
    let mut out: Vec<(u32, f64)> = best.into_values().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.truncate(limit);
    out
}

/// f16 rows move a similarity by well under 1e-3, which may swap near ties: compared rank by
/// rank on score, each row against its own group's best, one row per group. int8 rows (the
/// partitioned search) move it by up to `max |x| / 254` per value: a few 1e-3 at the short,
/// spiky vectors of these tests, about 5e-4 at 128 values and more (`ivf.rs` tests that).
fn assert_like_reference(name: &str, got: &[ScoredRow], rows: &HashMap<u32, Row>, expected: &[(u32, f64)]) {
    const F16_TOLERANCE: f64 = 1e-3;
    const INT8_TOLERANCE: f64 = 4e-3;
    let tolerance = if name.starts_with("ivf") { INT8_TOLERANCE } else { F16_TOLERANCE };
    assert_eq!(got.len(), expected.len(), "{name}: {got:?}");
    let mut groups = HashSet::new();
    for (hit, (_, score)) in got.iter().zip(expected) {
        assert!((f64::from(hit.score) - score).abs() < tolerance, "{name}: {hit:?} vs {score} at this rank");
        let group = rows.get(&hit.slot).map(|r| r.group).expect("a slot in use");
        assert!(groups.insert(group), "{name}: group {group} listed twice");
    }
    for w in got.windows(2) {
        assert!(w[0].score >= w[1].score, "{name}: not best first: {w:?}");
    }
}

/// Adds `count` groups of `per_group` rows near a centre each, tags cycling over `tag_bits`.
fn fill(
    search: &mut dyn VectorSearch,
    rows: &mut HashMap<u32, Row>,
    rng: &mut StdRng,
    count: u32,
    per_group: u32,
    dim: usize,
) -> Vec<Vec<f32>> {
    let mut centres = Vec::new();
    let mut slot = rows.keys().max().map_or(0, |s| s + 1);
    for group in 0..count {
        let centre = random_unit(rng, dim);
        let tags = 1u64 << (group % 5);
        for _ in 0..per_group {
            let vector = near(rng, &centre);
            search.add(slot, group, tags, &vector).expect("add");
            rows.insert(slot, Row { group, tags, vector });
            slot += 1;
        }
        centres.push(centre);
    }
    // A partitioned search learns its lists from what it holds; rows added after go straight to
    // their list.
    search.train();
    centres
}

#[test]
fn exact_search_is_the_plain_scan_and_search_finds_mates() {
    for (name, mut search, exact) in implementations() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut rows = HashMap::new();
        let dim = 67; // not a multiple of the SIMD width nor of 64, to exercise the tails
        let centres = fill(search.as_mut(), &mut rows, &mut rng, 600, 4, dim);
        assert_eq!(search.len(), 2400, "{name}");
        assert_eq!(search.dim(), dim, "{name}");
        for centre in centres.iter().step_by(37) {
            let probe = near(&mut rng, centre);
            let expected = reference(&rows, &probe, 10, None);
            assert_like_reference(name, &search.search_exact(&probe, 10, None), &rows, &expected);
            let found = search.search(&probe, 10, None);
            if exact {
                assert_like_reference(name, &found, &rows, &expected);
            } else {
                let best = found.first().map(|r| rows[&r.slot].group);
                assert_eq!(best, Some(rows[&expected[0].0].group), "{name}: the mate is found first");
            }
        }
    }
}

#[test]
fn removed_rows_never_come_back_and_slots_are_reused() {
    for (name, mut search, _) in implementations() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut rows = HashMap::new();
        let centres = fill(search.as_mut(), &mut rows, &mut rng, 200, 3, 32);
        // Every row of the even groups goes, in an order that moves rows around.
        let gone: Vec<u32> = rows.iter().filter(|(_, r)| r.group % 2 == 0).map(|(&s, _)| s).collect();
        for slot in &gone {
            search.remove(*slot);
            rows.remove(slot);
            search.remove(*slot); // twice: nothing happens
        }
        assert_eq!(search.len(), rows.len(), "{name}");
        for (group, centre) in centres.iter().enumerate() {
            for hit in search.search(centre, 20, None).iter().chain(&search.search_exact(centre, 20, None)) {
                assert!(rows.contains_key(&hit.slot), "{name}: removed slot {} came back", hit.slot);
            }
            if group % 2 == 1 {
                let expected = reference(&rows, centre, 20, None);
                assert_like_reference(name, &search.search_exact(centre, 20, None), &rows, &expected);
            }
        }
        for (slot, row) in &rows {
            assert!(search.score(*slot, &row.vector).is_some_and(|s| s > 0.99), "{name}: slot {slot} lost its row");
        }
        // A freed slot takes a new row, which is found as itself.
        let reused = gone[0];
        let vector = random_unit(&mut rng, 32);
        search.add(reused, 999, 0, &vector).expect("reuse a slot");
        assert!(search.add(reused, 999, 0, &vector).is_err(), "{name}: a slot in use is refused");
        let top = search.search_exact(&vector, 1, None);
        assert_eq!(top.first().map(|r| r.slot), Some(reused), "{name}");
        assert!(search.score(gone[1], &vector).is_none(), "{name}: a freed slot scores nothing");
    }
}

#[test]
fn tag_filters_apply_inside_the_search_and_never_shrink_it() {
    for (name, mut search, exact) in implementations() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut rows = HashMap::new();
        let centres = fill(search.as_mut(), &mut rows, &mut rng, 500, 2, 48);
        let filter = Some(0b100); // one group in five
        for centre in centres.iter().step_by(23) {
            let expected = reference(&rows, centre, 25, filter);
            assert_eq!(expected.len(), 25, "enough tagged groups to fill the answer");
            let exact_rows = search.search_exact(centre, 25, filter);
            assert_like_reference(name, &exact_rows, &rows, &expected);
            let found = search.search(centre, 25, filter);
            for hit in &found {
                assert!(rows[&hit.slot].tags & 0b100 != 0, "{name}: an untagged row passed the filter");
            }
            if exact {
                assert_like_reference(name, &found, &rows, &expected);
            } else {
                assert_eq!(found.len(), 25, "{name}: the filter shrank the answer");
            }
        }
        // Retagging and moving bits are seen by the next search.
        let (&slot, row) = rows.iter().find(|(_, r)| r.tags == 0b1).expect("a row tagged 0b1");
        let vector = row.vector.clone();
        assert!(search.search_exact(&vector, 1, Some(0b1000_0000)).is_empty(), "{name}");
        search.set_tags(slot, 0b1000_0000);
        assert_eq!(search.search_exact(&vector, 1, Some(0b1000_0000)).first().map(|r| r.slot), Some(slot), "{name}");
        search.move_tag_bits(0b1000_0000, 0b1_0000_0000);
        assert!(search.search_exact(&vector, 1, Some(0b1000_0000)).is_empty(), "{name}");
        assert_eq!(search.search_exact(&vector, 1, Some(0b1_0000_0000)).first().map(|r| r.slot), Some(slot), "{name}");
    }
}

#[test]
fn a_group_with_many_rows_is_listed_once_by_its_best_row() {
    for (name, mut search, _) in implementations() {
        let mut rng = StdRng::seed_from_u64(14);
        let mut rows = HashMap::new();
        let centres = fill(search.as_mut(), &mut rows, &mut rng, 300, 1, 40);
        // Group 7 holds 200 rows near its centre; one of them is the centre itself.
        let many = 7;
        let mut slot = 10_000;
        for _ in 0..200 {
            let vector = near(&mut rng, &centres[many as usize]);
            search.add(slot, many, 1, &vector).expect("add");
            rows.insert(slot, Row { group: many, tags: 1, vector });
            slot += 1;
        }
        search.add(slot, many, 1, &centres[many as usize]).expect("add");
        rows.insert(slot, Row { group: many, tags: 1, vector: centres[many as usize].clone() });
        let found = search.search(&centres[many as usize], 5, None);
        assert_eq!(found.len(), 5, "{name}: the other groups still fill the answer");
        assert_eq!(found[0].slot, slot, "{name}: the group is ranked by its best row");
        let groups: HashSet<u32> = found.iter().map(|r| rows[&r.slot].group).collect();
        assert_eq!(groups.len(), 5, "{name}: one row per group");
    }
}

#[test]
fn an_empty_search_and_wrong_lengths_answer_nothing() {
    for (name, mut search, _) in implementations() {
        assert!(search.search(&[1.0, 0.0], 5, None).is_empty(), "{name}");
        assert!(search.search_exact(&[1.0, 0.0], 5, None).is_empty(), "{name}");
        assert_eq!((search.len(), search.dim()), (0, 0), "{name}");
        search.add(0, 0, 0, &[0.6, 0.8]).expect("add");
        assert!(search.add(1, 0, 0, &[1.0, 0.0, 0.0]).is_err(), "{name}: another length is refused");
        assert!(search.search(&[1.0, 0.0, 0.0], 5, None).is_empty(), "{name}");
        assert!(search.score(0, &[1.0]).is_none(), "{name}");
        assert!(search.search(&[0.6, 0.8], 0, None).is_empty(), "{name}: limit 0");
        search.remove(0);
        assert_eq!(search.len(), 0, "{name}");
        // Empty again, any length may start it anew.
        search.add(0, 0, 0, &[1.0, 0.0, 0.0]).expect("a new length once empty");
        assert_eq!(search.dim(), 3, "{name}");
    }
}
