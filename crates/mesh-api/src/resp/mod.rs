//! The Redis-protocol front end (issue 6, in progress): RESP2 and RESP3 over
//! TCP, on the replicated keyspace through the one Service API.
//!
//! So far: [`frame`], the wire format (request parsing with Redis's limits and
//! protocol errors, reply encoding for both protocol versions). Next: the
//! connection loop, the command table mapped onto `mesh_state::KvCmd` writes
//! and keyspace reads, auth, pub/sub through the messaging core.

pub mod frame;
