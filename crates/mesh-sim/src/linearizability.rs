//! A linearizability checker for register histories (Wing & Gong, "Testing and
//! Verifying Concurrent Objects", JPDC 1993, with the memoisation of Lowe's and
//! Porcupine's variants).
//!
//! A history is a set of operations on one register, each with the time it was
//! invoked and the time it returned. An operation whose outcome is unknown (the
//! client timed out) has no return time: it may have taken effect at any point
//! after its call, or never. The checker searches for a total order that respects
//! real time (an operation that returned before another was called comes first)
//! and the register's semantics (a read returns the last write). Keys are
//! independent, so check each key's history on its own.

use std::collections::HashSet;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// A write of this value.
    Write(Vec<u8>),
    /// A read and the value it returned (`None`: the key was absent).
    Read(Option<Vec<u8>>),
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// When the operation was invoked (any clock, in the same unit as `ret`).
    pub call: u64,
    /// `None`: the outcome is unknown (it may or may not have applied).
    pub ret: Option<u64>,
    /// What the operation did.
    pub op: RegisterOp,
}

/// Most operations per key the checker accepts (the search is exponential in the
/// worst case; keep per-key histories short).
pub const MAX_OPS: usize = 256;

/// True if the history of one register (initially absent) is linearizable.
pub fn check_register(history: &[Operation]) -> Result<bool, String> {
    if history.len() > MAX_OPS {
        return Err(format!(
            "{} operations on one key (at most {MAX_OPS})",
            history.len()
        ));
    }
    let mut done = vec![false; history.len()];
    let mut seen = HashSet::new();
    Ok(search(history, &mut done, &None, &mut seen))
}

fn search(
    h: &[Operation],
    done: &mut Vec<bool>,
    state: &Option<Vec<u8>>,
    seen: &mut HashSet<(Vec<bool>, Option<Vec<u8>>)>,
) -> bool {
    // Everything with a known return is linearized: unknown ones may be dropped.
    if h.iter()
        .zip(done.iter())
        .all(|(o, d)| *d || o.ret.is_none())
    {
        return true;
    }
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    // The earliest return among pending operations bounds which may go next.
    let bound = h
        .iter()
        .zip(done.iter())
        .filter(|(_, d)| !**d)
        .filter_map(|(o, _)| o.ret)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..h.len() {
        if done[i] || h[i].call > bound {
            continue;
        }
        let next = match &h[i].op {
            RegisterOp::Write(v) => Some(v.clone()),
            RegisterOp::Read(r) => {
                if r != state {
                    continue;
                }
                state.clone()
            }
        };
        done[i] = true;
        if search(h, done, &next, seen) {
            return true;
        }
        done[i] = false;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(call: u64, ret: Option<u64>, v: &str) -> Operation {
        Operation {
            call,
            ret,
            op: RegisterOp::Write(v.as_bytes().to_vec()),
        }
    }
    fn r(call: u64, ret: u64, v: Option<&str>) -> Operation {
        Operation {
            call,
            ret: Some(ret),
            op: RegisterOp::Read(v.map(|s| s.as_bytes().to_vec())),
        }
    }

    #[test]
    fn sequential_history() {
        assert!(check_register(&[r(0, 1, None), w(2, Some(3), "a"), r(4, 5, Some("a"))]).unwrap());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        assert!(
            !check_register(&[w(0, Some(1), "a"), w(2, Some(3), "b"), r(4, 5, Some("a"))]).unwrap()
        );
    }

    #[test]
    fn concurrent_operations_may_order_either_way() {
        // The read overlaps the write: it may see the old or the new value.
        assert!(check_register(&[w(0, Some(10), "a"), r(5, 6, None)]).unwrap());
        assert!(check_register(&[w(0, Some(10), "a"), r(5, 6, Some("a"))]).unwrap());
    }

    #[test]
    fn a_read_cannot_go_back_in_time() {
        // Once one read saw "b", a later read cannot see "a" again.
        let h = [
            w(0, Some(1), "a"),
            w(2, Some(10), "b"),
            r(3, 4, Some("b")),
            r(5, 6, Some("a")),
        ];
        assert!(!check_register(&h).unwrap());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_apply() {
        assert!(check_register(&[w(0, None, "x"), r(5, 6, Some("x"))]).unwrap());
        assert!(check_register(&[w(0, None, "x"), r(5, 6, None)]).unwrap());
        assert!(!check_register(&[w(0, None, "x"), r(5, 6, Some("y"))]).unwrap());
    }
}
