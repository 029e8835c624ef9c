//! Gossip: a dead member never returns under an old incarnation.
//!
//! SWIM (Das, Gupta, Motivala, DSN 2002, §4.2): a `Confirm` (dead) message for a
//! member overrides every alive or suspect message about it; the member can only
//! come back as a new identity. In our core that is a higher generation. So once an
//! observer reported `S` dead at generation `g`, any later report of `S` alive
//! (joined, rejoined, restarted) at that observer must carry a generation above `g`.

use std::collections::HashMap;

use mesh_membership::{EventKind, MembershipEvent};

use super::Invariant;

/// Checks that no observer reports a member alive again at a generation it
/// reported dead.
#[derive(Default)]
pub struct NoResurrection {
    dead_at: HashMap<(u32, String), u64>,
}

impl Invariant for NoResurrection {
    fn name(&self) -> &'static str {
        "no-resurrection"
    }

    fn observe(&mut self, _at_us: u64, observer: u32, ev: &MembershipEvent) -> Result<(), String> {
        match ev.kind {
            EventKind::Dead => {
                let slot = self
                    .dead_at
                    .entry((observer, ev.subject.clone()))
                    .or_insert(0);
                *slot = (*slot).max(ev.generation);
            }
            EventKind::Joined | EventKind::Rejoined | EventKind::Restarted { .. } => {
                if let Some(&g) = self.dead_at.get(&(observer, ev.subject.clone()))
                    && ev.generation <= g
                {
                    return Err(format!(
                        "n{observer} saw {} alive again at generation {} after declaring generation {g} dead",
                        ev.subject, ev.generation
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn forget_observer(&mut self, observer: u32) {
        self.dead_at.retain(|(o, _), _| *o != observer);
    }
}
