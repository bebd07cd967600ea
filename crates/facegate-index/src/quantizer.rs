//! [`Quantizer`]: the partition of a tenant's vectors into lists, learnt by k-means in two
//! levels.
//!
//! A flat k-means over thousands of centroids costs, to train and to assign every row, the rows
//! times the centroids times the length: at 10M rows and 4,096 centroids of 512 values, 2·10¹³
//! multiply-adds, hours on two cores. Two levels cut that to the square root: `k1` coarse
//! centroids, each with up to `k2` fine centroids learnt on the rows of its coarse cell, so a
//! row is placed with `k1 + k2` dot products instead of `k1 · k2`. Each fine centroid is one
//! list. A search ranks the coarse centroids, then the fine ones of the best few coarse cells,
//! and probes the best lists; a row placed in the "wrong" coarse cell (the greedy descent is not
//! the exact nearest fine centroid) is still found, since a search looks into several.
//!
//! Centroids are unit length (spherical k-means), since rows are compared by dot product.

use std::thread;

use crate::kernels::dot;

/// Lloyd iterations of each k-means. Most of the gain of k-means over its random start comes in
/// the first few iterations; ten keeps training at 10M rows of 512 values to seconds.
const ITERATIONS: usize = 10;
/// Training rows per centroid, at most: more sharpens the centroids little (Faiss trains on
/// 39–256 per centroid) and costs time and memory in step.
pub const TRAINING_ROWS_PER_LIST: usize = 64;
/// Lists per coarse cell, at least (more once there are [`MAX_COARSE_CELLS`]). The coarse
/// level must have at least as many cells as the rows have natural clusters, or the rows of a
/// cluster that got no centroid of its own scatter over many cells, and a search for them must
/// read many: measured on the synthetic population of `facegate bench search`, whose 256 groups
/// want 256 cells or more, which two lists per cell give from a million rows on.
const LISTS_PER_COARSE_CELL: usize = 2;
/// Coarse cells at most: placing a row costs a dot product with each, and at 512 cells
/// placing 10M rows of 512 values is about 3·10¹² multiply-adds, a few minutes on two cores.
const MAX_COARSE_CELLS: usize = 512;
/// Coarse cells a search ranks the fine centroids of, at least: enough that a query near a cell
/// boundary still reaches the lists on the other side.
const MIN_BRANCHES: usize = 8;

/// Coarse cells whose fine centroids a row is placed among. The nearest coarse centroid's
/// nearest fine centroid is not always the nearest fine centroid; looking into three cells
/// makes a row's list the one a search for that very vector ranks first among those cells,
/// which is what lets a write be found by the next search for the same face.
const ASSIGN_BRANCHES: usize = 3;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Quantizer {
    dim: usize,
    /// `k1 × dim`: the coarse centroids.
    coarse: Vec<f32>,
    /// The fine centroids, `dim` values each, those of coarse cell `c` at rows
    /// `offsets[c]..offsets[c + 1]`. The fine centroid's row is its list's number.
    fine: Vec<f32>,
    offsets: Vec<u32>,
}

impl Quantizer {
    /// One list holding everything: what a search has before it is trained.
    pub fn single(dim: usize) -> Self {
        Self { dim, coarse: vec![0.0; dim], fine: vec![0.0; dim], offsets: vec![0, 1] }
    }

