//! The inner loops of a search: f16 rows scored against an f32 query, and Hamming distances
//! between sign sketches.
//!
//! Both are plain Rust, written so that the compiler vectorises them. The sketch scan is
//! compiled twice: once for the baseline x86-64 the binary targets, and once with POPCNT and
//! AVX2, chosen at run time, since without POPCNT a 64-bit popcount is a dozen instructions and
//! the scan is the whole cost of a search over a million templates.

use half::f16;

/// Accumulators kept in flight. Float addition is not associative, so the compiler will not
/// split one running sum across SIMD lanes by itself; 16 independent sums give it two AVX (or
/// four SSE) registers of lanes plus enough independent chains to hide the add latency.
const LANES: usize = 16;

/// Dot product of the common prefix of `a` and `b` (cosine similarity for unit vectors).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has just been checked for the features the function is built with.
        #[allow(unsafe_code)]
        unsafe {
            return dot_fma(a, b);
        }
    }
    dot_portable(a, b)
}

/// The same loop in 256-bit registers with fused multiply-adds: placing rows in a partition is
/// billions of these, and a multiply-add is one instruction where a multiply and an add are two.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b, |sum, x, y| x.mul_add(y, sum))
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b, |sum, x, y| sum + x * y)
}

/// The dot product over [`LANES`] running sums, each step `step(sum, x, y)`: a multiply and an
/// add, or one fused multiply-add where the CPU has it.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32], step: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s = step(*s, x, y);
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    sum_lanes(acc) + tail
}

/// Pairwise reduction of the accumulators, which also vectorises.
#[inline(always)]
fn sum_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

/// Dot product of an f16 row with an f32 query of the same length (the common prefix
/// otherwise).
#[inline]
pub fn dot_f16(row: &[f16], query: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has just been checked for the features the function is built with.
        #[allow(unsafe_code)]
        unsafe {
            return dot_f16_f16c(row, query);
        }
    }
    dot_f16_portable(row, query)
}

/// Eight values at a time: F16C widens them in one instruction, FMA multiplies and adds; four
/// accumulators hide the FMA latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_f16c(row: &[f16], query: &[f32]) -> f32 {
    use std::arch::x86_64::{
        __m128i, _mm256_add_ps, _mm256_castps256_ps128, _mm256_cvtph_ps, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_setzero_ps, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm_loadu_si128,
    };
    let n = row.len().min(query.len());
    let blocks = n / 32;
    let mut acc = [_mm256_setzero_ps(); 4];
    for block in 0..blocks {
        for (lane, acc) in acc.iter_mut().enumerate() {
            let start = block * 32 + lane * 8;
            let (r, q) = (&row[start..start + 8], &query[start..start + 8]);
            // SAFETY: both slices hold exactly 8 values, the width of each unaligned load.
            #[allow(unsafe_code)]
            let (halves, floats) =
                unsafe { (_mm_loadu_si128(r.as_ptr().cast::<__m128i>()), _mm256_loadu_ps(q.as_ptr())) };
            *acc = _mm256_fmadd_ps(_mm256_cvtph_ps(halves), floats, *acc);
        }
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let quad = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
    let pair = _mm_hadd_ps(quad, quad);
    let total = _mm_cvtss_f32(_mm_hadd_ps(pair, pair));
    let done = blocks * 32;
    total + dot_f16_portable(&row[done..n], &query[done..n])
}

/// Dot product of an int8 row with an f32 query of the same length (the common prefix
/// otherwise); the caller multiplies by the row's scale.
#[inline]
pub fn dot_i8(row: &[i8], query: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been checked for the feature the function is built with.
        #[allow(unsafe_code)]
        unsafe {
            return dot_i8_avx2(row, query);
        }
    }
    dot_i8_portable(row, query)
}

/// The portable loop, which the compiler widens to 256-bit registers here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_i8_avx2(row: &[i8], query: &[f32]) -> f32 {
    dot_i8_portable(row, query)
}

