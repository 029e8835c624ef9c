//! A consistent-hash ring over nodes (the `hash` strategy).
//!
//! Each node owns `vnodes` points on a 64-bit ring (the hash of `"node#i"`); a
//! key's replicas are the first `r` distinct nodes found walking clockwise from
//! the key's hash. The first is the owner; the next take over when it is gone.
//! Adding or removing one node of N moves only the keys whose owner changes,
//! about 1/N of them (`tests/ring_props.rs` checks balance and movement).

use crate::stable_hash;

/// Virtual nodes per node by default: enough that the busiest node owns only a
/// little more than the mean share of keys (`ring_balance_is_measured` prints
/// the ratio).
pub const DEFAULT_VNODES: u32 = 128;
/// Replicas per key by default.
pub const DEFAULT_REPLICAS: usize = 3;

/// The ring. Built from the same nodes in any order, it is the same ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashRing {
    vnodes: u32,
    /// (point, node), sorted; equal points are ordered by node name.
    points: Vec<(u64, String)>,
}

impl HashRing {
    /// An empty ring placing `vnodes` points per node (at least 1).
    pub fn new(vnodes: u32) -> Self {
        HashRing {
            vnodes: vnodes.max(1),
            points: Vec::new(),
        }
    }

    /// A ring of `vnodes` points per node holding `nodes` (duplicates count once).
    pub fn with_nodes<'a>(vnodes: u32, nodes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ring = HashRing::new(vnodes);
        for n in nodes {
            ring.add(n);
        }
        ring
    }

    /// Adds a node (again: no change).
    pub fn add(&mut self, node: &str) {
        if self.contains(node) {
            return;
        }
        for i in 0..self.vnodes {
            self.points.push((
                stable_hash(format!("{node}#{i}").as_bytes()),
                node.to_string(),
            ));
        }
        self.points.sort_unstable();
    }

    /// Removes a node and all its points (absent: no change).
    pub fn remove(&mut self, node: &str) {
        self.points.retain(|(_, n)| n != node);
    }

    /// Whether `node` has points on the ring.
    pub fn contains(&self, node: &str) -> bool {
        self.points.iter().any(|(_, n)| n == node)
    }

    /// Distinct nodes, sorted.
    pub fn nodes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.points.iter().map(|(_, n)| n.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether the ring has no nodes (then no key has an owner).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The first `r` distinct nodes clockwise from `key` (fewer if the ring has fewer).
    pub fn replicas(&self, key: &[u8], r: usize) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::with_capacity(r);
        if self.points.is_empty() || r == 0 {
            return out;
        }
        let h = stable_hash(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        for i in 0..self.points.len() {
            let (_, node) = &self.points[(start + i) % self.points.len()];
            if !out.contains(&node.as_str()) {
                out.push(node);
                if out.len() == r {
                    break;
                }
            }
        }
        out
    }

    /// The key's owner.
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        self.replicas(key, 1).into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_and_start_with_the_owner() {
        let ring = HashRing::with_nodes(DEFAULT_VNODES, ["a", "b", "c", "d"]);
        let r = ring.replicas(b"task-1", 3);
        assert_eq!(r.len(), 3);
        assert_eq!(Some(r[0]), ring.owner(b"task-1"));
        let mut d = r.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 3);
        assert_eq!(
            ring.replicas(b"task-1", 9).len(),
            4,
            "no more than the nodes"
        );
        assert!(HashRing::new(8).owner(b"x").is_none());
    }

    #[test]
    fn order_of_adding_does_not_matter() {
        let a = HashRing::with_nodes(16, ["a", "b", "c"]);
        let b = HashRing::with_nodes(16, ["c", "a", "b", "a"]);
        assert_eq!(a, b);
        assert_eq!(a.nodes(), vec!["a", "b", "c"]);
    }

    #[test]
    fn when_the_owner_leaves_the_next_replica_owns() {
        let mut ring = HashRing::with_nodes(DEFAULT_VNODES, ["a", "b", "c", "d"]);
        let before: Vec<String> = ring
            .replicas(b"job-7", 3)
            .into_iter()
            .map(String::from)
            .collect();
        ring.remove(&before[0]);
        assert_eq!(ring.owner(b"job-7"), Some(before[1].as_str()));
    }
}
