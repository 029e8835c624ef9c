//! The messaging runtime: one task drives this node's [`mesh_msg::Messenger`]
//! over real sockets and a real clock.
//!
//! In: calls from the service (publish, direct sends, subscriptions, system
//! events), wire messages from peers (read by the accept loop from `'M'`
//! connections), the member list (a watch the membership loop republishes on
//! every change), and a 20 ms tick. Out: one persistent TCP connection per
//! peer, written by its own task from a bounded queue (a full queue or a broken
//! connection drops frames: the core re-sends what was not acknowledged), each
//! subscription's bounded queue (a subscriber that does not keep up loses
//! messages and is told how many), and the replies of calls waiting for their
//! reports.
//!
//! Connection: the dialer's first frame is `'M' | version | its node name`;
//! every later frame is one postcard-encoded [`Wire`]. Frames go one way; a
//! peer answers over its own connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::consensus::MembersView;
use crate::metrics::Metrics;
use mesh_membership::MemberState;
use mesh_msg::core::Stats;
use mesh_msg::{
    Config, DirectReport, Message, Messenger, MsgError, OpId, Output, PeerInfo, PeerQueue,
    PublishReport, Recipient, SubId, Wire,
};
use mesh_proto::{FrameError, decode_frame, encode_frame};

/// First byte of a messaging connection's hello frame. Distinct from every
/// other first byte a node's TCP port takes: the accept loop routes a
/// connection by it (membership's anti-entropy frames start with `'M'`).
pub const MAGIC: u8 = b'S';
const VERSION: u8 = 1;
/// Messages waiting in one subscription's queue before it starts losing them.
pub const SUBSCRIBER_QUEUE: usize = 4_096;
/// Frames waiting for one peer's connection.
const LINK_QUEUE: usize = 8_192;
const TICK: Duration = Duration::from_millis(20);

/// What a subscription receives.
#[derive(Debug, Clone)]
pub enum SubEvent {
    /// A message published on a channel the subscription matches.
    Message(Arc<Message>),
    /// This many messages were dropped because the subscriber fell behind.
    Lagged(u64),
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    /// This node's id of the subscription.
    pub id: SubId,
    /// The subscription's queue: messages, and losses when it falls behind.
    pub rx: mpsc::Receiver<SubEvent>,
    tx: mpsc::Sender<Req>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Err(mpsc::error::TrySendError::Full(req)) =
            self.tx.try_send(Req::Unsubscribe(self.id))
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let tx = self.tx.clone();
            rt.spawn(async move {
                let _ = tx.send(req).await;
            });
        }
    }
}

/// Why a messaging call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessagingError {
    /// The messaging core refused the call (bad channel, payload too big, ...).
    #[error(transparent)]
    Refused(#[from] MsgError),
    /// The runtime's task is gone (the node is shutting down).
    #[error("the messaging runtime stopped")]
    Stopped,
}

/// A snapshot for status pages and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessagingStatus {
    /// The core's counters since start (published, delivered, ...).
    pub stats: Stats,
    /// Each peer's outgoing queue.
    pub peers: Vec<PeerQueue>,
    /// Live subscriptions on this node.
    pub subscriptions: usize,
    /// Messages dropped because a subscriber fell behind.
    pub dropped_slow_subscriber: u64,
    /// System events dropped because the runtime's queue was full.
    pub dropped_system_events: u64,
}

/// Subscriptions across the mesh, as the nodes that answered in time
/// reported them (for Redis's `PUBSUB`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MeshSubscriptions {
    /// Each pattern (a plain channel name is a pattern too) and how many
    /// subscriptions hold it, summed over the nodes that answered.
    pub patterns: BTreeMap<String, u32>,
    /// Nodes asked, this one included.
    pub nodes_asked: usize,
    /// Nodes that answered, this one included.
    pub nodes_answered: usize,
}

/// How long a subscription query waits for the other nodes.
pub const SUBS_QUERY_WAIT: Duration = Duration::from_millis(500);

struct SubsQuery {
    waiting: std::collections::BTreeSet<String>,
    acc: MeshSubscriptions,
    deadline: Instant,
    reply: oneshot::Sender<MeshSubscriptions>,
}

/// Where the first receipt of a direct send goes.
type DirectReply = oneshot::Sender<Result<(OpId, DirectReport), MsgError>>;

