//! The shell's background rebuilds: a tenant crossing the partition threshold, growing past its
//! training size, and shrinking back, while writes and searches go on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use facegate_core::{Index, Template};
use facegate_index::{FlatIndex, IndexConfig, IndexKind, IvfTuning};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 48;

fn vector_of(subject: usize, sample: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64((subject as u64) << 8 | sample as u64);
    let v: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn template(subject: usize, sample: usize) -> Template {
    Template {
        tenant_id: "t".into(),
        subject_id: format!("s{subject}"),
        sample_id: format!("s{subject}-{sample}"),
        embedding: vector_of(subject, sample),
    }
}

/// Small lists and a low threshold, so that a few thousand rows go through every kind of
/// rebuild.
fn config() -> IndexConfig {
    IndexConfig {
        kind: IndexKind::Auto,
        partition_rows: 1_500,
        ivf: IvfTuning { rows_per_list: 60, probes: 8, ..IvfTuning::default() },
        ..IndexConfig::default()
    }
}

#[test]
fn rebuilds_during_writes_and_searches_lose_no_write_and_never_stop_search() {
    let index = Arc::new(FlatIndex::with_config(config()));
    let subjects = 6_000;
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // A searcher that never finds nothing once there is something, and never a removed subject.
    let searcher = {
        let (index, written, done) = (index.clone(), written.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(9);
            let mut searches = 0;
            while !done.load(Ordering::Relaxed) {
                let upto = written.load(Ordering::Acquire);
                if upto < 20 {
                    continue;
                }
                let subject = rng.gen_range(0..upto);
                let hits = index.search("t", &vector_of(subject, 0), 5);
                assert!(!hits.is_empty(), "a search found nothing in a tenant of {upto} subjects");
                assert!(
                    hits.iter().all(|h| !removed_before(&h.subject_id, upto)),
                    "a removed subject came back: {hits:?}"
                );
                searches += 1;
            }
            searches
        })
    };
    for subject in 0..subjects {
        for sample in 0..2 {
            index.insert(template(subject, sample));
        }
        if subject % 7 == 3 {
            index.set_subject_tags("t", &format!("s{subject}"), &["seven".to_owned()]);
        }
        if subject % 10 == 9 {
            index.remove_subject("t", &format!("s{subject}"));
        } else {
            // A write is visible to the very next search, whatever is being rebuilt.
            let hits = index.search("t", &vector_of(subject, 1), 1);
            assert_eq!(hits.first().map(|h| h.sample_id.as_str()), Some(format!("s{subject}-1").as_str()));
        }
        written.store(subject + 1, Ordering::Release);
    }
    done.store(true, Ordering::Relaxed);
    let searches = searcher.join().expect("the searcher");
    assert!(searches > 0);
    index.wait_for_rebuilds();

    let partition = index.partition("t").expect("partitioned once past the threshold");
    assert!(partition.trained_rows >= 6_000, "retrained as it grew: {partition:?}");
    let live = subjects - subjects / 10;
    assert_eq!(index.len("t"), 2 * live);
    for subject in 0..subjects {
        let hits = index.search("t", &vector_of(subject, 0), 1);
        if subject % 10 == 9 {
            assert!(hits.iter().all(|h| h.subject_id != format!("s{subject}")));
            continue;
        }
        assert_eq!(hits.first().map(|h| h.sample_id.clone()), Some(format!("s{subject}-0")), "subject {subject}");
        if subject % 7 == 3 {
            let tagged = index.search_tagged("t", &vector_of(subject, 0), 3, &["seven".to_owned()]);
            assert_eq!(tagged.len(), 3, "the filter does not shrink the answer");
            assert_eq!(tagged[0].subject_id, format!("s{subject}"));
        }
    }

    // Shrinking well below the threshold goes back to the flat scan, which finds the rest.
    for subject in 0..subjects - 300 {
        index.remove_subject("t", &format!("s{subject}"));
    }
    index.wait_for_rebuilds();
    assert_eq!(index.partition("t"), None);
    for subject in (subjects - 300..subjects).filter(|s| s % 10 != 9) {
        let hits = index.search("t", &vector_of(subject, 1), 1);
        assert_eq!(hits.first().map(|h| h.subject_id.clone()), Some(format!("s{subject}")));
    }
}

/// Whether the writer had removed `subject_id` before it had written `upto` subjects.
fn removed_before(subject_id: &str, upto: usize) -> bool {
    subject_id.strip_prefix('s').and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n % 10 == 9 && n < upto)
}

#[test]
fn the_ivf_kind_partitions_small_tenants_and_the_flat_kind_never_does() {
    for (kind, partitioned) in [(IndexKind::Ivf, true), (IndexKind::Flat, false)] {
        let index = FlatIndex::with_config(IndexConfig { kind, ..config() });
        for subject in 0..600 {
            index.insert(template(subject, 0));
        }
        index.wait_for_rebuilds();
        assert_eq!(index.partition("t").is_some_and(|p| p.trained_rows > 0), partitioned, "{kind:?}");
        for subject in (0..600).step_by(13) {
            let hits = index.search("t", &vector_of(subject, 0), 1);
            assert_eq!(hits[0].subject_id, format!("s{subject}"), "{kind:?}");
        }
    }
}

#[test]
fn tenants_crossing_the_threshold_together_take_turns_and_are_all_partitioned() {
    let index = FlatIndex::with_config(config());
    for subject in 0..2_000 {
        for tenant in ["a", "b", "c"] {
            index.insert(Template { tenant_id: tenant.into(), ..template(subject, 0) });
        }
    }
    index.wait_for_rebuilds();
    for tenant in ["a", "b", "c"] {
        assert!(index.partition(tenant).is_some_and(|p| p.trained_rows >= 1_500), "{tenant}");
        assert_eq!(index.len(tenant), 2_000);
        let hits = index.search(tenant, &vector_of(1_234, 0), 1);
        assert_eq!(hits[0].subject_id, "s1234", "{tenant}");
    }
}

#[test]
fn a_load_of_the_whole_gallery_defers_rebuilds_until_it_is_over() {
    let index = FlatIndex::with_config(config());
    index.loading(true);
    for subject in 0..2_000 {
        index.insert(template(subject, 0));
    }
    index.wait_for_rebuilds();
    assert_eq!(index.partition("t"), None, "nothing is rebuilt while the gallery loads");
    assert_eq!(index.search("t", &vector_of(77, 0), 1)[0].subject_id, "s77");
    index.loading(false);
    index.wait_for_rebuilds();
    assert!(index.partition("t").is_some_and(|p| p.trained_rows >= 2_000));
    assert_eq!(index.search("t", &vector_of(77, 0), 1)[0].subject_id, "s77");
}