    /// Learns about `lists` lists from `sample` (rows of `dim` values, row after row), on up to
    /// `threads` threads. Fewer lists come out when the sample is too small to fill them.
    pub fn train(sample: &[f32], dim: usize, lists: usize, threads: usize, seed: u64) -> Self {
        let rows = sample.len().checked_div(dim).unwrap_or(0);
        if rows == 0 || lists <= 1 {
            return Self::single(dim);
        }
        let lists = lists.min(rows);
        let k1 = lists.div_ceil(LISTS_PER_COARSE_CELL).clamp(1, MAX_COARSE_CELLS);
        let k2 = lists.div_ceil(k1);
        let mut rng = SplitMix(seed);
        let coarse = kmeans(sample, dim, k1, threads, &mut rng);
        let k1 = coarse.len() / dim;
        // The sample's rows by coarse cell, then k-means within each.
        let assignment = assign_all(sample, dim, &coarse, threads);
        let mut cells: Vec<Vec<f32>> = vec![Vec::new(); k1];
        for (row, &cell) in sample.chunks_exact(dim).zip(&assignment) {
            cells[cell as usize].extend_from_slice(row);
        }
        let mut fine = Vec::with_capacity(k1 * k2 * dim);
        let mut offsets = vec![0u32];
        for (cell, members) in cells.iter().enumerate() {
            let count = members.len() / dim;
            // A cell with few rows gets fewer lists: a list needs rows to place its centroid.
            let want = k2.min(count.div_ceil(4)).max(1);
            let centroids = if count == 0 {
                coarse[cell * dim..(cell + 1) * dim].to_vec()
            } else {
                kmeans(members, dim, want, threads, &mut rng)
            };
            fine.extend_from_slice(&centroids);
            offsets.push((fine.len() / dim) as u32);
        }
        Self { dim, coarse, fine, offsets }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The centroids as a snapshot stores them: coarse, fine, and the fine rows of each coarse
    /// cell (`offsets`).
    pub fn parts(&self) -> (&[f32], &[f32], &[u32]) {
        (&self.coarse, &self.fine, &self.offsets)
    }

    /// A quantizer from [`Self::parts`]; `None` unless they fit together (whole rows of `dim`,
    /// one offset past each coarse cell, rising from 0 to the fine rows), so that a damaged
    /// snapshot cannot make a search index out of bounds.
    pub fn from_parts(dim: usize, coarse: Vec<f32>, fine: Vec<f32>, offsets: Vec<u32>) -> Option<Self> {
        let whole = |v: &[f32]| dim > 0 && !v.is_empty() && v.len().is_multiple_of(dim);
        if !whole(&coarse) || !whole(&fine) || offsets.len() != coarse.len() / dim + 1 || offsets[0] != 0 {
            return None;
        }
        let rising = offsets.windows(2).all(|w| w[0] <= w[1]);
        (rising && offsets.last().is_some_and(|&end| end as usize == fine.len() / dim)).then_some(Self {
            dim,
            coarse,
            fine,
            offsets,
        })
    }

    pub fn lists(&self) -> usize {
        self.offsets.last().map_or(0, |&n| n as usize)
    }

    /// The list of `vector`: the nearest fine centroid of its [`ASSIGN_BRANCHES`] nearest coarse
    /// cells.
    pub fn assign(&self, vector: &[f32]) -> u32 {
        let dim = self.dim.max(1);
        let mut cells: Vec<(f32, usize)> = self.coarse.chunks_exact(dim).map(|c| dot(c, vector)).zip(0..).collect();
        let branches = ASSIGN_BRANCHES.min(cells.len());
        if branches < cells.len() {
            cells.select_nth_unstable_by(branches, |a, b| b.0.total_cmp(&a.0));
        }
        let mut best = (f32::NEG_INFINITY, 0u32);
        for &(_, cell) in &cells[..branches] {
            for list in self.offsets[cell]..self.offsets[cell + 1] {
                let s = dot(&self.fine[list as usize * dim..(list as usize + 1) * dim], vector);
                if s > best.0 || (s == best.0 && list < best.1) {
                    best = (s, list);
                }
            }
        }
        best.1
    }

    /// Lists in the order a search should look into them, best first: the fine centroids of the
    /// `branches` best coarse cells (enough for `want` lists, at least [`MIN_BRANCHES`]) ranked by
    /// their similarity to `query`.
    pub fn ranked_lists(&self, query: &[f32], want: usize, out: &mut Vec<u32>) {
        out.clear();
        let k1 = self.coarse.len() / self.dim.max(1);
        let mut cells: Vec<(f32, usize)> =
            self.coarse.chunks_exact(self.dim.max(1)).map(|c| dot(c, query)).zip(0..).collect();
        cells.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mean_fine = self.lists().div_ceil(k1.max(1)).max(1);
        let branches = (2 * want.div_ceil(mean_fine)).max(MIN_BRANCHES).min(k1);
        let mut lists: Vec<(f32, u32)> = Vec::new();
        for &(_, cell) in &cells[..branches] {
            for list in self.offsets[cell]..self.offsets[cell + 1] {
                let centroid = &self.fine[list as usize * self.dim..(list as usize + 1) * self.dim];
                lists.push((dot(centroid, query), list));
            }
        }
        lists.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        out.extend(lists.iter().map(|&(_, list)| list));
        // The cells not branched into come last, in coarse order, so that a search widened by a
        // tag filter can go on into them.
        for &(_, cell) in &cells[branches..] {
            out.extend(self.offsets[cell]..self.offsets[cell + 1]);
        }
    }
}

/// The row of `centroids` (rows of `dim`) with the largest dot product with `vector`.
fn nearest(centroids: &[f32], dim: usize, vector: &[f32]) -> usize {
    let mut best = (f32::NEG_INFINITY, 0);
    for (i, c) in centroids.chunks_exact(dim.max(1)).enumerate() {
        let s = dot(c, vector);
        if s > best.0 {
            best = (s, i);
        }
    }
    best.1
}

/// Each row's nearest centroid, the rows split over `threads`.
fn assign_all(rows: &[f32], dim: usize, centroids: &[f32], threads: usize) -> Vec<u32> {
    let count = rows.len() / dim;
    let mut out = vec![0u32; count];
    let per_thread = count.div_ceil(threads.max(1)).max(1);
    thread::scope(|scope| {
        for (part, out) in out.chunks_mut(per_thread).enumerate() {
            let rows = &rows[part * per_thread * dim..];
            scope.spawn(move || {
                for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
                    *o = nearest(centroids, dim, row) as u32;
                }
            });
        }
    });
    out
}

