//! Faces nobody enrolled, grouped into unknown people one sighting at a time (issue 29).
//!
//! A new sighting is compared with the sightings kept before it. It joins the group in which the
//! most of them score at least [`GroupingPolicy::min_score`] against it, provided they number at
//! least `min(neighbours, the group's size)`; otherwise it starts a group of its own. So a
//! sighting joins a group of one or two on the strength of one or two strict matches, and a
//! larger group only when several of its sightings agree, which keeps one odd resemblance from
//! pulling a stranger in.
//!
//! Groups are never merged by this rule. When a sighting qualifies for two groups it joins the
//! better one and the other stays as it is: one person left in two groups is a merge away from
//! right, while two people in one group would give each the other's faces, which a promotion to
//! an enrolled person would then carry into every later search.

/// How strict grouping is. The defaults are measured (`facegate eval grouping`,
/// docs/accuracy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupingPolicy {
    /// The least score (0–9999, the calibrated scale of searches) at which an earlier sighting
    /// counts for the new one's group.
    pub min_score: u32,
    /// How many of a group's sightings must reach `min_score` (all of them while the group is
    /// smaller).
    pub neighbours: usize,
}

impl GroupingPolicy {
    /// Score 8750 with 2 neighbours. Over all LFW (6,917 photos of 3,549 people fed in a random
    /// order, `facegate eval grouping`, docs/accuracy.md) it gives a BCubed precision of
    /// 0.995–0.996 and a BCubed recall of 0.95–0.96 over the people with three photos or more with
    /// the default pack, 0.996 and 0.98 with buffalo_s, for two orders. 8500 is the lowest score
    /// at which both packs pass a precision of 0.99 (0.994); 8750 keeps one step of margin on that
    /// side, the costly one, for 0.01 of recall; each step up costs about as much recall again
    /// for less precision. One neighbour chains people together through single resemblances at
    /// lower scores; three cost recall and bought no precision.
    pub const DEFAULT: GroupingPolicy = GroupingPolicy { min_score: 8750, neighbours: 2 };
}

/// One earlier sighting the new one resembles: the group it is in and their score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour<G> {
    pub group: G,
    pub score: u32,
}

impl GroupingPolicy {
    /// The group the new sighting joins, or `None` when it starts one. `neighbours` are earlier
    /// sightings with their scores against it (those under `min_score` are ignored); `group_size`
    /// gives a group's sightings.
    ///
    /// Among the groups that qualify, the one with the most sightings at `min_score` or above
    /// wins, then the one with the highest such score, then the smallest group id, so that the
    /// outcome does not depend on the order of `neighbours`.
    pub fn place<G: Copy + Ord>(&self, neighbours: &[Neighbour<G>], group_size: impl Fn(G) -> usize) -> Option<G> {
        let mut tally: std::collections::BTreeMap<G, (usize, u32)> = std::collections::BTreeMap::new();
        for n in neighbours.iter().filter(|n| n.score >= self.min_score) {
            let entry = tally.entry(n.group).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(n.score);
        }
        let needed = |group: G| self.neighbours.max(1).min(group_size(group).max(1));
        tally
            .into_iter()
            .filter(|&(group, (count, _))| count >= needed(group))
            // Largest (count, best score) wins; among equals, the smallest group (first seen).
            .fold(None, |best: Option<(G, (usize, u32))>, (group, key)| match best {
                Some((_, best_key)) if best_key >= key => best,
                _ => Some((group, key)),
            })
            .map(|(group, _)| group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(group: u32, score: u32) -> Neighbour<u32> {
        Neighbour { group, score }
    }

    const POLICY: GroupingPolicy = GroupingPolicy { min_score: 8000, neighbours: 2 };

    #[test]
    fn a_sighting_with_no_strict_match_starts_a_group() {
        assert_eq!(POLICY.place::<u32>(&[], |_| 1), None);
        assert_eq!(POLICY.place(&[n(1, 7999), n(2, 5000)], |_| 1), None);
    }

    #[test]
    fn a_small_group_is_joined_on_as_many_matches_as_it_has_sightings() {
        assert_eq!(POLICY.place(&[n(1, 8000)], |_| 1), Some(1));
        // A group of five needs two of its sightings to agree.
        assert_eq!(POLICY.place(&[n(1, 9000)], |_| 5), None);
        assert_eq!(POLICY.place(&[n(1, 8100), n(1, 8200), n(2, 9999)], |g| if g == 1 { 5 } else { 3 }), Some(1));
    }

    #[test]
    fn the_group_with_more_agreeing_sightings_wins_then_the_higher_score_then_the_first() {
        let sizes = |_| 10;
        assert_eq!(POLICY.place(&[n(2, 9000), n(2, 9000), n(1, 8500), n(1, 8500), n(1, 8500)], sizes), Some(1));
        assert_eq!(POLICY.place(&[n(2, 9100), n(2, 8000), n(1, 9000), n(1, 9000)], sizes), Some(2));
        assert_eq!(POLICY.place(&[n(2, 9000), n(2, 9000), n(1, 9000), n(1, 9000)], sizes), Some(1));
        assert_eq!(POLICY.place(&[n(1, 9000), n(1, 9000), n(2, 9000), n(2, 9000)], sizes), Some(1));
    }

    #[test]
    fn zero_neighbours_means_one() {
        let lax = GroupingPolicy { min_score: 8000, neighbours: 0 };
        assert_eq!(lax.place(&[n(3, 8000)], |_| 4), Some(3));
        assert_eq!(lax.place(&[n(3, 7000)], |_| 4), None);
    }
}
