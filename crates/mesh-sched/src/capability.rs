//! The capability match: how well an agent's capabilities cover what a task
//! requires.
//!
//! Each required capability has a weight (1 unless the task says otherwise); the
//! score is the weight of the required capabilities the agent offers divided by
//! the total weight, in `[0, 1]`. No requirement scores 1. An agent offering
//! `*` offers everything. A task is routed only to agents scoring at least the
//! threshold ([`DEFAULT_THRESHOLD`] unless the task sets its own).

/// The default lowest score a task is routed at.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

/// One required capability and its weight (stored in tasks as it is).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Need {
    /// The capability required (`gpu`, `rust`, ...), as agents advertise it.
    pub name: String,
    /// Its share of the match score, relative to the task's other needs.
    pub weight: u32,
}

impl Need {
    /// A requirement for `name` with the default weight 1.
    pub fn new(name: impl Into<String>) -> Self {
        Need {
            name: name.into(),
            weight: 1,
        }
    }
}

/// The weighted share of `required` that `offered` covers.
pub fn score(required: &[Need], offered: &[String]) -> f64 {
    let total: u64 = required.iter().map(|n| n.weight as u64).sum();
    if total == 0 {
        return 1.0;
    }
    if offered.iter().any(|o| o == "*") {
        return 1.0;
    }
    let met: u64 = required
        .iter()
        .filter(|n| offered.contains(&n.name))
        .map(|n| n.weight as u64)
        .sum();
    met as f64 / total as f64
}

/// Whether an agent with `offered` may take a task needing `required`.
pub fn fits(required: &[Need], offered: &[String], threshold: f64) -> bool {
    score(required, offered) >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn weights_decide_the_share() {
        let need = vec![
            Need::new("rust"),
            Need {
                name: "gpu".into(),
                weight: 3,
            },
        ];
        assert_eq!(score(&need, &caps(&["rust", "gpu"])), 1.0);
        assert_eq!(score(&need, &caps(&["gpu"])), 0.75);
        assert_eq!(score(&need, &caps(&["rust"])), 0.25);
        assert_eq!(score(&need, &caps(&[])), 0.0);
        assert_eq!(score(&need, &caps(&["*"])), 1.0);
        assert_eq!(score(&[], &caps(&[])), 1.0);
        assert!(fits(&need, &caps(&["gpu"]), DEFAULT_THRESHOLD));
        assert!(!fits(&need, &caps(&["rust"]), DEFAULT_THRESHOLD));
    }
}