/// Spherical k-means: `k` unit centroids of the rows, started from `k` distinct rows. A
/// centroid left with no row restarts at a row of the largest cluster, so none is wasted.
fn kmeans(rows: &[f32], dim: usize, k: usize, threads: usize, rng: &mut SplitMix) -> Vec<f32> {
    let count = rows.len() / dim;
    let k = k.min(count).max(1);
    let mut centroids = seeds(rows, dim, k, rng);
    for _ in 0..ITERATIONS {
        let assignment = assign_all(rows, dim, &centroids, threads);
        let mut sums = vec![0.0f32; k * dim];
        let mut sizes = vec![0usize; k];
        for (row, &c) in rows.chunks_exact(dim).zip(&assignment) {
            let c = c as usize;
            sizes[c] += 1;
            for (s, x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row) {
                *s += x;
            }
        }
        let largest = (0..k).max_by_key(|&c| sizes[c]).unwrap_or(0);
        for c in 0..k {
            let target = &mut centroids[c * dim..(c + 1) * dim];
            if sizes[c] == 0 {
                // Restart at a random member of the largest cluster.
                let members: Vec<usize> = (0..count).filter(|&r| assignment[r] as usize == largest).collect();
                if let Some(&r) = members.get(rng.below(members.len().max(1))) {
                    target.copy_from_slice(&rows[r * dim..(r + 1) * dim]);
                }
                continue;
            }
            target.copy_from_slice(&sums[c * dim..(c + 1) * dim]);
            normalize(target);
        }
    }
    centroids
}

