//! Index snapshots: a round trip gives back the same index, flat or partitioned (fresh rows
//! included), and a snapshot cut short or with any byte changed is refused without touching the
//! index.

use facegate_core::{Index, Template};
use facegate_index::{FlatIndex, IndexConfig, IndexKind, IvfTuning};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 32;
const TENANT: &str = "t";

fn unit(rng: &mut StdRng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn partitioned() -> IndexConfig {
    IndexConfig {
        kind: IndexKind::Auto,
        partition_rows: 1_000,
        // Few rows scored, so that which rows the sketch stage keeps decides the answers.
        ivf: IvfTuning { rows_per_list: 50, probes: 4, min_rerank: 40, rerank_fraction: 0.02 },
        ..IndexConfig::default()
    }
}

/// `rows` templates of `rows / 2` subjects (some with two), tags on every fifth subject, and a
/// tagged subject with no template.
fn filled(config: IndexConfig, rows: usize) -> FlatIndex {
    let index = FlatIndex::with_config(config);
    let mut rng = StdRng::seed_from_u64(5);
    for i in 0..rows {
        let subject = format!("subject-{}", i / 2);
        index.insert(Template {
            tenant_id: TENANT.into(),
            subject_id: subject,
            sample_id: format!("sample-{i}"),
            embedding: unit(&mut rng),
        });
    }
    for s in (0..rows / 2).step_by(5) {
        index.set_subject_tags(TENANT, &format!("subject-{s}"), &["vip".to_owned(), format!("g{}", s % 3)]);
    }
    index.set_subject_tags(TENANT, "no-face-yet", &["vip".to_owned()]);
    index.wait_for_rebuilds();
    index
}

/// What the index answers: each query's hits, unfiltered and filtered.
fn answers(index: &FlatIndex) -> Vec<Vec<(String, String, i64)>> {
    let mut rng = StdRng::seed_from_u64(9);
    let mut out = Vec::new();
    for q in 0..30 {
        let query = unit(&mut rng);
        let tags: Vec<String> = match q % 3 {
            0 => Vec::new(),
            1 => vec!["vip".into()],
            _ => vec!["g1".into(), "g2".into()],
        };
        let hits = index.search_tagged(TENANT, &query, 10, &tags);
        // Scores to 1e-4: a partitioned row comes back from its int8 codes.
        out.push(hits.into_iter().map(|h| (h.subject_id, h.sample_id, (h.similarity * 1e4).round() as i64)).collect());
    }
    out
}

fn snapshot(index: &FlatIndex) -> Vec<u8> {
    let mut bytes = Vec::new();
    let rows = index.write_snapshot(TENANT, "m@1", 42, &mut bytes).expect("write").expect("tenant");
    assert_eq!(rows as usize, index.len(TENANT));
    bytes
}

fn restore(config: IndexConfig, bytes: &[u8]) -> (FlatIndex, std::io::Result<u64>) {
    let index = FlatIndex::with_config(config);
    let read = index.read_snapshot(&mut &bytes[..], bytes.len() as u64, &|h| h.model_id == "m@1").map(|(h, rows)| {
        assert_eq!((h.tenant_id.as_str(), h.position, h.dim), (TENANT, 42, DIM));
        rows
    });
    index.wait_for_rebuilds();
    (index, read)
}

#[test]
fn a_flat_index_comes_back_the_same() {
    let config = IndexConfig { kind: IndexKind::Flat, ..IndexConfig::default() };
    let index = filled(config, 400);
    assert!(index.partition(TENANT).is_none());
    let (restored, read) = restore(config, &snapshot(&index));
    assert_eq!(read.expect("restore"), 400);
    assert_eq!(answers(&restored), answers(&index));
    // The tagged subject without a template kept its tag: a template added now is found by it.
    let probe = vec![1.0 / (DIM as f32).sqrt(); DIM];
    for i in [&index, &restored] {
        i.insert(Template {
            tenant_id: TENANT.into(),
            subject_id: "no-face-yet".into(),
            sample_id: "late".into(),
            embedding: probe.clone(),
        });
    }
    assert_eq!(restored.search_tagged(TENANT, &probe, 1, &["vip".to_owned()])[0].subject_id, "no-face-yet");
}

#[test]
fn a_partitioned_index_comes_back_with_its_lists_and_fresh_rows() {
    let index = filled(partitioned(), 3_000);
    let lists = index.partition(TENANT).expect("partitioned").lists;
    assert!(lists > 10, "{lists}");
    // Rows added after training sit in the fresh list; they must come back there, found.
    let mut rng = StdRng::seed_from_u64(77);
    for i in 0..20 {
        index.insert(Template {
            tenant_id: TENANT.into(),
            subject_id: format!("late-{i}"),
            sample_id: format!("late-sample-{i}"),
            embedding: unit(&mut rng),
        });
    }
    // Removals move rows within their lists: the restored lists hold the rows in another order.
    for s in (0..1_500).step_by(7) {
        index.remove_subject(TENANT, &format!("subject-{s}"));
    }
    let kept = index.len(TENANT);
    let bytes = snapshot(&index);
    let (restored, read) = restore(partitioned(), &bytes);
    assert_eq!(read.expect("restore") as usize, kept);
    assert_eq!(restored.partition(TENANT).expect("partitioned").lists, lists, "the lists were not learnt again");
    assert_eq!(answers(&restored), answers(&index));
    let mut rng = StdRng::seed_from_u64(77);
    for i in 0..20 {
        let hits = restored.search(TENANT, &unit(&mut rng), 1);
        assert_eq!(hits[0].subject_id, format!("late-{i}"));
    }
}

#[test]
fn a_snapshot_cut_short_or_with_a_changed_byte_is_refused_and_changes_nothing() {
    let bytes = snapshot(&filled(partitioned(), 1_500));
    let mut rng = StdRng::seed_from_u64(3);
    let mut cuts: Vec<usize> = (0..40).map(|_| rng.gen_range(0..bytes.len())).collect();
    cuts.extend([0, 8, bytes.len() - 5, bytes.len() - 4, bytes.len() - 1]);
    for cut in cuts {
        let (index, read) = restore(partitioned(), &bytes[..cut]);
        assert!(read.is_err(), "cut at {cut} of {} was loaded", bytes.len());
        assert_eq!(index.len(TENANT), 0, "cut at {cut}");
    }
    for _ in 0..60 {
        let mut damaged = bytes.clone();
        let at = rng.gen_range(0..damaged.len());
        damaged[at] ^= 1 << rng.gen_range(0..8);
        let (index, read) = restore(partitioned(), &damaged);
        assert!(read.is_err(), "a flip at {at} of {} was loaded", bytes.len());
        assert_eq!(index.len(TENANT), 0, "flip at {at}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(restore(partitioned(), &longer).1.is_err());
}

/// A snapshot that lists one sample twice (its checksum made to match) is damage: refused,
/// and with many batches of rows behind the bad one, refused without the restoring threads
/// waiting on each other forever.
#[test]
fn a_snapshot_listing_a_sample_twice_is_refused() {
    let config = IndexConfig { kind: IndexKind::Flat, ..IndexConfig::default() };
    let mut bytes = snapshot(&filled(config, 30_000));
    let at = bytes.windows(9).position(|w| w == b"sample-11").expect("sample-11 in the snapshot");
    bytes[at..at + 9].copy_from_slice(b"sample-10");
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    let (index, read) = restore(config, &bytes);
    let error = read.expect_err("a sample listed twice was loaded");
    assert!(error.kind() == std::io::ErrorKind::InvalidData && error.to_string().contains("twice"), "{error}");
    assert_eq!(index.len(TENANT), 0);
}

#[test]
fn a_snapshot_of_another_model_is_not_read() {
    let bytes = snapshot(&filled(IndexConfig::default(), 100));
    let index = FlatIndex::new();
    let read = index.read_snapshot(&mut &bytes[..], bytes.len() as u64, &|h| h.model_id == "other@1");
    assert!(read.is_err());
    assert_eq!(index.len(TENANT), 0);
}
