//! FlatIndex against a brute-force reference, plus removal, isolation and bad input.

use std::collections::HashMap;

use facegate_core::{Index, SubjectHit, Template};
use facegate_index::{FlatIndex, SearchTuning};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn template(tenant: &str, subject: &str, sample: &str, embedding: Vec<f32>) -> Template {
    Template { tenant_id: tenant.into(), subject_id: subject.into(), sample_id: sample.into(), embedding }
}

/// Best sample per subject by a plain f64 dot product, highest first.
fn reference(templates: &[Template], tenant: &str, query: &[f32]) -> Vec<(String, String, f64)> {
    let mut best: HashMap<&str, (&str, f64)> = HashMap::new();
    for t in templates.iter().filter(|t| t.tenant_id == tenant) {
        let s: f64 = t.embedding.iter().zip(query).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        let e = best.entry(&t.subject_id).or_insert((&t.sample_id, f64::MIN));
        if s > e.1 {
            *e = (&t.sample_id, s);
        }
    }
    let mut v: Vec<_> = best.into_iter().map(|(subj, (samp, s))| (subj.to_owned(), samp.to_owned(), s)).collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}

/// Rows are stored as f16, which moves a similarity by well under 1e-3 and may swap near ties,
/// so hits are checked rank by rank on score, and each against its own subject's best.
fn assert_matches_reference(hits: &[SubjectHit], expected: &[(String, String, f64)], limit: usize) {
    const F16_TOLERANCE: f64 = 1e-3;
    assert_eq!(hits.len(), expected.len().min(limit));
    for w in hits.windows(2) {
        assert!(w[0].similarity >= w[1].similarity, "not sorted: {w:?}");
    }
    let best: HashMap<&str, f64> = expected.iter().map(|(subject, _, score)| (subject.as_str(), *score)).collect();
    let mut seen = std::collections::HashSet::new();
    for (hit, (_, _, score)) in hits.iter().zip(expected) {
        assert!((f64::from(hit.similarity) - score).abs() < F16_TOLERANCE, "{hit:?} vs {score} at this rank");
        let own = best.get(hit.subject_id.as_str()).copied().unwrap_or(f64::NAN);
        assert!((f64::from(hit.similarity) - own).abs() < F16_TOLERANCE, "{hit:?} vs its subject's best {own}");
        assert!(seen.insert(&hit.subject_id), "subject listed twice: {hit:?}");
    }
}

#[test]
fn search_matches_brute_force_on_random_data() {
    let mut rng = StdRng::seed_from_u64(7);
    let dim = 37; // not a multiple of the SIMD width, to exercise the tail
    let index = FlatIndex::new();
    let mut templates = Vec::new();
    for s in 0..300 {
        for k in 0..rng.gen_range(1..5) {
            let t = template("t", &format!("subj{s}"), &format!("s{s}-{k}"), random_unit(&mut rng, dim));
            index.insert(t.clone());
            templates.push(t);
        }
    }
    assert_eq!(index.len("t"), templates.len());
    for _ in 0..50 {
        let query = random_unit(&mut rng, dim);
        let expected = reference(&templates, "t", &query);
        for limit in [1, 10, 299, 300, 1000] {
            assert_matches_reference(&index.search("t", &query, limit), &expected, limit);
        }
        for (subject, _, score) in expected.iter().take(20) {
            let hit = index.best_of_subject("t", subject, &query).expect("subject has samples");
            assert!((f64::from(hit.similarity) - score).abs() < 1e-3);
            let chosen = templates.iter().find(|t| t.sample_id == hit.sample_id).expect("a known sample");
            assert_eq!(&chosen.subject_id, subject);
        }
    }
    assert!(index.search("t", &random_unit(&mut rng, dim), 0).is_empty());
}

#[test]
fn removal_drops_every_sample_of_the_subject_only() {
    let mut rng = StdRng::seed_from_u64(11);
    let dim = 64;
    let index = FlatIndex::new();
    let mut templates = Vec::new();
    for s in 0..100 {
        for k in 0..3 {
            let t = template("t", &format!("subj{s}"), &format!("s{s}-{k}"), random_unit(&mut rng, dim));
            index.insert(t.clone());
            templates.push(t);
        }
    }
    for s in (0..100).filter(|s| s % 3 == 0) {
        index.remove_subject("t", &format!("subj{s}"));
    }
    index.remove_subject("t", "never-existed");
    templates.retain(|t| t.subject_id.trim_start_matches("subj").parse::<u32>().map_or(true, |s| s % 3 != 0));
    assert_eq!(index.len("t"), templates.len());
    for _ in 0..20 {
        let query = random_unit(&mut rng, dim);
        assert_matches_reference(&index.search("t", &query, 1000), &reference(&templates, "t", &query), 1000);
    }
    assert!(index.best_of_subject("t", "subj0", &random_unit(&mut rng, dim)).is_none());

    // Removing everything, then inserting a different dimension, works: an emptied tenant
    // takes whatever size comes next.
    for s in 0..100 {
        index.remove_subject("t", &format!("subj{s}"));
    }
    assert_eq!(index.len("t"), 0);
    assert!(index.search("t", &random_unit(&mut rng, dim), 10).is_empty());
    index.insert(template("t", "new", "n1", random_unit(&mut rng, 8)));
    assert_eq!(index.search("t", &random_unit(&mut rng, 8), 10).len(), 1);
}

