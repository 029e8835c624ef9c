//! The node loop: sockets, timers and the membership core.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::config::NodeConfig;
use crate::engine::Engine;
use crate::metrics::{KindLabel, Metrics, PeerLabel, StateLabel};
use crate::procstat::{CpuSampler, resident_bytes};
use crate::status::{Health, StatusSnapshot};
use mesh_membership::{
    Channel, CoreTimer, EventKind, Membership, MembershipConfig, MembershipEvent, Output, PeerId,
};
use mesh_proto::limits::{MAX_DATAGRAM_ACCEPT_BYTES, MAX_FRAME_BYTES, MAX_INBOUND_CONNECTIONS};
use mesh_proto::{FrameError, SoftState, decode_frame, encode_frame};

/// Requests to the node loop.
pub enum Request {
    /// Send back a snapshot of the membership view and this node's health.
    Status(oneshot::Sender<StatusSnapshot>),
    /// Ask the member at this address to let us in, unless it is one already.
    Contact(SocketAddr),
    /// Leave the mesh gracefully (peers record `left`) and stop the loop;
    /// the sender is answered once the leave went out.
    Leave(oneshot::Sender<()>),
}

/// A running node.
pub struct NodeHandle {
    /// This node's name in the mesh (given, persisted or generated).
    pub node_id: String,
    /// The bound UDP gossip / TCP RPC address (the real port when 0 was asked).
    pub gossip_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// Requests to the node loop.
    pub requests: mpsc::Sender<Request>,
    /// The node's Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The one API every front end goes through.
    pub service: crate::service::Service,
    /// The bound HTTP socket, for the caller's HTTP front end to serve
    /// (`mesh-api`); connections wait in its backlog until then.
    pub http_listener: Option<TcpListener>,
    /// The Redis endpoint's bound socket, if configured (served by `mesh-api`).
    pub resp_listener: Option<TcpListener>,
    /// The Redis endpoint's bound address, if configured.
    pub resp_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeHandle {
    /// Asks for a status snapshot.
    pub async fn status(&self) -> Option<StatusSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Leaves the mesh gracefully and waits for the loop to stop.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or its node-id file could not be created, read or written.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The data directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// mDNS discovery was asked for and could not start.
    #[error("cannot start mDNS discovery: {0}")]
    Mdns(String),
    /// The ordering engine (Raft log or pBFT replica) could not be opened.
    #[error("cannot open the replicated log: {0}")]
    Consensus(String),
    /// A listening socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which socket: `UDP`, `TCP`, `HTTP` or `Redis (RESP)`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads the persisted node id, or stores `wanted` / a generated one.
fn node_id(dir: &Path, wanted: Option<&str>) -> Result<String, StartError> {
    let err = |source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let file = dir.join("node-id");
    if let Some(id) = wanted {
        std::fs::write(&file, id).map_err(err)?;
        return Ok(id.to_string());
    }
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    // Not cryptographic: a name only needs to be unlikely to collide.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = (nanos as u64)
        ^ ((std::process::id() as u64) << 32)
        ^ (dir.as_os_str().len() as u64).rotate_left(17);
    let id = format!(
        "node-{:08x}",
        (mix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
    );
    std::fs::write(&file, &id).map_err(err)?;
    Ok(id)
}

/// Binds UDP and TCP on the same port (picking a free one for port 0).
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let bind_err = |what, source| StartError::Bind { what, addr, source };
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_err("UDP", e))?;
        let port = udp.local_addr().map_err(|e| bind_err("UDP", e))?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() != 0 => return Err(bind_err("TCP", e)),
            Err(_) => continue, // that UDP port's TCP twin is taken; try another
        }
    }
    Err(bind_err(
        "TCP",
        std::io::Error::other("no port free for both UDP and TCP"),
    ))
}

