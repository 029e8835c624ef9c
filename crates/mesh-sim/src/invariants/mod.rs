//! Invariants the simulator checks after every event, one per file, each citing
//! where it comes from. A violation stops the run and reports the seed.

mod no_resurrection;
mod soft_monotonic;

pub use no_resurrection::NoResurrection;
pub use soft_monotonic::SoftMonotonic;

use mesh_membership::MembershipEvent;

/// A property that must hold over every event a node reports.
pub trait Invariant {
    /// Short kebab-case name, quoted in violation reports.
    fn name(&self) -> &'static str;
    /// Called for each event `observer` reports; `Err` describes a violation.
    fn observe(&mut self, at_us: u64, observer: u32, event: &MembershipEvent)
    -> Result<(), String>;
    /// The observer crashed: what its process knew is gone, and so is what we
    /// remember of it (a restarted process starts from nothing).
    fn forget_observer(&mut self, observer: u32);
}

/// The default set.
pub fn all() -> Vec<Box<dyn Invariant>> {
    vec![
        Box::new(NoResurrection::default()),
        Box::new(SoftMonotonic::default()),
    ]
}
