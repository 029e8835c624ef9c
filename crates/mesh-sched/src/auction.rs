//! Auctions: agents bid for a task during a short window; each bid is scored
//!
//! `0.4 × capability match + 0.3 × spare capacity + 0.2 × past performance + 0.1 × resources`,
//!
//! every input in `[0, 1]`, and the best score wins; equal scores go to the
//! smaller agent id, so every replica awards the same agent.
//!
//! Capability match and spare capacity are computed by the state machine from
//! replicated data, not taken from the bidder; past performance comes from the
//! agent's measured completions ([`performance`]); resources are the bidder's
//! own measurement of its free machine share.

/// Score weights, in the order capability, spare capacity, performance, resources.
pub const WEIGHTS: [f64; 4] = [0.4, 0.3, 0.2, 0.1];

/// One bid's inputs, each in `[0, 1]` (clamped; NaN counts as 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Bid<'a> {
    /// Id of the bidding agent; breaks ties (the smaller id wins).
    pub agent: &'a str,
    /// The agent's capability match for the task ([`crate::capability::score`]).
    pub capability: f64,
    /// The agent's spare capacity: the share of its capacity not taken by running or queued work.
    pub spare: f64,
    /// Past performance on similar tasks ([`performance`]).
    pub performance: f64,
    /// The free share of its machine the bidder reports.
    pub resources: f64,
}

fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// The bid's score, in `[0, 1]`.
pub fn score(b: &Bid) -> f64 {
    WEIGHTS[0] * unit(b.capability)
        + WEIGHTS[1] * unit(b.spare)
        + WEIGHTS[2] * unit(b.performance)
        + WEIGHTS[3] * unit(b.resources)
}

/// The winning bid's position: best score, then smaller agent id.
pub fn award(bids: &[Bid]) -> Option<usize> {
    (0..bids.len()).max_by(|&i, &j| {
        score(&bids[i])
            .total_cmp(&score(&bids[j]))
            .then_with(|| bids[j].agent.cmp(bids[i].agent))
    })
}

/// Past performance on similar tasks, in `[0, 1]`: half the success rate, half
/// the speed (the mean latency of all agents on such tasks over this agent's,
/// capped at 1). With no history either half is 0.5, a neutral prior, so a new
/// agent is neither favoured nor shut out.
pub fn performance(
    successes: u64,
    failures: u64,
    mean_ms: Option<f64>,
    fleet_mean_ms: Option<f64>,
) -> f64 {
    let rate = if successes + failures == 0 {
        0.5
    } else {
        successes as f64 / (successes + failures) as f64
    };
    let speed = match (mean_ms, fleet_mean_ms) {
        (Some(m), Some(f)) if m > 0.0 => unit(f / m),
        (Some(_), Some(_)) => 1.0,
        _ => 0.5,
    };
    0.5 * rate + 0.5 * speed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(agent: &str, c: f64, s: f64, p: f64, r: f64) -> Bid<'_> {
        Bid {
            agent,
            capability: c,
            spare: s,
            performance: p,
            resources: r,
        }
    }

    #[test]
    fn the_weights_are_as_documented() {
        assert!((score(&bid("a", 1.0, 0.0, 0.0, 0.0)) - 0.4).abs() < 1e-12);
        assert!((score(&bid("a", 0.0, 1.0, 0.0, 0.0)) - 0.3).abs() < 1e-12);
        assert!((score(&bid("a", 0.0, 0.0, 1.0, 0.0)) - 0.2).abs() < 1e-12);
        assert!((score(&bid("a", 0.0, 0.0, 0.0, 1.0)) - 0.1).abs() < 1e-12);
        assert!((score(&bid("a", 2.0, f64::NAN, -1.0, 0.5)) - 0.45).abs() < 1e-12);
    }

    #[test]
    fn best_score_wins_and_ties_go_to_the_smaller_id() {
        let bids = [bid("b", 1.0, 0.5, 0.5, 0.5), bid("a", 1.0, 0.5, 0.5, 0.5)];
        assert_eq!(award(&bids), Some(1));
        let bids = [bid("a", 0.9, 0.5, 0.5, 0.5), bid("b", 1.0, 0.5, 0.5, 0.5)];
        assert_eq!(award(&bids), Some(1));
        assert_eq!(award(&[]), None);
    }

    #[test]
    fn performance_blends_success_and_speed() {
        assert_eq!(performance(0, 0, None, None), 0.5);
        assert_eq!(performance(4, 0, Some(10.0), Some(10.0)), 1.0);
        assert_eq!(performance(1, 1, Some(20.0), Some(10.0)), 0.5);
        assert_eq!(performance(0, 3, Some(5.0), Some(10.0)), 0.5);
    }
}