#[test]
fn tenants_are_isolated() {
    let index = FlatIndex::new();
    let v = vec![1.0, 0.0, 0.0, 0.0];
    index.insert(template("a", "alice", "a1", v.clone()));
    index.insert(template("b", "bob", "b1", v.clone()));
    // The same subject and sample ids in two tenants stay two templates.
    index.insert(template("b", "alice", "a1", v.clone()));
    assert_eq!(index.len("a"), 1);
    assert_eq!(index.len("b"), 2);
    assert_eq!(index.len("c"), 0);
    let hits = index.search("a", &v, 10);
    assert_eq!(hits.iter().map(|h| h.subject_id.as_str()).collect::<Vec<_>>(), ["alice"]);
    assert!(index.best_of_subject("a", "bob", &v).is_none());
    assert!(index.search("c", &v, 10).is_empty());
    index.remove_subject("a", "alice");
    assert_eq!(index.len("a"), 0);
    assert_eq!(index.len("b"), 2);
    assert!(index.best_of_subject("b", "alice", &v).is_some());
}

#[test]
fn wrong_dimensions_give_no_hits_instead_of_panicking() {
    let index = FlatIndex::new();
    index.insert(template("t", "s", "x", vec![0.6, 0.8, 0.0]));
    assert!(index.search("t", &[1.0, 0.0], 5).is_empty());
    assert!(index.search("t", &[1.0, 0.0, 0.0, 0.0], 5).is_empty());
    assert!(index.search("t", &[], 5).is_empty());
    assert!(index.best_of_subject("t", "s", &[1.0]).is_none());
    // A template of another length is refused, not mixed in.
    index.insert(template("t", "s2", "y", vec![1.0, 0.0]));
    index.insert(template("t", "s3", "z", vec![]));
    assert_eq!(index.len("t"), 1);
    let hits = index.search("t", &[1.0, 0.0, 0.0], 5);
    assert_eq!(hits.len(), 1);
    assert!((hits[0].similarity - 0.6).abs() < 1e-3);
}

