//! The Redis-protocol front end (issue 6, in progress): RESP2 and RESP3 over
//! TCP, on the replicated keyspace through the one Service API.
//!
//! So far: the wire format, in `mesh_proto::resp` (request parsing with
//! Redis's limits and protocol errors, reply encoding for both protocol
//! versions; kept in the dependency-free crate so its fuzz target builds
//! fast). Next: the connection loop, the command table mapped onto
//! `mesh_state::KvCmd` writes and keyspace reads, auth, pub/sub through the
//! messaging core.

pub use mesh_proto::resp as frame;