enum Req {
    Publish {
        from: String,
        channel: String,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<PublishReport, MsgError>>,
    },
    Direct {
        from: String,
        to: Recipient,
        dests: Vec<String>,
        payload: Vec<u8>,
        ttl_ms: u64,
        reply: DirectReply,
    },
    Report {
        op: OpId,
        reply: oneshot::Sender<Option<DirectReport>>,
    },
    Subscribe {
        patterns: Vec<String>,
        queue: mpsc::Sender<SubEvent>,
        reply: oneshot::Sender<Result<SubId, MsgError>>,
    },
    Unsubscribe(SubId),
    Local {
        channel: String,
        payload: Vec<u8>,
    },
    Status(oneshot::Sender<MessagingStatus>),
    MeshSubs(oneshot::Sender<MeshSubscriptions>),
}

/// The handle the service holds; clones share one runtime.
#[derive(Clone)]
pub struct Messaging {
    tx: mpsc::Sender<Req>,
    node: Arc<str>,
    /// Live subscriptions, kept by the runtime: system events are not even
    /// serialized while there are none.
    subscriptions: Arc<AtomicUsize>,
    /// System events that found the runtime's queue full.
    dropped_system: Arc<AtomicU64>,
}

impl Messaging {
    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node has a live subscription (system events are not
    /// worth building otherwise).
    pub fn has_subscribers(&self) -> bool {
        self.subscriptions.load(AtomicOrdering::Relaxed) > 0
    }

    async fn call<T>(&self, req: Req, rx: oneshot::Receiver<T>) -> Result<T, MessagingError> {
        self.tx
            .send(req)
            .await
            .map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)
    }

    /// Publishes to a channel on every node; returns once every reachable
    /// node acknowledged (or the wait ran out), with the receivers counted.
    pub async fn publish(
        &self,
        from: &str,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<PublishReport, MessagingError> {
        let (reply, rx) = oneshot::channel();
        let req = Req::Publish {
            from: from.to_string(),
            channel: channel.to_string(),
            payload,
            reply,
        };
        Ok(self.call(req, rx).await??)
    }

    /// Sends a direct message held by the nodes `dests`; returns its first receipt.
    pub async fn send_direct(
        &self,
        from: &str,
        to: Recipient,
        dests: Vec<String>,
        payload: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(OpId, DirectReport), MessagingError> {
        let (reply, rx) = oneshot::channel();
        let req = Req::Direct {
            from: from.to_string(),
            to,
            dests,
            payload,
            ttl_ms,
            reply,
        };
        Ok(self.call(req, rx).await??)
    }

    /// The current receipt of a direct send of this node.
    pub async fn direct_report(&self, op: OpId) -> Result<Option<DirectReport>, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.call(Req::Report { op, reply }, rx).await
    }

    /// Subscribes to every channel matching one of `patterns`.
    pub async fn subscribe(&self, patterns: Vec<String>) -> Result<Subscription, MessagingError> {
        let (queue, sub_rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let (reply, rx) = oneshot::channel();
        let req = Req::Subscribe {
            patterns,
            queue,
            reply,
        };
        let id = self.call(req, rx).await??;
        Ok(Subscription {
            id,
            rx: sub_rx,
            tx: self.tx.clone(),
        })
    }

    /// Publishes a system event to this node's subscribers (never waits:
    /// an event that finds the runtime's queue full is dropped and counted).
    pub fn publish_local(&self, channel: &str, payload: Vec<u8>) -> bool {
        let sent = self
            .tx
            .try_send(Req::Local {
                channel: channel.to_string(),
                payload,
            })
            .is_ok();
        if !sent {
            self.dropped_system.fetch_add(1, AtomicOrdering::Relaxed);
        }
        sent
    }

    /// Counters, peer queues and subscriptions of this node's runtime.
    pub async fn status(&self) -> Result<MessagingStatus, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.call(Req::Status(reply), rx).await
    }

    /// Subscriptions on every reachable node (at most [`SUBS_QUERY_WAIT`]).
    pub async fn mesh_subscriptions(&self) -> Result<MeshSubscriptions, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.call(Req::MeshSubs(reply), rx).await
    }
}