#[inline(always)]
fn dot_i8_portable(row: &[i8], query: &[f32]) -> f32 {
    let n = row.len().min(query.len());
    let (a, b) = (&row[..n], &query[..n]);
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += f32::from(x) * y;
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, y)| f32::from(x) * y).sum();
    sum_lanes(acc) + tail
}

/// Asks the CPU to start loading `values` into cache: the exact stage reads rows scattered
/// over a gigabyte, and waiting for each one in turn would cost more than scoring it.
#[inline(always)]
pub fn prefetch<T>(values: &[T]) {
    // Every cache line the values touch, from the one holding their first byte: a 128-byte
    // row that does not start on a line boundary spans three lines, not two.
    #[cfg(target_arch = "x86_64")]
    {
        let start = values.as_ptr() as usize;
        let end = start + std::mem::size_of_val(values);
        let mut line = start & !63;
        while line < end {
            // SAFETY: a prefetch is a hint that never faults, whatever the address.
            #[allow(unsafe_code)]
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line as *const i8);
            }
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// 2^112: rebiases an f16 exponent (bias 15) shifted into f32 position to f32's bias (127).
const F16_EXPONENT_REBIAS: f32 = 5.192_297e33;

/// Widens f16 bits to f32 with integer and one float multiply, which vectorises where a call
/// per value would not. Exact for zeros, subnormals and normal numbers; infinities and NaNs
/// become large finite values, so the index refuses non-finite templates.
#[inline(always)]
fn widen(h: u16) -> f32 {
    let h = u32::from(h);
    let magnitude = f32::from_bits((h & 0x7fff) << 13) * F16_EXPONENT_REBIAS;
    f32::from_bits(magnitude.to_bits() | ((h & 0x8000) << 16))
}

#[inline(always)]
fn dot_f16_portable(row: &[f16], query: &[f32]) -> f32 {
    let n = row.len().min(query.len());
    let (a, b) = (&row[..n], &query[..n]);
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += widen(x.to_bits()) * y;
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| widen(x.to_bits()) * y).sum();
    sum_lanes(acc) + tail
}

/// The values int8 `codes` times `scale` stand for.
pub fn decode_codes(codes: &[i8], scale: f32) -> Vec<f32> {
    codes.iter().map(|&c| f32::from(c) * scale).collect()
}

/// The sign sketch of a vector: bit `i` is set when component `i` is positive. The Hamming
/// distance between two sketches estimates the angle between the vectors.
pub fn sketch_into(vector: &[f32], out: &mut [u64]) {
    out.fill(0);
    for (i, &x) in vector.iter().enumerate() {
        if x > 0.0 {
            if let Some(word) = out.get_mut(i / 64) {
                *word |= 1 << (i % 64);
            }
        }
    }
}

/// The sign sketch of int8 codes (a zeroed `out`): bit `i` is set when code `i` is positive.
pub fn sketch_of_codes(codes: &[i8], out: &mut [u64]) {
    for (i, &c) in codes.iter().enumerate() {
        if c > 0 {
            if let Some(word) = out.get_mut(i / 64) {
                *word |= 1 << (i % 64);
            }
        }
    }
}

/// Which rows a search may return: those whose tag mask shares a bit with `any_of`.
#[derive(Clone, Copy)]
pub struct TagFilter<'a> {
    pub row_tags: &'a [u64],
    pub any_of: u64,
}

