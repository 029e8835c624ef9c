//! Raft RPCs over TCP: length-prefixed frames, one request and one response at a
//! time per connection, a connection per peer kept open and re-dialled on error.
//!
//! Frame payload: `'R' | version | kind | postcard body`. Requests are
//! AppendEntries (1), Vote (2), InstallSnapshot (3), and from followers on behalf
//! of their clients: a read-index request (5) and a batch of forwarded writes
//! (7); and a join request (6) from a node that wants to become a member. The
//! response to kind `k` has kind `k | 0x80` and carries `Result<response, RaftError>`. The node's accept
//! loop recognises the `'R'` magic and hands such frames to [`handle_frame`].

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{NodeId, RaftOrdering, TypeConfig};
use crate::ordering::{Applied, OrderError};
use mesh_state::{Command, RequestId};

/// First byte of a Raft frame.
pub const MAGIC: u8 = b'R';
const VERSION: u8 = 1;
const APPEND: u8 = 1;
const VOTE: u8 = 2;
const SNAPSHOT: u8 = 3;
// Kind 4 (a single forwarded write) is retired: followers forward batches (7).
const READ_INDEX: u8 = 5;
const JOIN: u8 = 6;
const FORWARD_BATCH: u8 = 7;
const REPLY: u8 = 0x80;
/// Largest Raft frame (a snapshot chunk or a batch of entries).
pub const MAX_FRAME_BYTES: usize = 128 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a follower waits for the leader to apply a forwarded write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

fn encode<T: Serialize>(kind: u8, body: &T) -> Vec<u8> {
    let payload = postcard::to_allocvec(body).expect("encoding to a Vec cannot fail");
    let mut out = Vec::with_capacity(7 + payload.len());
    out.extend_from_slice(&((payload.len() + 3) as u32).to_be_bytes());
    out.extend_from_slice(&[MAGIC, VERSION, kind]);
    out.extend_from_slice(&payload);
    out
}

