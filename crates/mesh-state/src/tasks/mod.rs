//! Tasks: units of work that really run, replicated like everything else.
//!
//! A task is submitted (alone or in a batch), waits for its dependencies
//! (`pending`), becomes `ready`, is routed to an agent (`assigned`, in that
//! agent's queue), started by it (`running`, under a lease the agent renews),
//! and ends `completed`, `failed`, `dead_letter` (its retry budget spent) or
//! `cancelled`. Every transition is made by a replicated command and recorded
//! with its stamp and reason, so every replica tells the same story.
//!
//! Agents pull: a claim asks for up to N tasks and may stay open for a while, so
//! a task that becomes ready later is started for a waiting agent while its
//! submit applies (dispatch costs one commit). Routing (`mesh-sched`) decides
//! which agent: `capability` (best weighted match at or above the threshold),
//! `hash` (agents on the owner node of a consistent-hash ring over live nodes, or
//! the next replica), `auction` (bids during a short window, best score wins) or
//! `steal` (per-agent queues; idle agents steal from the longest).
//!
//! - [`model`]: the task, its spec, states, priorities, limits and validation;
//! - [`store`]: the tasks by submission number, with an index by id;
//! - [`table`]: the task table and everything that moves tasks between states.

pub mod model;
pub mod store;
pub mod table;

pub use model::*;
pub use table::TaskTable;