/// Writes, for each row of `sketches` (`query.len()` words per row), its Hamming distance to
/// `query`, or `u16::MAX` for a row the filter leaves out, and counts the distances in
/// `histogram` (indexed by distance, at least `64 · words + 1` long; left-out rows uncounted).
pub fn hamming_distances(
    sketches: &[u64],
    query: &[u64],
    filter: Option<TagFilter>,
    out: &mut [u16],
    histogram: &mut [u32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been checked for both features the function is built with.
        #[allow(unsafe_code)]
        unsafe {
            return hamming_distances_popcnt(sketches, query, filter, out, histogram);
        }
    }
    hamming_distances_portable(sketches, query, filter, out, histogram);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt,avx2")]
fn hamming_distances_popcnt(
    sketches: &[u64],
    query: &[u64],
    filter: Option<TagFilter>,
    out: &mut [u16],
    histogram: &mut [u32],
) {
    hamming_distances_portable(sketches, query, filter, out, histogram);
}

/// 512, 128 and 256 values, the packs' lengths, get a loop with the row width known at compile
/// time, which the compiler unrolls; other widths take the general loop.
#[inline(always)]
fn hamming_distances_portable(
    sketches: &[u64],
    query: &[u64],
    filter: Option<TagFilter>,
    out: &mut [u16],
    histogram: &mut [u32],
) {
    if let Ok(query) = <&[u64; 8]>::try_from(query) {
        distances_fixed(sketches, query, filter, out, histogram)
    } else if let Ok(query) = <&[u64; 2]>::try_from(query) {
        distances_fixed(sketches, query, filter, out, histogram)
    } else if let Ok(query) = <&[u64; 4]>::try_from(query) {
        distances_fixed(sketches, query, filter, out, histogram)
    } else {
        distances_any(sketches, query, filter, out, histogram)
    }
}

#[inline(always)]
fn distances_fixed<const W: usize>(
    sketches: &[u64],
    query: &[u64; W],
    filter: Option<TagFilter>,
    out: &mut [u16],
    histogram: &mut [u32],
) {
    let distance = |sketch: &[u64]| -> u16 {
        let mut d = 0u32;
        for w in 0..W {
            d += (sketch[w] ^ query[w]).count_ones();
        }
        d as u16
    };
    let rows = sketches.chunks_exact(W).zip(out.iter_mut());
    match filter {
        None => {
            for (sketch, out) in rows {
                let d = distance(sketch);
                *out = d;
                if let Some(h) = histogram.get_mut(d as usize) {
                    *h += 1;
                }
            }
        }
        Some(TagFilter { row_tags, any_of }) => {
            for ((sketch, out), &tags) in rows.zip(row_tags) {
                if tags & any_of == 0 {
                    *out = u16::MAX;
                    continue;
                }
                let d = distance(sketch);
                *out = d;
                if let Some(h) = histogram.get_mut(d as usize) {
                    *h += 1;
                }
            }
        }
    }
}

#[inline(always)]
fn distances_any(sketches: &[u64], query: &[u64], filter: Option<TagFilter>, out: &mut [u16], histogram: &mut [u32]) {
    let words = query.len();
    if words == 0 {
        out.fill(0);
        return;
    }
    for (row, (sketch, out)) in sketches.chunks_exact(words).zip(out.iter_mut()).enumerate() {
        let kept = filter.is_none_or(|f| f.row_tags.get(row).is_some_and(|t| t & f.any_of != 0));
        if !kept {
            *out = u16::MAX;
            continue;
        }
        let d: u32 = sketch.iter().zip(query).map(|(a, b)| (a ^ b).count_ones()).sum();
        *out = d as u16;
        if let Some(h) = histogram.get_mut(d as usize) {
            *h += 1;
        }
    }
}

/// Which rows of smallest sketch distance make up a budget of `budget`, from the distances'
/// `histogram`: every row closer than the returned cutoff, and the first `.1` rows at it.
pub fn sketch_cutoff(histogram: &[u32], budget: usize) -> (usize, usize) {
    let mut below = 0usize;
    for (d, &count) in histogram.iter().enumerate() {
        let count = count as usize;
        if below + count >= budget {
            return (d, budget - below);
        }
        below += count;
    }
    (histogram.len(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sketch_cutoff_takes_the_closest_rows_and_splits_the_last_distance() {
        // Distances 0..=4 held by 1, 0, 3, 2 and 5 rows.
        let histogram = [1, 0, 3, 2, 5];
        assert_eq!(sketch_cutoff(&histogram, 1), (0, 1));
        assert_eq!(sketch_cutoff(&histogram, 3), (2, 2));
        assert_eq!(sketch_cutoff(&histogram, 4), (2, 3));
        assert_eq!(sketch_cutoff(&histogram, 5), (3, 1));
        // A budget past every row takes them all.
        assert_eq!(sketch_cutoff(&histogram, 100), (5, 0));
    }

    #[test]
    fn dot_matches_the_naive_sum_for_every_length() {
        for n in 0..80 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[1.0]), 1.0);
    }

    #[test]
    fn widening_is_exact_for_every_finite_f16() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_finite() {
                assert_eq!(widen(bits).to_bits(), h.to_f32().to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn f16_rows_score_within_rounding_of_f32() {
        for n in [1, 5, 31, 32, 33, 127, 128, 129, 512] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() / (n as f32).sqrt()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() / (n as f32).sqrt()).collect();
            let row: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
            assert!((dot_f16(&row, &b) - dot(&a, &b)).abs() < 1e-3, "n={n}");
            assert!((dot_f16(&row, &b) - dot_f16_portable(&row, &b)).abs() < 1e-5, "n={n}");
        }
    }

    #[test]
    fn hamming_distances_count_differing_signs_and_honour_the_filter() {
        // The packs' lengths take loops of their own width; 130 takes the general one.
        for dim in [130usize, 128, 256, 512] {
            differing_signs_counted_at(dim);
        }
    }

    fn differing_signs_counted_at(dim: usize) {
        let words = dim.div_ceil(64);
        let a: Vec<f32> = (0..dim).map(|i| if i % 3 == 0 { 1.0 } else { -1.0 }).collect();
        let mut b = a.clone();
        for x in b.iter_mut().take(17) {
            *x = -*x;
        }
        let mut sketches = vec![0u64; 2 * words];
        sketch_into(&a, &mut sketches[..words]);
        sketch_into(&b, &mut sketches[words..]);
        let mut query = vec![0u64; words];
        sketch_into(&a, &mut query);
        let mut out = [0u16; 2];
        let mut histogram = vec![0u32; words * 64 + 1];
        hamming_distances(&sketches, &query, None, &mut out, &mut histogram);
        assert_eq!(out, [0, 17]);
        assert_eq!((histogram[0], histogram[17], histogram.iter().sum::<u32>()), (1, 1, 2));
        let filter = TagFilter { row_tags: &[0b01, 0b10], any_of: 0b110 };
        histogram.fill(0);
        hamming_distances(&sketches, &query, Some(filter), &mut out, &mut histogram);
        assert_eq!(out, [u16::MAX, 17]);
        assert_eq!(histogram.iter().sum::<u32>(), 1);
        hamming_distances_portable(&sketches, &query, Some(filter), &mut out, &mut histogram);
        assert_eq!(out, [u16::MAX, 17]);
    }

    #[test]
    fn the_512_bit_path_agrees_with_the_general_one() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let sketches: Vec<u64> = (0..8 * 50).map(|_| next()).collect();
        let query: Vec<u64> = (0..8).map(|_| next()).collect();
        let row_tags: Vec<u64> = (0..50).map(|i| i % 3).collect();
        let filter = Some(TagFilter { row_tags: &row_tags, any_of: 0b10 });
        let (mut fixed, mut any) = ([0u16; 50], [0u16; 50]);
        let (mut h1, mut h2) = (vec![0u32; 513], vec![0u32; 513]);
        hamming_distances(&sketches, &query, filter, &mut fixed, &mut h1);
        distances_any(&sketches, &query, filter, &mut any, &mut h2);
        assert_eq!((fixed, h1), (any, h2));
    }
}
