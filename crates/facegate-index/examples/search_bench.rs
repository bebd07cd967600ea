//! Times top-10 search over random 512-d unit vectors.
//!
//! `cargo run --release -p facegate-index --example search_bench [-- SIZES...]`
//! (sizes default to 10000 100000; add `RUSTFLAGS="-C target-cpu=native"` to compare AVX2).

use std::hint::black_box;
use std::time::{Duration, Instant};

use facegate_core::{Index, Template};
use facegate_index::{dot, FlatIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 512;
const SAMPLES_PER_SUBJECT: usize = 2;

fn random_unit(rng: &mut StdRng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn naive_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn summarize(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    format!(
        "median {:.3} ms, mean {:.3} ms, p95 {:.3} ms, min {:.3} ms ({} runs)",
        ms(times[times.len() / 2]),
        ms(mean),
        ms(times[times.len() * 95 / 100]),
        ms(times[0]),
        times.len()
    )
}

fn main() {
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
        if args.is_empty() {
            vec![10_000, 100_000]
        } else {
            args
        }
    };
    let mut rng = StdRng::seed_from_u64(42);
    let queries: Vec<Vec<f32>> = (0..64).map(|_| random_unit(&mut rng)).collect();

    for &n in &sizes {
        let index = FlatIndex::new();
        let started = Instant::now();
        let mut raw = Vec::with_capacity(n * DIM);
        for i in 0..n {
            let embedding = random_unit(&mut rng);
            raw.extend_from_slice(&embedding);
            index.insert(Template {
                tenant_id: "bench".into(),
                subject_id: format!("subject-{}", i / SAMPLES_PER_SUBJECT),
                sample_id: format!("sample-{i}"),
                embedding,
            });
        }
        println!("{n} templates × {DIM}-d ({} subjects), built in {:.2?}", n / SAMPLES_PER_SUBJECT, started.elapsed());

        for _ in 0..5 {
            black_box(index.search("bench", &queries[0], 10));
        }
        let runs = if n <= 20_000 { 400 } else { 60 };
        let times: Vec<Duration> = (0..runs)
            .map(|i| {
                let q = &queries[i % queries.len()];
                let t = Instant::now();
                black_box(index.search("bench", black_box(q), 10));
                t.elapsed()
            })
            .collect();
        println!("  FlatIndex::search top-10:  {}", summarize(times));

        // The scan alone, with the chunked and the naive dot product, to show what the kernel
        // contributes against the per-subject and heap bookkeeping.
        for (name, f) in [("dot (16 lanes)", dot as fn(&[f32], &[f32]) -> f32), ("naive zip-sum ", naive_dot)] {
            let times: Vec<Duration> = (0..runs.min(100))
                .map(|i| {
                    let q = &queries[i % queries.len()];
                    let t = Instant::now();
                    let mut best = f32::MIN;
                    for v in raw.chunks_exact(DIM) {
                        best = best.max(f(black_box(v), q));
                    }
                    black_box(best);
                    t.elapsed()
                })
                .collect();
            println!("  scan only, {name}: {}", summarize(times));
        }
        let gbytes = (n * DIM * 4) as f64 / 1e9;
        println!("  gallery size {:.1} MB", gbytes * 1e3);
    }
}
