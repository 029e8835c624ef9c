//! An in-process Raft network for tests: every node's `Raft` handle in one
//! router, with links that can be cut and healed.

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
}

/// The shared router.
#[derive(Clone, Default)]
pub struct MemRouter {
    inner: Arc<Mutex<Inner>>,
}

impl MemRouter {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn add(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.lock().nodes.insert(id, raft);
    }
    /// The node is gone (crashed): nothing reaches it.
    pub fn remove(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }
    pub fn heal(&self, id: NodeId) {
        self.lock().isolated.remove(&id);
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
        let raft = self
            .router
            .target(self.from, self.to)
            .map_err(RPCError::Unreachable)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let raft = self
            .router
            .target(self.from, self.to)
            .map_err(RPCError::Unreachable)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let raft = self
            .router
            .target(self.from, self.to)
            .map_err(RPCError::Unreachable)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}