/// Starts the runtime for node `me` of incarnation `epoch`. Wire messages
/// read by the accept loop come in on the returned sender.
pub fn start(
    me: String,
    epoch: u64,
    members: MembersView,
    metrics: Arc<Metrics>,
) -> (Messaging, mpsc::Sender<(String, Wire)>) {
    let (tx, rx) = mpsc::channel(4_096);
    let (wire_tx, wire_rx) = mpsc::channel(16_384);
    let subscriptions = Arc::new(AtomicUsize::new(0));
    let dropped_system = Arc::new(AtomicU64::new(0));
    let handle = Messaging {
        tx,
        node: me.as_str().into(),
        subscriptions: subscriptions.clone(),
        dropped_system: dropped_system.clone(),
    };
    let rt = Runtime {
        subscriptions,
        dropped_system,
        core: Messenger::new(me.clone(), epoch, Config::default()),
        me,
        started: Instant::now(),
        subs: BTreeMap::new(),
        publishes: BTreeMap::new(),
        directs: BTreeMap::new(),
        links: BTreeMap::new(),
        addrs: BTreeMap::new(),
        dropped_slow: 0,
        metrics,
        reachable: Default::default(),
        queries: BTreeMap::new(),
        next_query: 0,
    };
    tokio::spawn(rt.run(rx, wire_rx, members));
    (handle, wire_tx)
}

struct SubQueue {
    queue: mpsc::Sender<SubEvent>,
    lagged: u64,
}

struct Runtime {
    subscriptions: Arc<AtomicUsize>,
    dropped_system: Arc<AtomicU64>,
    core: Messenger,
    me: String,
    started: Instant,
    subs: BTreeMap<SubId, SubQueue>,
    publishes: BTreeMap<OpId, oneshot::Sender<Result<PublishReport, MsgError>>>,
    directs: BTreeMap<OpId, DirectReply>,
    links: BTreeMap<String, mpsc::Sender<Vec<u8>>>,
    addrs: BTreeMap<String, String>,
    dropped_slow: u64,
    metrics: Arc<Metrics>,
    /// Peers alive in the membership view (asked by subscription queries).
    reachable: std::collections::BTreeSet<String>,
    queries: BTreeMap<u64, SubsQuery>,
    next_query: u64,
}