/// Starts a node: binds its sockets (the HTTP and Redis ones for the caller's
/// front ends to serve), opens the ordering engine and spawns the node loop.
pub async fn start(cfg: NodeConfig) -> Result<NodeHandle, StartError> {
    let name = node_id(&cfg.data_dir, cfg.node_id.as_deref())?;
    let (udp, tcp) = bind_pair(cfg.bind).await?;
    let gossip_addr = udp.local_addr().map_err(|e| StartError::Bind {
        what: "UDP",
        addr: cfg.bind,
        source: e,
    })?;
    let http_listener = TcpListener::bind(cfg.http)
        .await
        .map_err(|source| StartError::Bind {
            what: "HTTP",
            addr: cfg.http,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "HTTP",
            addr: cfg.http,
            source,
        })?;
    let resp_listener = match cfg.resp {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    what: "Redis (RESP)",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let resp_addr = resp_listener.as_ref().and_then(|l| l.local_addr().ok());

    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let identity = PeerId {
        name: name.clone(),
        addr: gossip_addr,
        generation,
    };
    let metrics = Arc::new(Metrics::new());
    let (req_tx, req_rx) = mpsc::channel(64);
    let (frame_tx, frame_rx) = mpsc::channel(1024);
    let (members_tx, members_rx) = watch::channel(Arc::new(Vec::new()));

    let engine = match &cfg.pbft_genesis {
        Some(genesis) => crate::engine::Engine::Pbft(
            crate::pbft_setup::open(&cfg.data_dir, &name, genesis, members_rx.clone())
                .map_err(StartError::Consensus)?,
        ),
        None => crate::consensus::open_raft(&cfg.data_dir, &name)
            .await
            .map_err(StartError::Consensus)?,
    };
    let (messaging, wire_tx) = crate::messaging::start(
        name.clone(),
        generation,
        members_rx.clone(),
        metrics.clone(),
    );
    tokio::spawn(accept_loop(
        tcp,
        frame_tx,
        wire_tx,
        engine.clone(),
        metrics.clone(),
    ));
    crate::system_events::spawn(engine.clone(), members_rx.clone(), messaging.clone());
    crate::consensus::spawn_join(engine.clone(), gossip_addr, cfg.join.clone(), cfg.voters);
    crate::consensus::spawn_keeper(
        engine.clone(),
        members_rx.clone(),
        req_tx.clone(),
        crate::consensus::ConsensusSettings {
            voters: cfg.voters,
            replace_dead_after_ms: cfg.replace_dead_after_ms,
        },
    );
    crate::consensus::spawn_task_clock(engine.clone());
    let work: WorkProbe = {
        use mesh_consensus::Ordering as _;
        let (state, me) = (engine.state(), name.clone());
        Arc::new(move || {
            let sm = state.read().unwrap_or_else(|e| e.into_inner());
            let t = &sm.tasks;
            let (running, queued) = (t.running_counts(), t.queue_depths());
            let mut sum = (0u32, 0u32, 0u32);
            for a in sm.agents.values().filter(|a| a.node == me) {
                sum.0 += running.get(&a.id).copied().unwrap_or(0) as u32;
                sum.1 += queued.get(&a.id).copied().unwrap_or(0) as u32;
                sum.2 += t.capacity.get(&a.id).copied().unwrap_or(0);
            }
            sum
        })
    };
    let service = crate::service::Service::new(
        engine,
        name.clone(),
        req_tx.clone(),
        members_rx,
        metrics.clone(),
        messaging.clone(),
    );
    crate::service::history::spawn(service.clone());

    let soft = SoftState {
        zone: cfg.zone.clone(),
        caps: cfg.caps.clone(),
        http_addr: Some(http_addr.to_string()),
        ..Default::default()
    };
    let seed = generation ^ (gossip_addr.port() as u64).rotate_left(40);
    let core_cfg = MembershipConfig::new(cfg.profile.timings(), cfg.join.clone());
    let core = Membership::new(identity, core_cfg, seed, 0, soft);
    let (found_tx, found_rx) = mpsc::channel(256);
    let mdns = if cfg.mdns {
        Some(
            crate::mdns::start(&name, gossip_addr, found_tx)
                .map_err(|e| StartError::Mdns(e.to_string()))?,
        )
    } else {
        drop(found_tx);
        None
    };
    tracing::info!(node = %name, gossip = %gossip_addr, http = %http_addr, profile = %cfg.profile, seeds = ?cfg.join, "node starting");

    let looper = Loop {
        core,
        udp: Arc::new(udp),
        started: Instant::now(),
        timers: BinaryHeap::new(),
        timer_seq: 0,
        metrics: metrics.clone(),
        streams: Arc::new(Semaphore::new(64)),
        cpu: CpuSampler::new(),
        samples: VecDeque::new(),
        last_cpu: None,
        profile: cfg.profile.to_string(),
        http: http_addr.to_string(),
        seeds: cfg.join.clone(),
        mdns,
        started_unix_ms: generation,
        members_tx,
        members_dirty: true,
        work,
        messaging,
    };
    let task = tokio::spawn(looper.run(req_rx, frame_rx, found_rx));
    Ok(NodeHandle {
        node_id: name,
        gossip_addr,
        http_addr,
        requests: req_tx,
        metrics,
        service,
        http_listener: Some(http_listener),
        resp_listener,
        resp_addr,
        task,
    })
}

/// Accepts TCP connections and routes each by the first byte of its first
/// frame: Raft (`'R'`) or pBFT (`'P'`) to the engine, messaging (`'S'`) to
/// the messaging runtime, membership's anti-entropy (`'M'`) to the loop one
/// frame at a time; anything else is dropped and counted.
async fn accept_loop(
    listener: TcpListener,
    frames: mpsc::Sender<Vec<u8>>,
    wires: mpsc::Sender<(String, mesh_msg::Wire)>,
    engine: Engine,
    metrics: Arc<Metrics>,
) {
    let limit = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
    loop {
        let Ok((sock, _peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.drop_packet("too_many_connections");
            continue;
        };
        let frames = frames.clone();
        let wires = wires.clone();
        let metrics = metrics.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match (first_frame_magic(&sock).await, &engine) {
                (Some(mesh_consensus::raft::net_tcp::MAGIC), Engine::Raft(raft)) => {
                    let _ = sock.set_nodelay(true);
                    mesh_consensus::raft::net_tcp::serve_connection(raft.clone(), sock).await;
                }
                (Some(mesh_consensus::pbft::engine::MAGIC), Engine::Pbft(pbft)) => {
                    mesh_consensus::pbft::net_tcp::serve_connection(pbft.clone(), sock).await;
                }
                // The other engine's frames: a misconfigured peer.
                (
                    Some(
                        mesh_consensus::raft::net_tcp::MAGIC | mesh_consensus::pbft::engine::MAGIC,
                    ),
                    _,
                ) => {
                    metrics.drop_packet("wrong_consensus_engine");
                }
                (Some(crate::messaging::MAGIC), _) => {
                    crate::messaging::serve_connection(sock, wires, metrics).await
                }
                (Some(mesh_membership::wire::MAGIC), _) => {
                    read_membership_frames(sock, frames, metrics).await
                }
                (Some(_), _) => metrics.drop_packet("unknown_stream"),
                (None, _) => {}
            }
        });
    }
}

