//! Recall of an index against exact search, by subject: shared by `facegate bench search`
//! (synthetic galleries) and `facegate eval index-recall` (real embeddings).

use facegate_core::SubjectHit;

/// One search as the index answered it beside the exact answer.
pub(crate) struct Compared<'a> {
    pub exact: &'a [SubjectHit],
    pub got: &'a [SubjectHit],
    /// The probe's subject is in the gallery.
    pub mated: bool,
    /// The search filtered by tags.
    pub filtered: bool,
}

/// Agreement with exact search; 1 for a kind of search that did not occur.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Recall {
    /// The same first subject.
    pub at_1: f64,
    /// The share of the exact top-k subjects the index also returned, averaged over searches.
    pub at_10: f64,
    pub at_1_mated: f64,
    pub at_1_non_mated: f64,
    pub at_1_filtered: f64,
    pub queries: usize,
}

/// Top-1 agreement and top-k overlap with exact search, by subject.
pub(crate) fn recall<'a>(searches: impl IntoIterator<Item = Compared<'a>>) -> Recall {
    let (mut top1, mut top10, mut n) = (0usize, 0.0f64, 0usize);
    let (mut mated_hits, mut mated_n, mut filtered_hits, mut filtered_n) = (0usize, 0usize, 0usize, 0usize);
    for Compared { exact, got, mated, filtered } in searches {
        n += 1;
        let first_agrees = exact.first().map(|h| &h.subject_id) == got.first().map(|h| &h.subject_id);
        top1 += usize::from(first_agrees);
        if !exact.is_empty() {
            let found = exact.iter().filter(|w| got.iter().any(|g| g.subject_id == w.subject_id)).count();
            top10 += found as f64 / exact.len() as f64;
        } else {
            top10 += 1.0;
        }
        if mated {
            mated_n += 1;
            mated_hits += usize::from(first_agrees);
        }
        if filtered {
            filtered_n += 1;
            filtered_hits += usize::from(first_agrees);
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Recall {
        at_1: ratio(top1, n),
        at_10: if n == 0 { 1.0 } else { top10 / n as f64 },
        at_1_mated: ratio(mated_hits, mated_n),
        at_1_non_mated: ratio(top1 - mated_hits, n - mated_n),
        at_1_filtered: ratio(filtered_hits, filtered_n),
        queries: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(subjects: &[&str]) -> Vec<SubjectHit> {
        subjects
            .iter()
            .map(|s| SubjectHit { subject_id: (*s).to_owned(), sample_id: String::new(), similarity: 0.5 })
            .collect()
    }

    #[test]
    fn recall_counts_first_subjects_and_top_k_overlap_by_kind_of_search() {
        let (exact_a, got_a) = (hits(&["a", "b"]), hits(&["a", "c"]));
        let (exact_b, got_b) = (hits(&["x", "y"]), hits(&["y", "x"]));
        let r = recall([
            Compared { exact: &exact_a, got: &got_a, mated: true, filtered: false },
            Compared { exact: &exact_b, got: &got_b, mated: false, filtered: true },
        ]);
        assert_eq!(r.queries, 2);
        assert_eq!((r.at_1, r.at_1_mated, r.at_1_non_mated, r.at_1_filtered), (0.5, 1.0, 0.0, 0.0));
        assert!((r.at_10 - 0.75).abs() < 1e-12, "{}", r.at_10);
        assert_eq!(recall([]).at_1, 1.0, "no searches, nothing missed");
    }
}