#[test]
fn concurrent_readers_and_writers() {
    let index = std::sync::Arc::new(FlatIndex::new());
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let index = index.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(w);
                for i in 0..200 {
                    let tenant = if w % 2 == 0 { "even" } else { "odd" };
                    index.insert(template(
                        tenant,
                        &format!("w{w}s{i}"),
                        &format!("w{w}x{i}"),
                        random_unit(&mut rng, 16),
                    ));
                    let hits = index.search(tenant, &random_unit(&mut rng, 16), 5);
                    assert!(!hits.is_empty());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(index.len("even") + index.len("odd"), 8 * 200);
}

#[test]
fn subject_samples_are_ranked_and_samples_can_be_removed() {
    let index = FlatIndex::new();
    let e = |x: f32, y: f32| {
        let n = (x * x + y * y).sqrt();
        vec![x / n, y / n]
    };
    index.insert(template("t", "s", "a", e(1.0, 0.0)));
    index.insert(template("t", "s", "b", e(1.0, 1.0)));
    index.insert(template("t", "s", "c", e(0.0, 1.0)));
    index.insert(template("t", "other", "d", e(1.0, 0.0)));
    let ranked: Vec<String> = index.subject_samples("t", "s", &e(1.0, 0.1)).into_iter().map(|h| h.sample_id).collect();
    assert_eq!(ranked, ["a", "b", "c"]);
    index.remove_sample("t", "a");
    let ranked: Vec<String> = index.subject_samples("t", "s", &e(1.0, 0.1)).into_iter().map(|h| h.sample_id).collect();
    assert_eq!(ranked, ["b", "c"]);
    assert_eq!(index.best_of_subject("t", "s", &e(1.0, 0.0)).map(|h| h.sample_id).as_deref(), Some("b"));
    assert_eq!(index.len("t"), 3);
    assert!(index.subject_samples("t", "nobody", &e(1.0, 0.0)).is_empty());
    assert!(index.subject_samples("elsewhere", "s", &e(1.0, 0.0)).is_empty());
    index.remove_sample("elsewhere", "b");
    assert_eq!(index.len("t"), 3, "removing in another tenant touches nothing");
}

/// A clustered gallery: `subjects` identities with a centre each, `per_subject` noisy templates.
fn clustered(rng: &mut StdRng, index: &FlatIndex, subjects: usize, per_subject: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut centres = Vec::with_capacity(subjects);
    for s in 0..subjects {
        let centre = random_unit(rng, dim);
        for k in 0..per_subject {
            index.insert(template("t", &format!("subj{s}"), &format!("s{s}-{k}"), noisy(rng, &centre)));
        }
        centres.push(centre);
    }
    centres
}

fn noisy(rng: &mut StdRng, centre: &[f32]) -> Vec<f32> {
    let noise = random_unit(rng, centre.len());
    let v: Vec<f32> = centre.iter().zip(&noise).map(|(c, n)| c + 0.8 * n).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

#[test]
fn two_stage_search_finds_what_exact_search_finds_for_mates() {
    let mut rng = StdRng::seed_from_u64(11);
    // Force the two-stage path on a small gallery, with a small candidate budget.
    let tuning = SearchTuning {
        exact_rows: 100,
        min_candidates: 64,
        candidate_fraction: 0.0,
        parallel_scan_rows: 1_000,
        ..SearchTuning::default()
    };
    let index = FlatIndex::with_tuning(tuning);
    let centres = clustered(&mut rng, &index, 2_000, 2, 512);
    for (s, centre) in centres.iter().enumerate().step_by(37) {
        let probe = noisy(&mut rng, centre);
        let fast = index.search("t", &probe, 5);
        let exact = index.search_exact("t", &probe, 5, &[]);
        assert_eq!(fast[0].subject_id, format!("subj{s}"), "the mate comes first");
        assert_eq!(fast[0], exact[0]);
        assert!(fast.windows(2).all(|w| w[0].similarity >= w[1].similarity));
    }
    // A deleted subject is gone from the very next search.
    let probe = noisy(&mut rng, &centres[5]);
    index.remove_subject("t", "subj5");
    assert!(index.search("t", &probe, 10).iter().all(|h| h.subject_id != "subj5"));
}

#[test]
fn tag_filters_keep_only_tagged_subjects_in_both_search_paths() {
    let tags = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<String>>();
    let two_stage = SearchTuning {
        exact_rows: 10,
        min_candidates: 16,
        candidate_fraction: 0.0,
        parallel_scan_rows: 100,
        ..SearchTuning::default()
    };
    for tuning in [SearchTuning::default(), two_stage] {
        let mut rng = StdRng::seed_from_u64(5);
        let index = FlatIndex::with_tuning(tuning);
        // Tags may arrive before the subject's first template.
        index.set_subject_tags("t", "subj3", &tags(&["vip"]));
        let centres = clustered(&mut rng, &index, 300, 1, 64);
        index.set_subject_tags("t", "subj7", &tags(&["staff", "vip"]));
        index.set_subject_tags("t", "subj9", &tags(&["staff"]));

        // Searching near subj1 with a filter still finds the tagged ones, and only them.
        let probe = noisy(&mut rng, &centres[1]);
        let vip: Vec<String> =
            index.search_tagged("t", &probe, 10, &tags(&["vip"])).into_iter().map(|h| h.subject_id).collect();
        assert_eq!(vip.len(), 2, "{vip:?}");
        assert!(vip.contains(&"subj3".to_owned()) && vip.contains(&"subj7".to_owned()));
        let any = index.search_tagged("t", &probe, 10, &tags(&["vip", "staff"]));
        assert_eq!(any.len(), 3);
        assert!(index.search_tagged("t", &probe, 10, &tags(&["nobody-has-this"])).is_empty());

        index.rename_tag("t", "vip", "gold");
        assert_eq!(index.search_tagged("t", &probe, 10, &tags(&["gold"])).len(), 2);
        assert!(index.search_tagged("t", &probe, 10, &tags(&["vip"])).is_empty());
        // A rename onto a name that subjects already carry here (a node that read one subject's
        // labels after the rename committed, and applies the rename afterwards): both groups
        // are found by the new name, none by the old.
        index.set_subject_tags("t", "subj9", &tags(&["silver"]));
        index.set_subject_tags("t", "subj3", &tags(&["platinum"]));
        index.rename_tag("t", "gold", "platinum");
        let platinum: Vec<String> =
            index.search_tagged("t", &probe, 10, &tags(&["platinum"])).into_iter().map(|h| h.subject_id).collect();
        assert_eq!(platinum.len(), 2, "{platinum:?}");
        assert!(platinum.contains(&"subj3".to_owned()) && platinum.contains(&"subj7".to_owned()));
        assert!(index.search_tagged("t", &probe, 10, &tags(&["gold"])).is_empty());
        assert_eq!(index.search_tagged("t", &probe, 10, &tags(&["silver"])).len(), 1, "other tags untouched");
        index.rename_tag("t", "platinum", "vip");
        index.set_subject_tags("t", "subj9", &tags(&["staff"]));
        // Replacing tags replaces them; deleting a subject drops its tags with it.
        index.set_subject_tags("t", "subj9", &[]);
        assert_eq!(index.search_tagged("t", &probe, 10, &tags(&["staff"])).len(), 1);
        index.remove_subject("t", "subj7");
        index.insert(template("t", "subj7", "again", centres[7].clone()));
        assert!(index.search_tagged("t", &probe, 10, &tags(&["staff"])).is_empty());
    }
}
