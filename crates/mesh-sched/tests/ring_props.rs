//! Properties of the consistent-hash ring and the auction, over random inputs.
//!
//! - Balance: with [`DEFAULT_VNODES`] points per node, no node owns more than
//!   1.5x the mean share of keys (the bound the `hash` strategy relies on; the
//!   busiest node is printed by `ring_balance_is_measured`).
//! - Minimal movement (the point of consistent hashing, Karger et al. 1997):
//!   adding a node to N moves only keys that the new node now owns, about
//!   1/(N+1) of them; removing one moves only the keys it owned.
//! - The auction award is the best score whatever the order of the bids.

use mesh_sched::auction::{Bid, award, score};
use mesh_sched::ring::{DEFAULT_VNODES, HashRing};
use proptest::prelude::*;

fn nodes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn ring(names: &[String]) -> HashRing {
    HashRing::with_nodes(DEFAULT_VNODES, names.iter().map(String::as_str))
}

const KEYS: usize = 20_000;

fn owners(r: &HashRing) -> Vec<String> {
    (0..KEYS)
        .map(|k| r.owner(format!("task-{k}").as_bytes()).unwrap().to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn adding_a_node_moves_only_its_share(n in 2usize..24, extra in 0usize..1000) {
        let before_nodes = nodes(n);
        let before = owners(&ring(&before_nodes));
        let mut after_nodes = before_nodes.clone();
        let new = format!("new-{extra}");
        after_nodes.push(new.clone());
        let after = owners(&ring(&after_nodes));
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                // Every move is to the new node: nothing shuffles among the old.
                prop_assert_eq!(a, &new);
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        let ideal = 1.0 / (n + 1) as f64;
        prop_assert!(share < ideal * 1.6 + 0.01, "moved {share:.3}, ideal {ideal:.3}");
        prop_assert!(share > ideal * 0.4, "moved {share:.3}, ideal {ideal:.3}");
    }

    #[test]
    fn removing_a_node_moves_only_what_it_owned(n in 3usize..24, gone in 0usize..24) {
        let all = nodes(n);
        let gone = all[gone % n].clone();
        let before = owners(&ring(&all));
        let rest: Vec<String> = all.iter().filter(|x| **x != gone).cloned().collect();
        let after = owners(&ring(&rest));
        for (b, a) in before.iter().zip(&after) {
            if *b != gone {
                prop_assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn no_node_owns_much_more_than_its_share(n in 2usize..32) {
        let names = nodes(n);
        let o = owners(&ring(&names));
        let mean = KEYS as f64 / n as f64;
        for name in &names {
            let owned = o.iter().filter(|x| *x == name).count() as f64;
            prop_assert!(owned <= mean * 1.5, "{name} owns {owned}, mean {mean:.0}");
        }
    }

    #[test]
    fn the_award_ignores_bid_order(
        raw in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0), 1..12),
        rot in 0usize..12,
    ) {
        let ids: Vec<String> = (0..raw.len()).map(|i| format!("agent-{i}")).collect();
        let bids: Vec<Bid> = raw.iter().zip(&ids).map(|((c, s, p, r), id)| Bid {
            agent: id, capability: *c, spare: *s, performance: *p, resources: *r,
        }).collect();
        let winner = bids[award(&bids).unwrap()].agent;
        let best = bids.iter().map(score).fold(f64::MIN, f64::max);
        prop_assert!((score(bids.iter().find(|b| b.agent == winner).unwrap()) - best).abs() < 1e-12);
        let mut rotated = bids.clone();
        rotated.rotate_left(rot % bids.len());
        prop_assert_eq!(rotated[award(&rotated).unwrap()].agent, winner);
    }
}

#[test]
fn ring_balance_is_measured() {
    for n in [3usize, 10, 30] {
        let names = nodes(n);
        let o = owners(&ring(&names));
        let mean = KEYS as f64 / n as f64;
        let max = names
            .iter()
            .map(|name| o.iter().filter(|x| *x == name).count())
            .max()
            .unwrap() as f64;
        println!(
            "{n} nodes, {DEFAULT_VNODES} vnodes: busiest node owns {:.2}x the mean",
            max / mean
        );
        assert!(max / mean < 1.5);
    }
}