/// k-means++ seeds: each next seed drawn with probability growing with its distance from the
/// seeds so far. Random rows as seeds leave some clusters without one when the clusters are
/// weak next to the spread within them, as face embeddings' are; Lloyd's iterations never
/// gather such a cluster again, and its rows stay scattered over many lists.
fn seeds(rows: &[f32], dim: usize, k: usize, rng: &mut SplitMix) -> Vec<f32> {
    let count = rows.len() / dim;
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.below(count);
    centroids.extend_from_slice(&rows[first * dim..(first + 1) * dim]);
    // Squared distance of each row to its nearest seed: 2 - 2·similarity for unit rows.
    let mut distance: Vec<f32> =
        rows.chunks_exact(dim).map(|r| (2.0 - 2.0 * dot(r, &centroids[..dim])).max(0.0)).collect();
    while centroids.len() < k * dim {
        let total: f64 = distance.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut target = rng.next_u64() as f64 / u64::MAX as f64 * total;
            let mut pick = count - 1;
            for (i, &d) in distance.iter().enumerate() {
                target -= f64::from(d);
                if target <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            rng.below(count)
        };
        let seed = rows[pick * dim..(pick + 1) * dim].to_vec();
        for (d, r) in distance.iter_mut().zip(rows.chunks_exact(dim)) {
            *d = d.min((2.0 - 2.0 * dot(r, &seed)).max(0.0));
        }
        centroids.extend_from_slice(&seed);
    }
    centroids
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// `k` distinct indices below `count` (all of them when `k >= count`), by a partial shuffle.
pub fn sample_indices(count: usize, k: usize, rng: &mut SplitMix) -> Vec<usize> {
    if k >= count {
        return (0..count).collect();
    }
    // Floyd's algorithm: k draws, no array of `count`.
    let mut chosen = std::collections::HashSet::with_capacity(k);
    let mut out = Vec::with_capacity(k);
    for j in count - k..count {
        let t = rng.below(j + 1);
        let pick = if chosen.contains(&t) { j } else { t };
        chosen.insert(pick);
        out.push(pick);
    }
    out
}

/// A small seeded generator: training must not depend on a random-number crate at run time, and
/// the same rows must give the same lists, so that a test or a benchmark can be repeated.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform below `n` (> 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clustered(rng: &mut SplitMix, clusters: usize, per: usize, dim: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
        let gaussian = |rng: &mut SplitMix| (rng.next_u64() as f64 / u64::MAX as f64 - 0.5) as f32;
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| {
                let mut c: Vec<f32> = (0..dim).map(|_| gaussian(rng)).collect();
                normalize(&mut c);
                c
            })
            .collect();
        let mut rows = Vec::new();
        for c in &centres {
            for _ in 0..per {
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.05 * gaussian(rng)).collect();
                normalize(&mut v);
                rows.extend(v);
            }
        }
        (rows, centres)
    }

    #[test]
    fn rows_of_one_cluster_share_a_list_and_search_ranks_it_first() {
        let mut rng = SplitMix(5);
        let dim = 24;
        let (rows, centres) = clustered(&mut rng, 30, 40, dim);
        let q = Quantizer::train(&rows, dim, 30, 2, 1);
        assert!(q.lists() >= 20 && q.lists() <= 36, "{} lists", q.lists());
        let mut ranked = Vec::new();
        for (i, centre) in centres.iter().enumerate() {
            let members: std::collections::HashSet<u32> =
                rows[i * 40 * dim..(i + 1) * 40 * dim].chunks_exact(dim).map(|r| q.assign(r)).collect();
            q.ranked_lists(centre, 1, &mut ranked);
            assert!(members.contains(&ranked[0]), "cluster {i}: best list {} not among {members:?}", ranked[0]);
            let mut every = ranked.clone();
            every.sort_unstable();
            every.dedup();
            assert_eq!(every.len(), q.lists(), "every list is ranked once");
        }
    }

    #[test]
    fn tiny_or_empty_samples_give_one_list_or_fewer_lists() {
        assert_eq!(Quantizer::train(&[], 8, 100, 2, 1).lists(), 1);
        let rows: Vec<f32> = (0..5 * 4).map(|i| (i as f32).sin()).collect();
        let q = Quantizer::train(&rows, 4, 100, 2, 1);
        assert!(q.lists() <= 5, "{}", q.lists());
        assert!((q.assign(&rows[..4]) as usize) < q.lists());
    }

    #[test]
    fn sample_indices_are_distinct_and_in_range() {
        let mut rng = SplitMix(9);
        let picks = sample_indices(1000, 300, &mut rng);
        let set: std::collections::HashSet<_> = picks.iter().collect();
        assert_eq!((picks.len(), set.len()), (300, 300));
        assert!(picks.iter().all(|&i| i < 1000));
        assert_eq!(sample_indices(5, 9, &mut rng), vec![0, 1, 2, 3, 4]);
    }
}
