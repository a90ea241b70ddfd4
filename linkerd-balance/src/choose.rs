//! The power-of-two-choices decision.

use rand::{Rng, RngExt};

/// Picks an index from `cumulative` weights (`cumulative[i]` is the sum of the weights of
/// endpoints `0..=i`): two picks at random in proportion to weight, and of the two, the one
/// with the lower `load(i) / weight(i)`. `eligible` filters out endpoints that are not ready.
///
/// Returns `None` when no eligible endpoint is found.
pub fn choose<R: Rng>(
    cumulative: &[u64],
    load: impl Fn(usize) -> f64,
    eligible: impl Fn(usize) -> bool,
    rng: &mut R,
) -> Option<usize> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let n = cumulative.len();
    let weight = |i: usize| cumulative[i] - if i == 0 { 0 } else { cumulative[i - 1] };
    // The fallback scan starts at a random endpoint, so a mostly ineligible set does not pile
    // its load on the first eligible endpoints.
    let scan = |rng: &mut R, skip: Option<usize>| -> Option<usize> {
        let start = RngExt::random_range(rng, 0..n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| Some(*i) != skip && weight(*i) > 0 && eligible(*i))
    };
    let pick = |rng: &mut R| -> Option<usize> {
        // A few weighted draws; then, if the set is mostly ineligible, a scan.
        for _ in 0..4 {
            let r = RngExt::random_range(rng, 0..total);
            let i = cumulative.partition_point(|c| *c <= r);
            if eligible(i) {
                return Some(i);
            }
        }
        scan(rng, None)
    };
    let a = pick(rng)?;
    // The second candidate is drawn from the others' weights, so the two differ whenever
    // another eligible endpoint exists (a redraw-until-different loop can, rarely, give up and
    // leave a loaded endpoint unchallenged in a two-endpoint set).
    let (wa, start_a) = (weight(a), cumulative[a] - weight(a));
    let mut b = None;
    if total > wa {
        for _ in 0..4 {
            let mut r = RngExt::random_range(rng, 0..total - wa);
            if r >= start_a {
                r += wa;
            }
            let i = cumulative.partition_point(|c| *c <= r);
            if eligible(i) {
                b = Some(i);
                break;
            }
        }
        if b.is_none() {
            b = scan(rng, Some(a));
        }
    }
    let Some(b) = b else {
        return Some(a);
    };
    let cost = |i: usize| load(i) / weight(i) as f64;
    Some(if cost(b) < cost(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cumulative(weights: &[u64]) -> Vec<u64> {
        weights
            .iter()
            .scan(0, |s, w| {
                *s += w;
                Some(*s)
            })
            .collect()
    }

    #[test]
    fn lower_load_wins_most_of_the_time() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let c = cumulative(&[1; 10]);
        let loads = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 10.0];
        let mut hits = [0u32; 10];
        for _ in 0..10_000 {
            hits[choose(&c, |i| loads[i], |_| true, &mut rng).unwrap()] += 1;
        }
        // The picks are distinct, so the slow one never wins against a fast one.
        assert_eq!(hits[9], 0, "{hits:?}");
        assert!(hits[..9].iter().all(|h| *h > 900), "{hits:?}");
    }

    #[test]
    fn weights_shape_the_picks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let c = cumulative(&[1, 3]);
        let mut hits = [0u32; 2];
        for _ in 0..20_000 {
            // Equal loads per unit of weight: the choice follows the draws.
            hits[choose(&c, |i| [1.0, 3.0][i], |_| true, &mut rng).unwrap()] += 1;
        }
        let share = hits[1] as f64 / 20_000.0;
        assert!((0.70..0.95).contains(&share), "{hits:?}");
        // A zero weight is never chosen.
        let c = cumulative(&[0, 5]);
        for _ in 0..100 {
            assert_eq!(choose(&c, |_| 1.0, |_| true, &mut rng), Some(1));
        }
    }

    #[test]
    fn two_endpoints_are_always_compared() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for weights in [[1, 1], [1, 100], [100, 1]] {
            let c = cumulative(&weights);
            for _ in 0..10_000 {
                assert_eq!(choose(&c, |i| [1.0, 1e9][i], |_| true, &mut rng), Some(0));
            }
        }
        // The other one is skipped when it is not eligible.
        let c = cumulative(&[1, 1, 1]);
        for _ in 0..1000 {
            let loads = [1e9, 1.0, 1.0];
            let picked = choose(&c, |i| loads[i], |i| i != 2, &mut rng);
            assert_eq!(picked, Some(1));
        }
    }

    #[test]
    fn a_mostly_ineligible_set_spreads_its_picks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        // 1 endpoint in 10 eligible: the draws mostly miss and the scan decides.
        let c = cumulative(&[1; 100]);
        let mut hits = [0u32; 100];
        for _ in 0..10_000 {
            hits[choose(&c, |_| 1.0, |i| i % 10 == 0, &mut rng).unwrap()] += 1;
        }
        let eligible: Vec<u32> = hits.iter().step_by(10).copied().collect();
        assert!(
            eligible.iter().all(|h| (500..1600).contains(h)),
            "{eligible:?}"
        );
    }

    #[test]
    fn ineligible_endpoints_are_skipped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let c = cumulative(&[1; 100]);
        for _ in 0..1000 {
            assert_eq!(choose(&c, |_| 1.0, |i| i == 42, &mut rng), Some(42));
        }
        assert_eq!(choose(&c, |_| 1.0, |_| false, &mut rng), None);
        assert_eq!(choose(&[], |_| 1.0, |_| true, &mut rng), None);
    }
}