impl Runtime {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Req>,
        mut wires: mpsc::Receiver<(String, Wire)>,
        mut members: MembersView,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.members_changed(&members.borrow_and_update().clone());
        loop {
            tokio::select! {
                req = rx.recv() => match req {
                    Some(req) => self.request(req),
                    None => return,
                },
                Some((from, wire)) = wires.recv() => {
                    let now = self.now_ms();
                    self.wire(now, &from, wire);
                    // Take whatever else is waiting before flushing once.
                    while let Ok((from, wire)) = wires.try_recv() {
                        self.wire(now, &from, wire);
                    }
                }
                changed = members.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let list = members.borrow_and_update().clone();
                    self.members_changed(&list);
                }
                _ = tick.tick() => {
                    let now = self.now_ms();
                    self.core.tick(now);
                    self.export_metrics();
                    self.expire_queries();
                }
            }
            self.carry_out();
        }
    }

    /// A wire message from a peer: subscription queries here, the rest to the core.
    fn wire(&mut self, now: u64, from: &str, wire: Wire) {
        match wire {
            Wire::SubsQuery { id } => {
                let report = Wire::SubsReport {
                    id,
                    patterns: self.local_patterns().into_iter().collect(),
                };
                self.send(from, &report);
            }
            Wire::SubsReport { id, patterns } => {
                let Some(q) = self.queries.get_mut(&id) else {
                    return;
                };
                if q.waiting.remove(from) {
                    q.acc.nodes_answered += 1;
                    for (p, n) in patterns {
                        *q.acc.patterns.entry(p).or_default() += n;
                    }
                }
                if q.waiting.is_empty() {
                    let q = self.queries.remove(&id).expect("present");
                    let _ = q.reply.send(q.acc);
                }
            }
            other => self.core.handle(now, from, other),
        }
    }

    /// This node's subscription patterns and how many subscriptions hold each.
    fn local_patterns(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for (_, patterns) in self.core.subscriptions() {
            for p in patterns {
                *out.entry(p.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Answers the queries whose wait ran out with what arrived.
    fn expire_queries(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let q = self.queries.remove(&id).expect("present");
            let _ = q.reply.send(q.acc);
        }
    }

    fn request(&mut self, req: Req) {
        let now = self.now_ms();
        let unix = crate::service::unix_ms();
        match req {
            Req::Publish {
                from,
                channel,
                payload,
                reply,
            } => match self.core.publish(now, &from, &channel, payload, unix) {
                Ok(op) => {
                    self.publishes.insert(op, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Req::Direct {
                from,
                to,
                dests,
                payload,
                ttl_ms,
                reply,
            } => match self
                .core
                .send_direct(now, &from, to, &dests, payload, ttl_ms, unix)
            {
                Ok(op) => {
                    self.directs.insert(op, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Req::Report { op, reply } => {
                let _ = reply.send(self.core.direct_report(op).cloned());
            }
            Req::Subscribe {
                patterns,
                queue,
                reply,
            } => {
                // Register the queue first: a mailbox drained by the subscribe
                // comes out as deliveries to the new id.
                let result = self.core.subscribe(now, patterns);
                if let Ok(id) = result {
                    self.subs.insert(id, SubQueue { queue, lagged: 0 });
                    self.subscriptions
                        .store(self.subs.len(), AtomicOrdering::Relaxed);
                }
                let _ = reply.send(result);
            }
            Req::Unsubscribe(id) => {
                let _ = self.core.unsubscribe(id);
                self.subs.remove(&id);
                self.subscriptions
                    .store(self.subs.len(), AtomicOrdering::Relaxed);
            }
            Req::Local { channel, payload } => {
                self.core.publish_local(now, &channel, payload, unix);
            }
            Req::MeshSubs(reply) => {
                let acc = MeshSubscriptions {
                    patterns: self.local_patterns(),
                    nodes_asked: 1 + self.reachable.len(),
                    nodes_answered: 1,
                };
                if self.reachable.is_empty() {
                    let _ = reply.send(acc);
                    return;
                }
                self.next_query += 1;
                let id = self.next_query;
                let peers: Vec<String> = self.reachable.iter().cloned().collect();
                for p in &peers {
                    self.send(p, &Wire::SubsQuery { id });
                }
                self.queries.insert(
                    id,
                    SubsQuery {
                        waiting: peers.into_iter().collect(),
                        acc,
                        deadline: Instant::now() + SUBS_QUERY_WAIT,
                        reply,
                    },
                );
            }
            Req::Status(reply) => {
                let _ = reply.send(MessagingStatus {
                    stats: self.core.stats(),
                    peers: self.core.peer_queues(),
                    subscriptions: self.subs.len(),
                    dropped_slow_subscriber: self.dropped_slow,
                    dropped_system_events: self.dropped_system.load(AtomicOrdering::Relaxed),
                });
            }
        }
    }

    fn members_changed(&mut self, list: &[mesh_membership::MemberInfo]) {
        let mut peers = Vec::new();
        // One entry per name: its newest incarnation (a restarted member can
        // be listed under its old generation too).
        let mut newest: BTreeMap<&str, &mesh_membership::MemberInfo> = BTreeMap::new();
        for m in list.iter().filter(|m| !m.is_self) {
            let e = newest.entry(m.id.as_str()).or_insert(m);
            if m.generation > e.generation {
                *e = m;
            }
        }
        for m in newest.into_values() {
            let reachable = match m.state {
                MemberState::Alive => true,
                // A dead member may be a false positive or restart soon: what
                // waits for it stays until its TTL (pub/sub: 10 s), and moves
                // to its new incarnation if it comes back.
                MemberState::Suspect | MemberState::Dead => false,
                // A member that left said goodbye: its streams end.
                MemberState::Left => continue,
            };
            if self.addrs.get(&m.id) != Some(&m.addr) {
                // A new address (or a restart on another port): a new connection.
                self.links.remove(&m.id);
                self.addrs.insert(m.id.clone(), m.addr.clone());
            }
            // Its messenger's incarnation is learned from the peer itself.
            peers.push(PeerInfo {
                name: m.id.clone(),
                reachable,
            });
        }
        self.reachable = peers
            .iter()
            .filter(|p| p.reachable)
            .map(|p| p.name.clone())
            .collect();
        let keep: std::collections::BTreeSet<&str> =
            peers.iter().map(|p| p.name.as_str()).collect();
        self.links.retain(|k, _| keep.contains(k.as_str()));
        let now = self.now_ms();
        self.core.set_peers(now, &peers);
    }

    fn carry_out(&mut self) {
        let outs: Vec<Output> = self.core.drain_outputs().collect();
        for o in outs {
            match o {
                Output::Send { to, wire } => self.send(&to, &wire),
                Output::Deliver { subs, msg } => {
                    for id in subs {
                        let Some(sub) = self.subs.get_mut(&id) else {
                            continue;
                        };
                        if sub.lagged > 0
                            && sub.queue.try_send(SubEvent::Lagged(sub.lagged)).is_ok()
                        {
                            sub.lagged = 0;
                        }
                        match sub.queue.try_send(SubEvent::Message(msg.clone())) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                sub.lagged += 1;
                                self.dropped_slow += 1;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                // The subscriber went away; its Drop unsubscribes.
                            }
                        }
                    }
                }
                Output::Published { op, report } => {
                    if let Some(reply) = self.publishes.remove(&op) {
                        let _ = reply.send(Ok(report));
                    }
                }
                Output::Direct { op, report } => {
                    if let Some(reply) = self.directs.remove(&op) {
                        let _ = reply.send(Ok((op, report)));
                    }
                }
            }
        }
    }

    fn send(&mut self, to: &str, wire: &Wire) {
        if !self.links.contains_key(to) {
            let Some(addr) = self.addrs.get(to) else {
                return;
            };
            let link = spawn_link(self.me.clone(), addr.clone(), self.metrics.clone());
            self.links.insert(to.to_string(), link);
        }
        let link = &self.links[to];
        if link.try_send(encode_frame(&wire.encode())).is_err() {
            // Full or closed: the core re-sends what stays unacknowledged.
            self.metrics.drop_packet("msg_link_full");
            if link.is_closed() {
                self.links.remove(to);
            }
        }
    }

    fn export_metrics(&self) {
        let s = self.core.stats();
        for (kind, v) in [
            ("published", s.published),
            ("delivered", s.delivered),
            ("direct_sent", s.direct_sent),
            ("retransmitted", s.retransmitted_items),
            ("expired", s.expired),
            ("dropped_full", s.dropped_full),
            ("dropped_slow_subscriber", self.dropped_slow),
            (
                "dropped_system_events",
                self.dropped_system.load(AtomicOrdering::Relaxed),
            ),
            ("queued_now", s.queued_now),
            ("mailboxed_now", s.mailboxed_now),
        ] {
            self.metrics
                .msg
                .get_or_create(&crate::metrics::KindLabel {
                    kind: kind.to_string(),
                })
                .set(v as i64);
        }
    }
}

/// A connection to one peer, written from a queue; it ends when the queue's
/// sender is dropped or the connection breaks (the next send opens another).
fn spawn_link(me: String, addr: String, metrics: Arc<Metrics>) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE);
    tokio::spawn(async move {
        let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr));
        let Ok(Ok(mut sock)) = connect.await else {
            metrics.drop_packet("msg_connect_failed");
            return;
        };
        let _ = sock.set_nodelay(true);
        let mut hello = vec![MAGIC, VERSION];
        hello.extend_from_slice(me.as_bytes());
        if sock.write_all(&encode_frame(&hello)).await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        while let Some(frame) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&frame);
            // Coalesce what is already queued into one write.
            while buf.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(f) => buf.extend_from_slice(&f),
                    Err(_) => break,
                }
            }
            if sock.write_all(&buf).await.is_err() {
                metrics.drop_packet("msg_link_broken");
                return;
            }
        }
    });
    tx
}

