//! An in-process Raft network for tests: every node's `Raft` handle in one
//! router, with links that can be cut and healed, and optional seeded faults:
//! delay (which reorders concurrent RPCs), lost requests and lost replies
//! (the request ran, the caller never hears back). Delays use tokio's clock, so
//! under a paused test clock they cost no real time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};

use super::{NodeId, TypeConfig};

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<NodeId, Raft<TypeConfig>>,
    /// Nodes cut off from everyone.
    isolated: BTreeSet<NodeId>,
    faults: Faults,
}

/// Seeded network faults.
#[derive(Default, Clone, Copy)]
struct Faults {
    /// Probability that a request is lost, and again that its reply is.
    loss: f64,
    max_delay_ms: u64,
    /// xorshift64 state; 0 = no faults configured.
    rng: u64,
}

impl Faults {
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
    fn chance(&mut self, p: f64) -> bool {
        self.rng != 0 && (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
    fn delay(&mut self) -> std::time::Duration {
        if self.rng == 0 || self.max_delay_ms == 0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_micros(self.next() % (self.max_delay_ms * 1000))
    }
}

/// The shared router.
#[derive(Clone, Default)]
pub struct MemRouter {
    inner: Arc<Mutex<Inner>>,
}

impl MemRouter {
    /// A router with no nodes and no faults.
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Makes node `id` reachable, its RPCs handled by `raft`.
    pub fn add(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.lock().nodes.insert(id, raft);
    }
    /// The node is gone (crashed): nothing reaches it.
    pub fn remove(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }
    /// Cuts node `id` off: no RPC from or to it gets through until [`MemRouter::heal`].
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }
    /// Ends node `id`'s isolation.
    pub fn heal(&self, id: NodeId) {
        self.lock().isolated.remove(&id);
    }
    /// Loses each request and each reply with probability `loss`, and delays
    /// each RPC by up to `max_delay_ms`, from a generator seeded with `seed`.
    pub fn set_faults(&self, loss: f64, max_delay_ms: u64, seed: u64) {
        self.lock().faults = Faults {
            loss,
            max_delay_ms,
            rng: seed | 1,
        };
    }
    /// Delivers `call` to `to` as the faults allow.
    async fn deliver<T, E, F, Fut>(
        &self,
        from: NodeId,
        to: NodeId,
        call: F,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error,
        F: FnOnce(Raft<TypeConfig>) -> Fut,
        Fut: std::future::Future<Output = Result<T, RaftError<NodeId, E>>>,
    {
        let (delay, lose_request, lose_reply) = {
            let mut inner = self.lock();
            let loss = inner.faults.loss;
            (
                inner.faults.delay(),
                inner.faults.chance(loss),
                inner.faults.chance(loss),
            )
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let lost = || RPCError::Unreachable(Unreachable::new(&std::io::Error::other("lost")));
        if lose_request {
            return Err(lost());
        }
        let raft = self.target(from, to).map_err(RPCError::Unreachable)?;
        let result = call(raft)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(to, e)));
        if lose_reply {
            return Err(lost());
        }
        result
    }
    /// The network as node `from` sees it.
    pub fn network(&self, from: NodeId) -> MemNetwork {
        MemNetwork {
            from,
            router: self.clone(),
        }
    }
    fn target(&self, from: NodeId, to: NodeId) -> Result<Raft<TypeConfig>, Unreachable> {
        let inner = self.lock();
        if inner.isolated.contains(&from) || inner.isolated.contains(&to) {
            return Err(Unreachable::new(&std::io::Error::other("link cut")));
        }
        inner
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other("node down")))
    }
}

/// One node's view of the router.
#[derive(Clone)]
pub struct MemNetwork {
    from: NodeId,
    router: MemRouter,
}

impl RaftNetworkFactory<TypeConfig> for MemNetwork {
    type Network = MemConn;
    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> MemConn {
        MemConn {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

/// A connection to one peer.
pub struct MemConn {
    from: NodeId,
    to: NodeId,
    router: MemRouter,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl RaftNetwork<TypeConfig> for MemConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.router
            .deliver(self.from, self.to, |r| async move {
                r.append_entries(rpc).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.router
            .deliver(self.from, self.to, |r| async move {
                r.install_snapshot(rpc).await
            })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.router
            .deliver(self.from, self.to, |r| async move { r.vote(rpc).await })
            .await
    }
}