/// Peeks at the first byte after the first frame's length, without consuming
/// anything. `None` if the peer sends nothing useful within 10 s.
async fn first_frame_magic(sock: &TcpStream) -> Option<u8> {
    let mut head = [0u8; 5];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline, sock.peek(&mut head))
            .await
            .ok()?
            .ok()?;
        match n {
            0 => return None,
            5 => return Some(head[4]),
            // A frame header split across packets (rare): wait for the rest.
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// Reads membership frames from one connection and forwards each to the loop.
async fn read_membership_frames(
    mut sock: TcpStream,
    frames: mpsc::Sender<Vec<u8>>,
    metrics: Arc<Metrics>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk)).await;
        let n = match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match decode_frame(&buf) {
                Ok((payload, used)) => {
                    if frames.try_send(payload.to_vec()).is_err() {
                        metrics.drop_packet("queue_full");
                    }
                    buf.drain(..used);
                }
                Err(FrameError::Incomplete { .. }) => break,
                Err(FrameError::TooLarge { .. }) => {
                    metrics.drop_packet("oversized_frame");
                    return;
                }
                Err(FrameError::Empty) => {
                    metrics.drop_packet("empty_frame");
                    return;
                }
            }
        }
        if buf.len() > MAX_FRAME_BYTES + 4 {
            metrics.drop_packet("oversized_frame");
            return;
        }
    }
}

/// One traffic sample for per-second rates.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    msgs_in: u64,
    msgs_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

struct Loop {
    core: Membership<PeerId>,
    udp: Arc<UdpSocket>,
    started: Instant,
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    timer_seq: u64,
    metrics: Arc<Metrics>,
    streams: Arc<Semaphore>,
    cpu: CpuSampler,
    samples: VecDeque<Sample>,
    last_cpu: Option<f32>,
    profile: String,
    http: String,
    seeds: Vec<SocketAddr>,
    mdns: Option<mdns_sd::ServiceDaemon>,
    started_unix_ms: u64,
    /// The member list for consensus and the service, republished after
    /// membership events and every sample.
    members_tx: watch::Sender<Arc<Vec<mesh_membership::MemberInfo>>>,
    members_dirty: bool,
    /// (running, queued, slots) of the tasks of this node's agents, for the
    /// load this node gossips.
    work: WorkProbe,
    /// Membership events go out on the system channels.
    messaging: crate::messaging::Messaging,
}

/// Reads this node's task load from the local replica.
type WorkProbe = Arc<dyn Fn() -> (u32, u32, u32) + Send + Sync>;

/// Rates are averaged over this window.
const RATE_WINDOW: usize = 10;