/// Serves an accepted messaging connection: reads the hello, then hands every
/// wire message to the runtime. Bad frames end the connection.
pub async fn serve_connection(
    mut sock: TcpStream,
    wires: mpsc::Sender<(String, Wire)>,
    metrics: Arc<Metrics>,
) {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut from: Option<String> = None;
    loop {
        let n = match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used_total = 0;
        loop {
            match decode_frame(&buf[used_total..]) {
                Ok((payload, used)) => {
                    used_total += used;
                    match &from {
                        None => {
                            let [MAGIC, VERSION, name @ ..] = payload else {
                                metrics.drop_packet("msg_bad_hello");
                                return;
                            };
                            let Ok(name) = std::str::from_utf8(name) else {
                                metrics.drop_packet("msg_bad_hello");
                                return;
                            };
                            from = Some(name.to_string());
                        }
                        Some(name) => match Wire::decode(payload) {
                            Ok(w) => {
                                if wires.send((name.clone(), w)).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => {
                                metrics.drop_packet("msg_bad_frame");
                                return;
                            }
                        },
                    }
                }
                Err(FrameError::Incomplete { .. }) => break,
                Err(_) => {
                    metrics.drop_packet("msg_bad_frame");
                    return;
                }
            }
        }
        buf.drain(..used_total);
    }
}
