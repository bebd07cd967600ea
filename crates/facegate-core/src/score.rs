//! The one place where cosine similarity becomes a score.
//!
//! The NEC dialect speaks integer scores 0–9999 and miiCloud a `match_confidence` in 0–1
//! (score / 10000). A calibration is a monotonic piecewise-linear map from similarity to
//! score, measured per model pack so that a score means a false-match rate:
//! `score = 3000 + 1000 · log10(1 / FMR)`, so 7000 ⇔ FMR 1e-4.

use serde::{Deserialize, Serialize};

pub const MAX_SCORE: u32 = 9999;

/// Knots `(similarity, score)` with strictly increasing similarity and non-decreasing score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub knots: Vec<(f32, f32)>,
}

impl Calibration {
    /// Checks the knots describe a monotonic map.
    pub fn new(knots: Vec<(f32, f32)>) -> Result<Self, String> {
        if knots.len() < 2 {
            return Err("a calibration needs at least two knots".into());
        }
        for pair in knots.windows(2) {
            let ((s0, v0), (s1, v1)) = (pair[0], pair[1]);
            if s1 <= s0 || v1 < v0 {
                return Err(format!("calibration knots must increase: ({s0},{v0}) then ({s1},{v1})"));
            }
        }
        if knots.iter().any(|&(s, v)| !s.is_finite() || !(0.0..=MAX_SCORE as f32).contains(&v)) {
            return Err("calibration scores must lie in 0..=9999".into());
        }
        Ok(Self { knots })
    }

    /// Score in 0..=9999; monotonic non-decreasing in `similarity`.
    pub fn score(&self, similarity: f32) -> u32 {
        let k = &self.knots;
        let first = k[0];
        let last = k[k.len() - 1];
        let value = if !similarity.is_finite() || similarity <= first.0 {
            first.1
        } else if similarity >= last.0 {
            last.1
        } else {
            let i = k.partition_point(|&(s, _)| s <= similarity);
            let (s0, v0) = k[i - 1];
            let (s1, v1) = k[i];
            v0 + (v1 - v0) * (similarity - s0) / (s1 - s0)
        };
        (value.round() as u32).min(MAX_SCORE)
    }

    /// miiCloud's `match_confidence`: the score over 10000, in 0..1.
    pub fn confidence(&self, similarity: f32) -> f64 {
        f64::from(self.score(similarity)) / 10_000.0
    }
}

/// `score = 3000 + 1000 · log10(1 / FMR)`.
pub fn score_for_fmr(fmr: f64) -> f64 {
    3000.0 + 1000.0 * (1.0 / fmr).log10()
}

/// False-match rates at which a fit places knots, when there are enough impostor pairs.
pub const FIT_FMRS: [f64; 6] = [0.5, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5];

/// Impostor pairs wanted above a threshold before its FMR is taken as measured.
const MIN_PAIRS_ABOVE: f64 = 10.0;