impl Loop {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }

    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut frames: mpsc::Receiver<Vec<u8>>,
        mut found: mpsc::Receiver<SocketAddr>,
    ) {
        let mut pending: std::collections::HashMap<u64, CoreTimer<PeerId>> =
            std::collections::HashMap::new();
        let now = self.now_us();
        self.core.start(now);
        self.flush(&mut pending).await;
        let mut buf = vec![0u8; MAX_DATAGRAM_ACCEPT_BYTES + 1];
        let mut sample_every = tokio::time::interval(Duration::from_secs(1));
        let udp = self.udp.clone();
        loop {
            let next_due = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = async {
                match next_due {
                    Some(at) => {
                        tokio::time::sleep_until((self.started + Duration::from_millis(at)).into())
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                recv = udp.recv_from(&mut buf) => {
                    let Ok((n, _from)) = recv else { continue };
                    self.metrics.messages_in.inc();
                    self.metrics.bytes_in.inc_by(n as u64);
                    if n > MAX_DATAGRAM_ACCEPT_BYTES {
                        self.metrics.drop_packet("oversized");
                    } else {
                        let now = self.now_us();
                        if let Err(e) = self.core.handle_datagram(now, &buf[..n]) {
                            self.metrics.drop_packet(e.reason());
                            tracing::debug!(error = %e, "dropped datagram");
                        }
                    }
                }
                Some(frame) = frames.recv() => {
                    self.metrics.messages_in.inc();
                    self.metrics.bytes_in.inc_by(frame.len() as u64 + 4);
                    let now = self.now_us();
                    if let Err(e) = self.core.handle_stream(now, &frame) {
                        self.metrics.drop_packet(e.reason());
                    }
                }
                _ = sleep => {
                    let now = self.now_ms();
                    while let Some(Reverse((at, id))) = self.timers.peek().copied() {
                        if at > now { break; }
                        self.timers.pop();
                        if let Some(t) = pending.remove(&id) {
                            let now_us = self.now_us();
                            self.core.handle_timer(now_us, t);
                        }
                    }
                }
                Some(addr) = found.recv() => {
                    let now = self.now_us();
                    self.core.contact(now, addr);
                }
                _ = sample_every.tick() => self.sample(),
                req = requests.recv() => match req {
                    Some(Request::Status(tx)) => { let _ = tx.send(self.snapshot()); }
                    Some(Request::Contact(addr)) => {
                        let now = self.now_us();
                        self.core.contact(now, addr);
                    }
                    Some(Request::Leave(tx)) => {
                        let now = self.now_us();
                        self.core.leave(now);
                        self.flush(&mut pending).await;
                        tracing::info!("left the mesh");
                        if let Some(d) = self.mdns.take() {
                            let _ = d.shutdown();
                        }
                        let _ = tx.send(());
                        return;
                    }
                    None => return,
                },
            }
            self.flush(&mut pending).await;
            if self.members_dirty {
                self.members_dirty = false;
                self.members_tx.send_replace(Arc::new(self.core.members()));
            }
        }
    }

    async fn flush(&mut self, pending: &mut std::collections::HashMap<u64, CoreTimer<PeerId>>) {
        let outputs: Vec<Output<PeerId>> = self.core.drain_outputs().collect();
        for out in outputs {
            match out {
                Output::Send {
                    to,
                    channel: Channel::Datagram,
                    bytes,
                } => {
                    self.metrics.messages_out.inc();
                    self.metrics.bytes_out.inc_by(bytes.len() as u64);
                    if let Err(e) = self.udp.send_to(&bytes, to).await {
                        tracing::debug!(%to, error = %e, "datagram send failed");
                    }
                }
                Output::Send {
                    to,
                    channel: Channel::Stream,
                    bytes,
                } => {
                    self.metrics.messages_out.inc();
                    self.metrics.bytes_out.inc_by(bytes.len() as u64 + 4);
                    let Ok(permit) = self.streams.clone().try_acquire_owned() else {
                        self.metrics.drop_packet("outbound_streams_full");
                        continue;
                    };
                    tokio::spawn(async move {
                        let _permit = permit;
                        let send = async {
                            let mut s = TcpStream::connect(to).await?;
                            s.write_all(&encode_frame(&bytes)).await?;
                            s.shutdown().await
                        };
                        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), send)
                            .await
                            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
                        {
                            tracing::debug!(%to, error = %e, "stream send failed");
                        }
                    });
                }
                Output::Timer { after_ms, timer } => {
                    self.timer_seq += 1;
                    let at = self.now_ms() + after_ms;
                    self.timers.push(Reverse((at, self.timer_seq)));
                    pending.insert(self.timer_seq, timer);
                }
                Output::Event(ev) => self.report(&ev),
            }
        }
    }

    fn report(&mut self, ev: &MembershipEvent) {
        crate::system_events::membership(&self.messaging, ev, || self.core.members());
        let kind = ev.kind.name();
        if !matches!(ev.kind, EventKind::SoftUpdated { .. }) {
            self.members_dirty = true;
        }
        self.metrics
            .events
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
        match &ev.kind {
            EventKind::SoftUpdated { .. } => {
                tracing::debug!(subject = %ev.subject, "soft state updated")
            }
            EventKind::JoinRetry {
                attempt,
                next_in_ms,
            } => tracing::warn!(
                seeds = ?self.seeds, attempt, next_in_ms,
                "no seed answered yet; retrying with backoff (this node runs alone meanwhile)"
            ),
            _ => {
                tracing::info!(subject = %ev.subject, generation = ev.generation, by = ?ev.by, "member {kind}")
            }
        }
    }

    fn sample(&mut self) {
        let s = Sample {
            at: Instant::now(),
            msgs_in: self.metrics.messages_in.get(),
            msgs_out: self.metrics.messages_out.get(),
            bytes_in: self.metrics.bytes_in.get(),
            bytes_out: self.metrics.bytes_out.get(),
        };
        if self.samples.len() >= RATE_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        self.last_cpu = self.cpu.sample();
        if let Some(cpu) = self.last_cpu {
            self.metrics.cpu_percent.set(cpu as f64);
            let now = self.now_us();
            let mut load = self.core.local_soft().load.clone();
            load.cpu_percent = Some(cpu);
            (load.running, load.queued, load.slots) = (self.work)();
            self.core.update_load(now, load);
        }
        if let Some(rss) = resident_bytes() {
            self.metrics.resident_bytes.set(rss as i64);
        }
        let members = self.core.members();
        self.members_tx.send_replace(Arc::new(members.clone()));
        for state in ["alive", "suspect", "dead", "left"] {
            let n = members.iter().filter(|m| m.state.as_str() == state).count();
            self.metrics
                .members
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n as i64);
        }
        for m in members.iter().filter(|m| !m.is_self) {
            if let Some(rtt) = m.rtt_ms {
                self.metrics
                    .peer_rtt_ms
                    .get_or_create(&PeerLabel { peer: m.id.clone() })
                    .set(rtt);
            }
        }
        self.metrics
            .read_only
            .set((self.core.mode() == mesh_membership::Mode::ReadOnly) as i64);
    }

    fn rates(&self) -> [Option<f64>; 4] {
        let (Some(a), Some(b)) = (self.samples.front(), self.samples.back()) else {
            return [None; 4];
        };
        let secs = b.at.duration_since(a.at).as_secs_f64();
        if secs <= 0.0 {
            return [None; 4];
        }
        let r = |x: u64, y: u64| Some((y - x) as f64 / secs);
        [
            r(a.msgs_in, b.msgs_in),
            r(a.msgs_out, b.msgs_out),
            r(a.bytes_in, b.bytes_in),
            r(a.bytes_out, b.bytes_out),
        ]
    }

    fn snapshot(&self) -> StatusSnapshot {
        let [mi, mo, bi, bo] = self.rates();
        let (reachable, known) = self.core.reachability();
        let id = self.core.identity();
        let dropped = self.metrics.dropped_total();
        StatusSnapshot {
            node_id: id.name.clone(),
            generation: id.generation,
            addr: id.addr.to_string(),
            http: self.http.clone(),
            profile: self.profile.clone(),
            mode: self.core.mode().as_str().to_string(),
            reachable,
            known,
            reachable_fraction: reachable as f64 / known.max(1) as f64,
            uptime_ms: self.now_ms(),
            started_unix_ms: self.started_unix_ms,
            suspect_to_down_ms: self.core.suspect_to_down_ms(),
            health: Health {
                messages_in_per_sec: mi,
                messages_out_per_sec: mo,
                bytes_in_per_sec: bi,
                bytes_out_per_sec: bo,
                messages_in_total: self.metrics.messages_in.get(),
                messages_out_total: self.metrics.messages_out.get(),
                packets_dropped_total: dropped,
                cpu_percent: self.last_cpu,
                resident_bytes: resident_bytes(),
            },
            members: self
                .core
                .members()
                .iter()
                .filter_map(|m| serde_json::to_value(m).ok())
                .collect(),
            events: self
                .core
                .recent_events()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect(),
        }
    }
}