/// True if `payload` (a frame without its length) is a Raft frame.
pub fn is_raft_frame(payload: &[u8]) -> bool {
    payload.first() == Some(&MAGIC)
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(3..=MAX_FRAME_BYTES).contains(&len) {
        return Err(std::io::Error::other(format!(
            "bad Raft frame length {len}"
        )));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Answers one request frame (payload without the length prefix); returns the
/// whole response frame, or `None` for a frame that is not a valid request.
pub async fn handle_frame(node: &RaftOrdering, payload: &[u8]) -> Option<Vec<u8>> {
    let [MAGIC, VERSION, kind, body @ ..] = payload else {
        return None;
    };
    let raft = node.raft();
    match *kind {
        APPEND => {
            let req: AppendEntriesRequest<TypeConfig> = postcard::from_bytes(body).ok()?;
            Some(encode(APPEND | REPLY, &raft.append_entries(req).await))
        }
        VOTE => {
            let req: VoteRequest<NodeId> = postcard::from_bytes(body).ok()?;
            Some(encode(VOTE | REPLY, &raft.vote(req).await))
        }
        SNAPSHOT => {
            let req: InstallSnapshotRequest<TypeConfig> = postcard::from_bytes(body).ok()?;
            Some(encode(SNAPSHOT | REPLY, &raft.install_snapshot(req).await))
        }
        FORWARD_BATCH => {
            let items: Vec<(Command, Option<RequestId>)> = postcard::from_bytes(body).ok()?;
            if items.len() > super::forwarder::MAX_BATCH {
                return None;
            }
            // All queued for the batcher at once (it groups them into entries),
            // without a task per write.
            let results = node.propose_many_local(items).await;
            Some(encode(FORWARD_BATCH | REPLY, &results))
        }
        READ_INDEX => Some(encode(READ_INDEX | REPLY, &node.read_index_local().await)),
        JOIN => {
            let (id, addr, target, hops): (NodeId, String, usize, u8) =
                postcard::from_bytes(body).ok()?;
            let leader = node.raft().metrics().borrow().current_leader;
            let reply = if leader == Some(node.raft().metrics().borrow().id) {
                node.join_local(id, addr, target).await
            } else {
                // One hop to the leader; more would mean leadership is moving: retry later.
                match (hops, node.leader_addr()) {
                    (0, Some((l, leader_addr))) => one_shot::<_, Result<bool, OrderError>>(
                        l,
                        &leader_addr,
                        JOIN,
                        &(id, addr, target, 1u8),
                    )
                    .await
                    .and_then(|r| r),
                    _ => Err(OrderError::NotLeader { leader }),
                }
            };
            Some(encode(JOIN | REPLY, &reply))
        }
        _ => None,
    }
}

/// Serves requests on an already accepted connection until it closes.
pub async fn serve_connection(node: RaftOrdering, mut stream: TcpStream) {
    while let Ok(frame) = read_frame(&mut stream).await {
        let Some(reply) = handle_frame(&node, &frame).await else {
            return;
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// One request and its reply over a fresh connection (client forwarding).
async fn one_shot<Req: Serialize, Resp: DeserializeOwned>(
    leader: NodeId,
    addr: &str,
    kind: u8,
    req: &Req,
) -> Result<Resp, OrderError> {
    let unreachable = |e: std::io::Error| OrderError::LeaderUnreachable {
        leader,
        detail: e.to_string(),
    };
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        s.write_all(&encode(kind, req)).await?;
        read_frame(&mut s).await
    };
    let frame = tokio::time::timeout(FORWARD_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(std::io::Error::other("timed out")))?
        .map_err(unreachable)?;
    match frame.as_slice() {
        [MAGIC, VERSION, k, body @ ..] if *k == kind | REPLY => postcard::from_bytes(body)
            .map_err(|e| unreachable(std::io::Error::other(e.to_string()))),
        _ => Err(unreachable(std::io::Error::other("malformed reply"))),
    }
}

/// Asks the member at `via` to add node `id` (at `addr`); it forwards to the leader.
pub async fn request_join(
    via: &str,
    id: NodeId,
    addr: &str,
    target_voters: usize,
) -> Result<bool, OrderError> {
    // `via` is a seed address, not a known member id: report 0 if unreachable.
    one_shot::<_, Result<bool, OrderError>>(
        0,
        via,
        JOIN,
        &(id, addr.to_string(), target_voters, 0u8),
    )
    .await?
}

/// Sends a batch of writes to the leader over `conn` (or a new connection);
/// returns every outcome, in order, and the connection for reuse.
pub async fn forward_batch(
    leader: NodeId,
    addr: &str,
    conn: Option<TcpStream>,
    items: &[(Command, Option<RequestId>)],
) -> Result<(Vec<Result<Applied, OrderError>>, TcpStream), OrderError> {
    let unreachable = |e: std::io::Error| OrderError::LeaderUnreachable {
        leader,
        detail: e.to_string(),
    };
    let exchange = async {
        let mut s = match conn {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        s.write_all(&encode(FORWARD_BATCH, &items)).await?;
        let frame = read_frame(&mut s).await?;
        Ok::<_, std::io::Error>((frame, s))
    };
    let (frame, s) = tokio::time::timeout(FORWARD_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(std::io::Error::other("timed out")))?
        .map_err(unreachable)?;
    match frame.as_slice() {
        [MAGIC, VERSION, k, body @ ..] if *k == FORWARD_BATCH | REPLY => {
            let results = postcard::from_bytes(body)
                .map_err(|e| unreachable(std::io::Error::other(e.to_string())))?;
            Ok((results, s))
        }
        _ => Err(unreachable(std::io::Error::other("malformed reply"))),
    }
}

/// Asks the leader for a read index.
pub async fn forward_read_index(leader: NodeId, addr: &str) -> Result<u64, OrderError> {
    one_shot::<_, Result<u64, OrderError>>(leader, addr, READ_INDEX, &()).await?
}

/// Dials peers at their `BasicNode::addr`.
#[derive(Clone, Default)]
pub struct TcpNetwork;

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConn;
    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> TcpConn {
        TcpConn {
            target,
            addr: node.addr.clone(),
            stream: None,
        }
    }
}

/// A connection to one peer.
pub struct TcpConn {
    target: NodeId,
    addr: String,
    stream: Option<TcpStream>,
}

impl TcpConn {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &mut self,
        kind: u8,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        E: std::error::Error + DeserializeOwned,
        Result<Resp, E>: DeserializeOwned,
    {
        let unreachable = |e: std::io::Error| RPCError::Unreachable(Unreachable::new(&e));
        if self.stream.is_none() {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| unreachable(std::io::Error::other("connect timed out")))?
                .map_err(unreachable)?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("just connected");
        let exchange = async {
            stream.write_all(&encode(kind, req)).await?;
            read_frame(stream).await
        };
        let frame = match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                self.stream = None;
                return Err(unreachable(e));
            }
            Err(_) => {
                self.stream = None;
                return Err(RPCError::Network(NetworkError::new(
                    &std::io::Error::other("RPC timed out"),
                )));
            }
        };
        let [MAGIC, VERSION, k, body @ ..] = frame.as_slice() else {
            self.stream = None;
            return Err(unreachable(std::io::Error::other("malformed reply")));
        };
        if *k != kind | REPLY {
            self.stream = None;
            return Err(unreachable(std::io::Error::other(
                "reply of the wrong kind",
            )));
        }
        let result: Result<Resp, E> = postcard::from_bytes(body)
            .map_err(|e| unreachable(std::io::Error::other(e.to_string())))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for TcpConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(APPEND, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(VOTE, &rpc, option.hard_ttl()).await
    }
}
