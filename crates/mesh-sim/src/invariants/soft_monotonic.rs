//! Soft state: an observer's view of a node's soft state only moves forward.
//!
//! Eventually consistent last-writer-wins registers (Shapiro et al., "Conflict-free
//! Replicated Data Types", SSS 2011, LWW-Register): a replica applies a value only
//! if its timestamp, here `(generation, version)`, is greater than the one held.

use std::collections::HashMap;

use mesh_membership::{EventKind, MembershipEvent};

use super::Invariant;

/// Checks that every observer applies each node's soft states in strictly
/// increasing `(generation, version)` order.
#[derive(Default)]
pub struct SoftMonotonic {
    held: HashMap<(u32, String), (u64, u64)>,
}

impl Invariant for SoftMonotonic {
    fn name(&self) -> &'static str {
        "soft-state-monotonic"
    }

    fn observe(&mut self, _at_us: u64, observer: u32, ev: &MembershipEvent) -> Result<(), String> {
        if let EventKind::SoftUpdated { version } = ev.kind {
            let now = (ev.generation, version);
            let slot = self
                .held
                .entry((observer, ev.subject.clone()))
                .or_insert((0, 0));
            if now <= *slot {
                return Err(format!(
                    "n{observer} applied soft state {:?} of {} after already holding {:?}",
                    now, ev.subject, *slot
                ));
            }
            *slot = now;
        }
        Ok(())
    }

    fn forget_observer(&mut self, observer: u32) {
        self.held.retain(|(o, _), _| *o != observer);
    }
}