impl Calibration {
    /// Fits knots to impostor similarities so that a score means the FMR above.
    ///
    /// Knots sit at the measured similarity for each FMR of [`FIT_FMRS`] with at least ten
    /// impostor pairs above it. Past the last measured knot the tail is extrapolated: the
    /// impostor tail is close to exponential, so log10(FMR) is fitted as a straight line in
    /// similarity over the last three knots and followed up to 9999, capped at similarity 1.
    pub fn fit(impostors: &[f32]) -> Result<Self, String> {
        let mut sorted: Vec<f32> = impostors.iter().copied().filter(|s| s.is_finite()).collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let n = sorted.len() as f64;
        let mut measured: Vec<(f32, f32)> = Vec::new();
        for fmr in FIT_FMRS {
            if fmr * n < MIN_PAIRS_ABOVE {
                break;
            }
            // Exactly `above` pairs score at or over the midpoint between ranks.
            let above = (fmr * n).round() as usize;
            let threshold = (sorted[above - 1] + sorted[above]) / 2.0;
            let score = score_for_fmr(fmr) as f32;
            if measured.last().is_some_and(|&(s, _)| threshold <= s) {
                continue;
            }
            measured.push((threshold, score));
        }
        if measured.len() < 3 {
            return Err(format!("{} impostor pairs are too few to fit a calibration", sorted.len()));
        }
        let tail = &measured[measured.len() - 3..];
        let mean_s = tail.iter().map(|k| k.0).sum::<f32>() / 3.0;
        let mean_v = tail.iter().map(|k| k.1).sum::<f32>() / 3.0;
        let cov: f32 = tail.iter().map(|k| (k.0 - mean_s) * (k.1 - mean_v)).sum();
        let var: f32 = tail.iter().map(|k| (k.0 - mean_s).powi(2)).sum();
        let slope = if var > 0.0 { cov / var } else { 0.0 };
        if slope <= 0.0 {
            return Err("impostor tail does not fall with similarity".into());
        }
        let mut knots = vec![(-1.0f32, 0.0f32)];
        if measured[0].0 <= -1.0 {
            knots.clear();
        }
        knots.extend(measured.iter().copied());
        let &(last_s, last_v) = knots.last().ok_or("no knots")?;
        let top_s = last_s + (MAX_SCORE as f32 - last_v) / slope;
        if top_s < 1.0 {
            knots.push((top_s, MAX_SCORE as f32));
            knots.push((1.0, MAX_SCORE as f32));
        } else if last_s < 1.0 {
            knots.push((1.0, (last_v + slope * (1.0 - last_s)).min(MAX_SCORE as f32)));
        }
        Calibration::new(knots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Calibration {
        Calibration::new(vec![(-1.0, 0.0), (0.2, 4000.0), (0.35, 7000.0), (1.0, 9999.0)]).expect("valid")
    }

    #[test]
    fn interpolates_between_knots() {
        let c = sample();
        assert_eq!(c.score(0.35), 7000);
        assert_eq!(c.score(0.275), 5500);
        assert_eq!(c.score(-5.0), 0);
        assert_eq!(c.score(2.0), 9999);
        assert_eq!(c.score(f32::NAN), 0);
    }

    #[test]
    fn is_monotonic() {
        let c = sample();
        let mut last = 0;
        for i in -100..=100 {
            let s = c.score(i as f32 / 100.0);
            assert!(s >= last);
            last = s;
        }
        assert!((c.confidence(0.35) - 0.7).abs() < 1e-9);
    }

    #[test]
    fn fit_puts_knots_at_measured_false_match_rates() {
        // Deterministic "impostor" similarities spread uniformly over [-0.3, 0.3).
        let n = 200_000usize;
        let sims: Vec<f32> = (0..n).map(|i| -0.3 + 0.6 * (i as f32 / n as f32)).collect();
        let c = Calibration::fit(&sims).expect("fit");
        let fmr_at = |t: f32| sims.iter().filter(|&&s| s >= t).count() as f64 / n as f64;
        for target in [1e-1, 1e-2, 1e-3] {
            let score = score_for_fmr(target).round() as u32;
            // The lowest similarity reaching the score has the target FMR.
            let t = (0..=60_000).map(|i| -0.3 + i as f32 * 1e-5).find(|&t| c.score(t) >= score).expect("reached");
            let measured = fmr_at(t);
            assert!((measured / target - 1.0).abs() < 0.05, "target {target} measured {measured}");
        }
        assert_eq!(c.score(1.0), 9999);
        assert!(Calibration::fit(&sims[..20]).is_err());
    }

    #[test]
    fn rejects_non_monotonic_knots() {
        assert!(Calibration::new(vec![(0.0, 10.0), (0.0, 20.0)]).is_err());
        assert!(Calibration::new(vec![(0.0, 10.0), (0.5, 5.0)]).is_err());
        assert!(Calibration::new(vec![(0.0, 10.0)]).is_err());
    }
}
