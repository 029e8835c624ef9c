//! Library side of the `mesh` binary: pieces the binary's subcommands and the
//! end-to-end tests share. [`cluster`] runs real `mesh up` processes on loopback
//! and reads their measured status; `mesh demo`, `mesh bench membership` and the
//! real-socket tests are built on it; [`redis_server`] starts the redis-server
//! the Redis benches and tests compare against.

pub mod cluster;
pub mod redis_server;
