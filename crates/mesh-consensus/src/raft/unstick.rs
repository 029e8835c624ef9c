//! Breaks election livelocks.
//!
//! openraft 0.9 draws each node's election timeout once, at start, and checks
//! it on a tick every 1.5 heartbeats. Candidates whose timeouts round to the
//! same tick and whose ticks run in phase (nodes started together, as after a
//! power loss) start every election in the same tick, split the vote, and do it
//! again forever (without this watchdog, the simulator gets 5-node clusters
//! stuck for minutes). So each node watches itself: while it has seen no
//! leader for two maximum election timeouts, it pauses its own elections for a
//! fresh random time (up to two maximum timeouts) and resumes them, which puts
//! the candidates out of step.

use std::time::Duration;

use openraft::{Raft, ServerState};

use super::{NodeId, TypeConfig};

/// Starts the watchdog; it ends with the Raft instance.
pub(crate) fn spawn(raft: Raft<TypeConfig>, id: NodeId) {
    let max_ms = raft.config().election_timeout_max.max(1);
    tokio::spawn(async move {
        let mut rx = raft.metrics();
        // SplitMix64 over the node id and the clock: independent per node.
        let mut state = id
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut leaderless_since: Option<tokio::time::Instant> = None;
        loop {
            let (state, leader) = {
                let m = rx.borrow_and_update();
                (m.state, m.current_leader)
            };
            let now = tokio::time::Instant::now();
            if leader.is_some() || state == ServerState::Learner || state == ServerState::Shutdown {
                leaderless_since = None;
            } else {
                let since = *leaderless_since.get_or_insert(now);
                if state == ServerState::Candidate
                    && now.duration_since(since) >= Duration::from_millis(2 * max_ms)
                {
                    let pause = Duration::from_millis(next() % (2 * max_ms));
                    tracing::debug!(?pause, "no leader for a while: pausing own elections");
                    raft.runtime_config().elect(false);
                    tokio::time::sleep(pause).await;
                    raft.runtime_config().elect(true);
                    leaderless_since = Some(tokio::time::Instant::now());
                    continue;
                }
            }
            // Wake on a metrics change, or in a while to look again.
            if let Ok(Err(_)) =
                tokio::time::timeout(Duration::from_millis(max_ms), rx.changed()).await
            {
                return; // the Raft instance is gone
            }
        }
    });
}
