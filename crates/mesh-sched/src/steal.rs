//! Work stealing and rebalancing.
//!
//! Stealing: an idle agent takes queued (not running) work from the most loaded
//! peer queue holding more than a threshold; equal queues go to the smaller
//! agent id. The state machine does the transfer while applying the idle agent's
//! claim, so two agents never hold one task.
//!
//! Rebalancing: nodes above [`HIGH_LOAD`] hand queued work to nodes below
//! [`LOW_LOAD`], loads as measured by the soft-state gossip.

/// A victim must have more than this many queued tasks.
pub const DEFAULT_STEAL_THRESHOLD: usize = 1;
/// A node above this load gives queued work away.
pub const HIGH_LOAD: f64 = 0.8;
/// A node below this load takes it.
pub const LOW_LOAD: f64 = 0.3;

/// The queue an idle `thief` steals from: the longest one over `threshold`,
/// ties to the smaller id; never the thief's own.
pub fn victim<'a>(
    queues: impl IntoIterator<Item = (&'a str, usize)>,
    thief: &str,
    threshold: usize,
) -> Option<&'a str> {
    queues
        .into_iter()
        .filter(|(a, n)| *a != thief && *n > threshold)
        .max_by(|(a, n), (b, m)| n.cmp(m).then_with(|| b.cmp(a)))
        .map(|(a, _)| a)
}

/// Pairs of (overloaded node, underloaded node), most loaded with least loaded,
/// each node in at most one pair. Loads are in `[0, 1]`; ties by node name.
pub fn rebalance_pairs<'a>(loads: &[(&'a str, f64)]) -> Vec<(&'a str, &'a str)> {
    let mut high: Vec<(&str, f64)> = loads
        .iter()
        .copied()
        .filter(|(_, l)| *l > HIGH_LOAD)
        .collect();
    let mut low: Vec<(&str, f64)> = loads
        .iter()
        .copied()
        .filter(|(_, l)| *l < LOW_LOAD)
        .collect();
    high.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    low.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    high.into_iter()
        .zip(low)
        .map(|((h, _), (l, _))| (h, l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_queue_over_the_threshold_is_the_victim() {
        let q = [("a", 5), ("b", 7), ("c", 7), ("d", 0)];
        assert_eq!(victim(q, "d", 1), Some("b"));
        assert_eq!(victim(q, "b", 1), Some("c"));
        assert_eq!(victim([("a", 1)], "b", 1), None);
        assert_eq!(victim([("a", 3)], "a", 1), None);
    }

    #[test]
    fn hot_nodes_pair_with_cold_ones() {
        let loads = [("a", 0.95), ("b", 0.1), ("c", 0.85), ("d", 0.2), ("e", 0.5)];
        assert_eq!(rebalance_pairs(&loads), vec![("a", "b"), ("c", "d")]);
        assert!(rebalance_pairs(&[("a", 0.9)]).is_empty());
    }
}
