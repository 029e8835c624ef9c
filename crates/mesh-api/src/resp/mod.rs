//! The Redis-protocol endpoint: RESP2, and RESP3 after `HELLO 3`, on the
//! replicated keyspace through the one Service API, so `redis-cli` scripts
//! and Redis client libraries work unchanged against any node.
//!
//! - [`frame`]: the wire format (`mesh_proto::resp`: request parsing with
//!   Redis's limits and protocol errors, reply encoding);
//! - [`table`]: the commands served, with arity, flags and docs;
//! - [`plan`]: keyspace commands into replicated writes and reads;
//! - [`reply`]: their replies and service errors as RESP;
//! - [`conn`]: one connection: auth, pipelining (a run of writes is one log
//!   entry, a run of reads one read-index round), transactions, pub/sub,
//!   blocking pops;
//! - [`info`]: `INFO`, `COMMAND`, `HELLO`.
//!
//! Keys: one keyspace for every front end. The HTTP API's namespace `ns` and
//! key `k` are the Redis key `ns:k`; a Redis key without a valid namespace
//! prefix is reachable through Redis (and `mesh kv` with the whole key) only.
//! See `docs/redis.md` for the commands, limits and differences from Redis.

pub mod args;
pub mod conn;
pub mod info;
pub mod plan;
pub mod reply;
pub mod table;

pub use mesh_proto::resp as frame;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mesh_node::service::Service;
use tokio::net::TcpListener;

/// Most clients served at once, unless configured (Redis's `maxclients`).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// How the endpoint runs.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// Like `requirepass`: every command but `AUTH`, `HELLO` and `QUIT` is
    /// refused until the client authenticates. Without it only loopback
    /// clients are served.
    pub password: Option<String>,
    /// Most clients served at once (`maxclients`); one more is refused.
    pub max_clients: usize,
    /// Serve `FLUSHDB`/`FLUSHALL` (they remove every key of the mesh).
    pub allow_flush: bool,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            password: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            allow_flush: false,
        }
    }
}

/// Counters shown by `INFO` (measured here, since the endpoint started).
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now (`connected_clients`).
    pub connected: AtomicUsize,
    /// Clients waiting in a blocking pop now (`blocked_clients`).
    pub blocked: AtomicUsize,
    /// Connections accepted, refused ones included (`total_connections_received`).
    pub connections_received: AtomicU64,
    /// Connections refused at `max_clients` (`rejected_connections`).
    pub rejected: AtomicU64,
    /// `AUTH`/`HELLO` attempts with a wrong password (`acl_access_denied_auth`).
    pub auth_failures: AtomicU64,
    /// Commands run (`total_commands_processed`).
    pub commands: AtomicU64,
    /// Connections closed for a malformed request (`protocol_errors`).
    pub protocol_errors: AtomicU64,
    /// Connections from other hosts refused for want of a password
    /// (`denied_remote_without_password`).
    pub denied_remote: AtomicU64,
    next_id: AtomicU64,
}

/// What every connection of one endpoint shares.
pub struct Server {
    /// The node's service every command goes through.
    pub svc: Service,
    /// How the endpoint runs.
    pub cfg: RespConfig,
    /// The endpoint's counters.
    pub stats: Stats,
    /// The endpoint's bound address (`tcp_port` of `INFO`).
    pub addr: SocketAddr,
    /// When the endpoint started (`uptime_in_seconds` of `INFO`).
    pub started: std::time::Instant,
}

impl Server {
    /// A fresh client id for a new connection (`CLIENT ID`), from 1 up.
    pub fn next_client_id(&self) -> u64 {
        self.stats.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Serves Redis clients on `listener` until the process ends.
pub async fn serve(listener: TcpListener, svc: Service, cfg: RespConfig) {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let server = Arc::new(Server {
        svc,
        cfg,
        stats: Stats::default(),
        addr,
        started: std::time::Instant::now(),
    });
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move { conn::serve(server, sock, peer).await });
    }
}
