//! One Redis client connection.
//!
//! Requests are parsed as they arrive (a [`RequestParser`] keeps its place in
//! a request that comes in pieces) and answered in order. Pipelining is what
//! makes a replicated endpoint fast: consecutive writes of one read are
//! ordered as one log entry (`Command::Multi`, each reply in its slot, as the
//! pipeline would have run on Redis), and consecutive reads share one
//! read-index round. A write never overtakes an earlier read of the same
//! connection nor the other way round: a run ends where the kind changes.
//!
//! Transactions queue their commands and run as one `Command::Exec` entry
//! (reads included, so `MULTI; GET; INCR; EXEC` is atomic); `WATCH` keeps a
//! digest of each key and the log applies the transaction only if none
//! changed. Pub/sub goes through the messaging core (messages from any node),
//! blocking pops wait for this node's replica to apply something, then pop
//! through the log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_node::messaging::SubEvent;
use mesh_state::read::ReadCmd;
use mesh_state::{KvCmd, TxOp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::Server;
use super::args::{self, int, is, syntax};
use super::frame::{self, ProtocolError, Reply, RequestParser};
use super::plan::{self, Shape, Step, wrong_args};
use super::reply::{all_ok, convert, service_error};
use super::table::{self, Kind, Spec};

/// Most commands in one run of pipelined writes or reads (one log entry).
const MAX_RUN_OPS: usize = 1_024;
/// Most argument bytes in one run.
const MAX_RUN_BYTES: usize = 1024 * 1024;
/// Replies buffered before they are written even mid-pipeline.
const MAX_OUT_BYTES: usize = 1024 * 1024;
/// Most keys one connection may watch.
const MAX_WATCHED: usize = 10_000;
/// Most commands one transaction may queue.
const MAX_QUEUED: usize = 100_000;
/// Pub/sub messages waiting for the connection before its subscriptions lag.
const PUSH_QUEUE: usize = 4_096;

/// Serves one accepted connection to its end.
pub async fn serve(server: Arc<Server>, sock: TcpStream, peer: SocketAddr) {
    let stats = &server.stats;
    stats.connections_received.fetch_add(1, Ordering::Relaxed);
    let _ = sock.set_nodelay(true);
    let mut sock = sock;
    if stats.connected.load(Ordering::Relaxed) >= server.cfg.max_clients {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        let _ = sock
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    }
    if server.cfg.password.is_none() && !peer.ip().is_loopback() {
        stats.denied_remote.fetch_add(1, Ordering::Relaxed);
        let _ = sock
            .write_all(
                b"-DENIED this mesh node serves Redis clients from other hosts only with a password: \
                  start it with --resp-password (or MESH_RESP_PASSWORD), or connect from this host\r\n",
            )
            .await;
        return;
    }
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let (rd, wr) = sock.into_split();
    let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
    let mut conn = Conn {
        id: server.next_client_id(),
        authed: server.cfg.password.is_none(),
        server: server.clone(),
        peer,
        resp3: false,
        name: None,
        lib: (None, None),
        stale: false,
        tx: None,
        watch: Vec::new(),
        subs: BTreeMap::new(),
        push_tx,
        push_rx,
        out: Vec::with_capacity(16 * 1024),
        run: Run::None,
        closing: false,
        started: std::time::Instant::now(),
    };
    conn.main(rd, wr).await;
    // Subscriptions end with their forwarders.
    for (_, h) in std::mem::take(&mut conn.subs) {
        h.abort();
    }
    server.stats.connected.fetch_sub(1, Ordering::Relaxed);
}

/// A queued transaction.
struct Tx {
    ops: Vec<TxOp>,
    slots: Vec<TxSlot>,
    /// A command was refused while queueing: `EXEC` aborts.
    failed: bool,
}

enum TxSlot {
    /// `n` operations from the next in `ops`, replying as `shape`.
    Ops {
        n: usize,
        shape: Shape,
        group: bool,
    },
    Now(Reply),
}

/// A run of pipelined commands of one kind, not yet executed.
enum Run {
    None,
    Writes {
        cmds: Vec<KvCmd>,
        slots: Vec<RunSlot>,
        bytes: usize,
    },
    Reads {
        cmds: Vec<ReadCmd>,
        slots: Vec<RunSlot>,
        bytes: usize,
    },
}

enum RunSlot {
    /// `n` commands from the next, replying as `shape` (`group`: together, `MSET`).
    Ops {
        n: usize,
        shape: Shape,
        group: bool,
    },
    Now(Reply),
}

/// A subscription: `true` for a pattern (`PSUBSCRIBE`).
type SubKey = (bool, String);

/// What a subscription forwards to its connection.
enum Push {
    Message {
        pattern: Option<String>,
        channel: String,
        payload: Vec<u8>,
    },
    /// The subscriber fell behind and messages were dropped.
    Lagged,
}

struct Conn {
    server: Arc<Server>,
    id: u64,
    peer: SocketAddr,
    resp3: bool,
    authed: bool,
    name: Option<Vec<u8>>,
    /// `CLIENT SETINFO LIB-NAME` / `LIB-VER`.
    lib: (Option<String>, Option<String>),
    /// Reads from this node's replica (`READONLY`), not linearizable ones.
    stale: bool,
    tx: Option<Tx>,
    watch: Vec<(Vec<u8>, u64)>,
    subs: BTreeMap<SubKey, tokio::task::JoinHandle<()>>,
    push_tx: mpsc::Sender<Push>,
    push_rx: mpsc::Receiver<Push>,
    out: Vec<u8>,
    run: Run,
    closing: bool,
    started: std::time::Instant,
}

/// How a command ends the connection.
enum Flow {
    Continue,
    Close,
}

impl Conn {
    fn emit(&mut self, r: &Reply) {
        frame::encode(r, self.resp3, &mut self.out);
    }

    fn channels(&self) -> usize {
        self.subs.len()
    }

    /// RESP2 connections with subscriptions take only pub/sub commands.
    fn subscribed_resp2(&self) -> bool {
        !self.resp3 && !self.subs.is_empty()
    }

    async fn main(&mut self, mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf) {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut parser = RequestParser::default();
        loop {
            // Everything complete in the buffer, in order.
            let mut start = 0;
            let mut failure: Option<ProtocolError> = None;
            while !self.closing {
                match parser.parse(&buf[start..]) {
                    Ok(Some((args, used))) => {
                        start += used;
                        if args.is_empty() {
                            continue;
                        }
                        self.server.stats.commands.fetch_add(1, Ordering::Relaxed);
                        if let Flow::Close = self.command(args, &mut rd).await {
                            self.closing = true;
                        }
                        if self.out.len() >= MAX_OUT_BYTES {
                            self.flush_run().await;
                            if write(&mut wr, &mut self.out).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            buf.drain(..start);
            self.flush_run().await;
            if let Some(e) = failure {
                // Redis answers a protocol error and closes the connection.
                self.server
                    .stats
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                let msg = Reply::err(format!("ERR {e}"));
                self.emit(&msg);
                self.closing = true;
            }
            if write(&mut wr, &mut self.out).await.is_err() || self.closing {
                return;
            }
            // Wait for more requests, or a message for a subscription.
            tokio::select! {
                n = rd.read_buf(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                Some(p) = self.push_rx.recv() => {
                    if !self.push(p) {
                        let _ = write(&mut wr, &mut self.out).await;
                        return;
                    }
                    while let Ok(p) = self.push_rx.try_recv() {
                        if !self.push(p) {
                            let _ = write(&mut wr, &mut self.out).await;
                            return;
                        }
                        if self.out.len() >= MAX_OUT_BYTES {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Encodes a pub/sub message; `false` when the subscriber lagged (the
    /// connection closes, as Redis closes a pub/sub client over its buffer).
    fn push(&mut self, p: Push) -> bool {
        match p {
            Push::Message {
                pattern,
                channel,
                payload,
            } => {
                let r = match pattern {
                    None => Reply::Push(vec![
                        Reply::bulk("message"),
                        Reply::bulk(channel),
                        Reply::Bulk(payload),
                    ]),
                    Some(p) => Reply::Push(vec![
                        Reply::bulk("pmessage"),
                        Reply::bulk(p),
                        Reply::bulk(channel),
                        Reply::Bulk(payload),
                    ]),
                };
                self.emit(&r);
                true
            }
            Push::Lagged => false,
        }
    }

    /// One command.
    async fn command(&mut self, args: Vec<Vec<u8>>, rd: &mut OwnedReadHalf) -> Flow {
        let Some(spec) = table::lookup(&args[0]) else {
            let r = unknown_command(&args);
            return self.now(r);
        };
        if !self.authed && !matches!(spec.name, "auth" | "hello" | "quit") {
            return self.now(Reply::err("NOAUTH Authentication required."));
        }
        if !spec.arity_ok(args.len()) {
            if let Some(tx) = &mut self.tx {
                tx.failed = true;
            }
            return self.now(wrong_args(spec.name));
        }
        if self.subscribed_resp2()
            && !matches!(
                spec.name,
                "subscribe"
                    | "psubscribe"
                    | "unsubscribe"
                    | "punsubscribe"
                    | "ping"
                    | "quit"
                    | "reset"
            )
        {
            return self.now(Reply::err(format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                spec.name
            )));
        }
        if self.tx.is_some() {
            return self.queue(spec, args).await;
        }
        match spec.kind {
            Kind::Data => {
                let step = plan::plan(spec, args);
                self.add_step(step, spec).await;
                Flow::Continue
            }
            Kind::Conn => {
                self.flush_run().await;
                self.conn_command(spec, args, rd).await
            }
        }
    }

    /// An immediate reply, in its place after whatever is pending.
    fn now(&mut self, r: Reply) -> Flow {
        match &mut self.run {
            Run::None => self.emit(&r),
            Run::Writes { slots, .. } | Run::Reads { slots, .. } => slots.push(RunSlot::Now(r)),
        }
        Flow::Continue
    }

    /// Adds a planned keyspace command to the current run (executing the run
    /// first if it is of the other kind or full).
    async fn add_step(&mut self, step: Step, spec: &Spec) {
        match step {
            Step::Now(r) => {
                self.now(r);
            }
            Step::Write(cmds, shape) => {
                let weight: usize = cmds.iter().map(cmd_weight).sum();
                let fits = matches!(&self.run, Run::Writes { cmds: c, bytes, .. }
                    if c.len() + cmds.len() <= MAX_RUN_OPS && bytes + weight <= MAX_RUN_BYTES);
                if !fits {
                    self.flush_run().await;
                    self.run = Run::Writes {
                        cmds: Vec::new(),
                        slots: Vec::new(),
                        bytes: 0,
                    };
                }
                let Run::Writes {
                    cmds: c,
                    slots,
                    bytes,
                } = &mut self.run
                else {
                    unreachable!("a write run was just started");
                };
                let group = spec.name == "mset" || spec.name == "hmset";
                slots.push(RunSlot::Ops {
                    n: cmds.len(),
                    shape,
                    group,
                });
                *bytes += weight;
                c.extend(cmds);
            }
            Step::Read(cmd, shape) => {
                let weight = read_weight(&cmd);
                let fits = matches!(&self.run, Run::Reads { cmds: c, bytes, .. }
                    if c.len() < MAX_RUN_OPS && bytes + weight <= MAX_RUN_BYTES);
                if !fits {
                    self.flush_run().await;
                    self.run = Run::Reads {
                        cmds: Vec::new(),
                        slots: Vec::new(),
                        bytes: 0,
                    };
                }
                let Run::Reads {
                    cmds: c,
                    slots,
                    bytes,
                } = &mut self.run
                else {
                    unreachable!("a read run was just started");
                };
                slots.push(RunSlot::Ops {
                    n: 1,
                    shape,
                    group: false,
                });
                *bytes += weight;
                c.push(cmd);
            }
        }
    }

    /// Executes the pending run and encodes its replies in order.
    async fn flush_run(&mut self) {
        match std::mem::replace(&mut self.run, Run::None) {
            Run::None => {}
            Run::Writes { cmds, slots, .. } => {
                let n = cmds.len();
                let result = if n == 0 {
                    Ok(Vec::new())
                } else {
                    self.server.svc.kv_write_batch(cmds).await
                };
                match result {
                    Ok(replies) => self.emit_slots(slots, replies),
                    Err(e) => {
                        let err = service_error(&e, true);
                        self.emit_slots_error(slots, &err);
                    }
                }
            }
            Run::Reads { cmds, slots, .. } => {
                let result = self.server.svc.kv_read_batch(self.stale, &cmds).await;
                match result {
                    Ok(replies) => {
                        let replies = replies.into_iter().map(|r| match r {
                            Ok(r) => r,
                            Err(e) => mesh_state::Reply::Error(e),
                        });
                        self.emit_slots(slots, replies.collect());
                    }
                    Err(e) => {
                        let err = service_error(&e, false);
                        self.emit_slots_error(slots, &err);
                    }
                }
            }
        }
    }

    fn emit_slots(&mut self, slots: Vec<RunSlot>, replies: Vec<mesh_state::Reply>) {
        let mut it = replies.into_iter();
        for slot in slots {
            let r = match slot {
                RunSlot::Now(r) => r,
                RunSlot::Ops { n, shape, group } => {
                    let mine: Vec<_> = it.by_ref().take(n).collect();
                    shaped(mine, &shape, group, self.resp3)
                }
            };
            self.emit(&r);
        }
    }

    fn emit_slots_error(&mut self, slots: Vec<RunSlot>, err: &Reply) {
        for slot in slots {
            match slot {
                RunSlot::Now(r) => self.emit(&r),
                RunSlot::Ops { .. } => self.emit(err),
            }
        }
    }

    // ----- transactions -----------------------------------------------------

    /// A command while `MULTI` is open.
    async fn queue(&mut self, spec: &'static Spec, args: Vec<Vec<u8>>) -> Flow {
        match spec.name {
            "exec" => return self.exec().await,
            "discard" => {
                self.tx = None;
                self.watch.clear();
                return self.now(Reply::ok());
            }
            "multi" => return self.now(Reply::err("ERR MULTI calls can not be nested")),
            "watch" => {
                return self.now(Reply::err("ERR WATCH inside MULTI is not allowed"));
            }
            "quit" => {
                self.now(Reply::ok());
                return Flow::Close;
            }
            "reset" => {
                self.reset().await;
                return self.now(Reply::Simple("RESET".into()));
            }
            _ => {}
        }
        let step = match (spec.kind, spec.name) {
            (Kind::Data, _) => plan::plan(spec, args),
            // Inside a transaction a blocking pop does not block, as in Redis.
            (Kind::Conn, "blpop" | "brpop" | "blmove" | "brpoplpush") => {
                match blocking_cmd(spec.name, args) {
                    Ok((cmd, _)) => {
                        let shape = if matches!(spec.name, "blpop" | "brpop") {
                            Shape::NilArray
                        } else {
                            Shape::Plain
                        };
                        Step::Write(vec![cmd], shape)
                    }
                    Err(e) => Step::Now(e),
                }
            }
            (Kind::Conn, "ping") => Step::Now(ping(&args)),
            (Kind::Conn, "echo") => Step::Now(Reply::Bulk(args[1].clone())),
            (Kind::Conn, name) => {
                let tx = self.tx.as_mut().expect("in a transaction");
                tx.failed = true;
                return self.now(Reply::err(format!(
                    "ERR '{name}' is not served inside MULTI by this endpoint"
                )));
            }
        };
        let tx = self.tx.as_mut().expect("in a transaction");
        if tx.slots.len() >= MAX_QUEUED {
            tx.failed = true;
            return self.now(Reply::err(format!(
                "ERR a transaction may queue at most {MAX_QUEUED} commands"
            )));
        }
        match step {
            // Redis reports argument errors when EXEC runs the command; the
            // transaction itself still runs.
            Step::Now(r) => tx.slots.push(TxSlot::Now(r)),
            Step::Write(cmds, shape) => {
                let group = spec.name == "mset" || spec.name == "hmset";
                tx.slots.push(TxSlot::Ops {
                    n: cmds.len(),
                    shape,
                    group,
                });
                tx.ops.extend(cmds.into_iter().map(TxOp::Write));
            }
            Step::Read(cmd, shape) => {
                tx.slots.push(TxSlot::Ops {
                    n: 1,
                    shape,
                    group: false,
                });
                tx.ops.push(TxOp::Read(cmd));
            }
        }
        self.now(Reply::Simple("QUEUED".into()))
    }

    async fn exec(&mut self) -> Flow {
        let tx = self.tx.take().expect("in a transaction");
        let watch = std::mem::take(&mut self.watch);
        if tx.failed {
            return self.now(Reply::err(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        let writes = tx.ops.iter().any(|o| matches!(o, TxOp::Write(_)));
        let r = if tx.ops.is_empty() && watch.is_empty() {
            Ok(Some(Vec::new()))
        } else {
            self.server.svc.kv_exec(watch, tx.ops).await
        };
        let reply = match r {
            Ok(None) => Reply::NilArray,
            Ok(Some(replies)) => {
                let mut it = replies.into_iter();
                let mut out = Vec::with_capacity(tx.slots.len());
                for slot in tx.slots {
                    out.push(match slot {
                        TxSlot::Now(r) => r,
                        TxSlot::Ops { n, shape, group } => {
                            let mine: Vec<_> = it.by_ref().take(n).collect();
                            shaped(mine, &shape, group, self.resp3)
                        }
                    });
                }
                Reply::Array(out)
            }
            Err(e) => service_error(&e, writes),
        };
        self.now(reply)
    }

    // ----- connection, server, pub/sub and blocking commands ---------------

    async fn conn_command(
        &mut self,
        spec: &'static Spec,
        mut args: Vec<Vec<u8>>,
        rd: &mut OwnedReadHalf,
    ) -> Flow {
        let argc = args.len();
        let reply = match spec.name {
            "ping" => {
                if argc > 2 {
                    wrong_args("ping")
                } else if self.subscribed_resp2() {
                    Reply::Array(vec![
                        Reply::bulk("pong"),
                        Reply::Bulk(args.pop().filter(|_| argc == 2).unwrap_or_default()),
                    ])
                } else {
                    ping(&args)
                }
            }
            "echo" => Reply::Bulk(args.swap_remove(1)),
            "quit" => {
                self.emit(&Reply::ok());
                return Flow::Close;
            }
            "reset" => {
                self.reset().await;
                Reply::Simple("RESET".into())
            }
            "auth" => self.auth(&args[1..]),
            "hello" => self.hello(&args[1..]),
            "select" => match int(&args[1]) {
                Ok(0) => Reply::ok(),
                Ok(_) => Reply::err("ERR DB index is out of range"),
                Err(e) => e,
            },
            "client" => self.client(&args),
            "readonly" => {
                self.stale = true;
                Reply::ok()
            }
            "readwrite" => {
                self.stale = false;
                Reply::ok()
            }
            "command" => super::info::command(&args, self.resp3),
            "info" => super::info::info(&self.server, &args[1..]).await,
            "flushdb" | "flushall" => self.flush(spec.name, &args).await,
            "multi" => {
                self.tx = Some(Tx {
                    ops: Vec::new(),
                    slots: Vec::new(),
                    failed: false,
                });
                Reply::ok()
            }
            "exec" => Reply::err("ERR EXEC without MULTI"),
            "discard" => Reply::err("ERR DISCARD without MULTI"),
            "watch" => self.watch_keys(args.split_off(1)).await,
            "unwatch" => {
                self.watch.clear();
                Reply::ok()
            }
            "subscribe" | "psubscribe" => {
                self.subscribe(spec.name == "psubscribe", args.split_off(1))
                    .await;
                return Flow::Continue;
            }
            "unsubscribe" | "punsubscribe" => {
                self.unsubscribe(spec.name == "punsubscribe", args.split_off(1));
                return Flow::Continue;
            }
            "publish" => self.publish(&args[1], args[2].clone()).await,
            "pubsub" => self.pubsub(&args).await,
            "blpop" | "brpop" | "blmove" | "brpoplpush" => self.blocking(spec.name, args, rd).await,
            other => Reply::err(format!("ERR '{other}' has no handler on this endpoint")),
        };
        self.emit(&reply);
        Flow::Continue
    }

    async fn reset(&mut self) {
        self.tx = None;
        self.watch.clear();
        for (_, h) in std::mem::take(&mut self.subs) {
            h.abort();
        }
        self.resp3 = false;
        self.name = None;
        self.stale = false;
        self.authed = self.server.cfg.password.is_none();
    }

    /// Checks credentials; counts a failure.
    fn check_password(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Result<(), Reply> {
        let wrong = || Reply::err("WRONGPASS invalid username-password pair or user is disabled.");
        let user_ok = user.is_none_or(|u| u == b"default");
        let ok = match &self.server.cfg.password {
            Some(p) => user_ok && same_secret(pass, p.as_bytes()),
            // Without a password the default user takes any (as Redis's nopass).
            None => user_ok,
        };
        if ok {
            self.authed = true;
            Ok(())
        } else {
            self.server
                .stats
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            Err(wrong())
        }
    }

    fn auth(&mut self, a: &[Vec<u8>]) -> Reply {
        match a {
            [pass] => {
                if self.server.cfg.password.is_none() {
                    return Reply::err(
                        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                    );
                }
                self.check_password(None, pass)
                    .err()
                    .unwrap_or_else(Reply::ok)
            }
            [user, pass] => self
                .check_password(Some(user), pass)
                .err()
                .unwrap_or_else(Reply::ok),
            _ => syntax(),
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    fn hello(&mut self, a: &[Vec<u8>]) -> Reply {
        let mut proto = None;
        if let Some(v) = a.first() {
            match int(v) {
                Ok(2) => proto = Some(false),
                Ok(3) => proto = Some(true),
                Ok(_) => return Reply::err("NOPROTO unsupported protocol version"),
                Err(_) => {
                    return Reply::err("ERR Protocol version is not an integer or out of range");
                }
            }
        }
        let (mut auth, mut setname) = (None, None);
        let mut i = 1;
        while i < a.len() {
            if is(&a[i], "auth") && i + 2 < a.len() {
                auth = Some((a[i + 1].clone(), a[i + 2].clone()));
                i += 3;
            } else if is(&a[i], "setname") && i + 1 < a.len() {
                setname = Some(a[i + 1].clone());
                i += 2;
            } else {
                return Reply::err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&a[i])
                ));
            }
        }
        if let Some((user, pass)) = auth
            && let Err(e) = self.check_password(Some(&user), &pass)
        {
            return e;
        }
        if !self.authed {
            return Reply::err(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        if let Some(name) = setname {
            if let Err(e) = check_client_name(&name) {
                return e;
            }
            self.name = (!name.is_empty()).then_some(name);
        }
        if let Some(p) = proto {
            self.resp3 = p;
        }
        super::info::hello(self.id, self.resp3)
    }

    fn client(&mut self, a: &[Vec<u8>]) -> Reply {
        let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
        let arity = |n: usize| {
            if a.len() != n {
                Err(Reply::err(format!(
                    "ERR wrong number of arguments for 'client|{sub}' command"
                )))
            } else {
                Ok(())
            }
        };
        match sub.as_str() {
            "setname" => {
                if let Err(e) = arity(3).and_then(|_| check_client_name(&a[2])) {
                    return e;
                }
                self.name = (!a[2].is_empty()).then(|| a[2].clone());
                Reply::ok()
            }
            "getname" => match arity(2) {
                Err(e) => e,
                Ok(()) => self.name.clone().map(Reply::Bulk).unwrap_or(Reply::Nil),
            },
            "id" => arity(2).err().unwrap_or(Reply::Int(self.id as i64)),
            "info" => arity(2)
                .err()
                .unwrap_or_else(|| Reply::Bulk(self.client_info().into_bytes())),
            "setinfo" => {
                if let Err(e) = arity(4) {
                    return e;
                }
                let v = String::from_utf8_lossy(&a[3]).into_owned();
                if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Reply::err(format!(
                        "ERR {} cannot contain spaces, newlines or special characters.",
                        String::from_utf8_lossy(&a[2])
                    ));
                }
                if is(&a[2], "lib-name") {
                    self.lib.0 = Some(v);
                } else if is(&a[2], "lib-ver") {
                    self.lib.1 = Some(v);
                } else {
                    return Reply::err(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&a[2])
                    ));
                }
                Reply::ok()
            }
            "no-evict" | "no-touch" => Reply::ok(),
            _ => Reply::err(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&a[1])
            )),
        }
    }

    fn client_info(&self) -> String {
        let name = self
            .name
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let (sub, psub) = self.subs.keys().fold(
            (0, 0),
            |(s, p), (pat, _)| if *pat { (s, p + 1) } else { (s + 1, p) },
        );
        format!(
            "id={} addr={} laddr={} name={} age={} db=0 sub={sub} psub={psub} multi={} watch={} resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.server.addr,
            name,
            self.started.elapsed().as_secs(),
            self.tx.as_ref().map_or(-1, |t| t.slots.len() as i64),
            self.watch.len(),
            if self.resp3 { 3 } else { 2 },
            self.lib.0.as_deref().unwrap_or(""),
            self.lib.1.as_deref().unwrap_or(""),
        )
    }

    async fn flush(&mut self, name: &str, a: &[Vec<u8>]) -> Reply {
        if a.len() > 2 || (a.len() == 2 && !is(&a[1], "async") && !is(&a[1], "sync")) {
            return syntax();
        }
        if !self.server.cfg.allow_flush {
            return Reply::err(format!(
                "ERR {} is disabled on this node: it removes every key of the whole mesh; start the node with --resp-allow-flush to serve it",
                name.to_uppercase()
            ));
        }
        match self.server.svc.kv_write_batch(vec![KvCmd::FlushAll]).await {
            Ok(mut r) => convert(r.remove(0), &Shape::Plain, self.resp3),
            Err(e) => service_error(&e, true),
        }
    }

    async fn watch_keys(&mut self, keys: Vec<Vec<u8>>) -> Reply {
        if self.watch.len() + keys.len() > MAX_WATCHED {
            return Reply::err(format!(
                "ERR a connection may watch at most {MAX_WATCHED} keys"
            ));
        }
        match self.server.svc.kv_watch_digests(self.stale, &keys).await {
            Ok(digests) => {
                for (k, d) in keys.into_iter().zip(digests) {
                    // The first digest of a key is the one that counts.
                    if !self.watch.iter().any(|(w, _)| *w == k) {
                        self.watch.push((k, d));
                    }
                }
                Reply::ok()
            }
            Err(e) => service_error(&e, false),
        }
    }

    // ----- pub/sub ----------------------------------------------------------

    async fn subscribe(&mut self, pattern: bool, names: Vec<Vec<u8>>) {
        let kind = if pattern { "psubscribe" } else { "subscribe" };
        for raw in names {
            let Ok(name) = String::from_utf8(raw.clone()) else {
                let r = Reply::err("ERR channel names and patterns must be UTF-8 on this endpoint");
                self.emit(&r);
                continue;
            };
            let key = (pattern, name.clone());
            if !self.subs.contains_key(&key) {
                let glob = if pattern {
                    name.clone()
                } else {
                    mesh_msg::channel::escape(&name)
                };
                match self.server.svc.subscribe_channels(vec![glob]).await {
                    Ok(sub) => {
                        let h = spawn_forwarder(
                            sub,
                            pattern.then(|| name.clone()),
                            self.push_tx.clone(),
                        );
                        self.subs.insert(key, h);
                    }
                    Err(e) => {
                        let r = Reply::err(format!("ERR {e}"));
                        self.emit(&r);
                        continue;
                    }
                }
            }
            let r = Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Bulk(raw),
                Reply::Int(self.channels() as i64),
            ]);
            self.emit(&r);
        }
    }

    fn unsubscribe(&mut self, pattern: bool, names: Vec<Vec<u8>>) {
        let kind = if pattern {
            "punsubscribe"
        } else {
            "unsubscribe"
        };
        let names: Vec<Vec<u8>> = if names.is_empty() {
            self.subs
                .keys()
                .filter(|(p, _)| *p == pattern)
                .map(|(_, n)| n.clone().into_bytes())
                .collect()
        } else {
            names
        };
        if names.is_empty() {
            let r = Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Nil,
                Reply::Int(self.channels() as i64),
            ]);
            self.emit(&r);
            return;
        }
        for raw in names {
            let key = (pattern, String::from_utf8_lossy(&raw).into_owned());
            if let Some(h) = self.subs.remove(&key) {
                h.abort();
            }
            let r = Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Bulk(raw),
                Reply::Int(self.channels() as i64),
            ]);
            self.emit(&r);
        }
    }

    async fn publish(&mut self, channel: &[u8], payload: Vec<u8>) -> Reply {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return Reply::err("ERR channel names must be UTF-8 on this endpoint");
        };
        let from = match &self.name {
            Some(n) => String::from_utf8_lossy(n).into_owned(),
            None => format!("resp:{}", self.id),
        };
        match self.server.svc.publish(&from, channel, payload).await {
            Ok(report) => Reply::Int(report.receivers() as i64),
            Err(e) => Reply::err(format!("ERR {e}")),
        }
    }

    /// `PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT`, counted
    /// on every node that answers within half a second.
    async fn pubsub(&mut self, a: &[Vec<u8>]) -> Reply {
        let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
        let arity_err = || {
            Reply::err(format!(
                "ERR wrong number of arguments for 'pubsub|{sub}' command"
            ))
        };
        match sub.as_str() {
            "channels" if a.len() > 3 => return arity_err(),
            "numpat" if a.len() != 2 => return arity_err(),
            "channels" | "numsub" | "numpat" => {}
            _ => {
                return Reply::err(format!(
                    "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
                    String::from_utf8_lossy(&a[1])
                ));
            }
        }
        let subs = match self.server.svc.mesh_subscriptions().await {
            Ok(s) => s,
            Err(e) => return Reply::err(format!("ERR {e}")),
        };
        // A plain channel (or an escaped one) counts as a channel subscriber;
        // anything with glob syntax is a pattern.
        let mut channels: BTreeMap<String, u32> = BTreeMap::new();
        let mut patterns = 0usize;
        for (p, n) in &subs.patterns {
            match mesh_msg::channel::literal_channel(p) {
                Some(ch) => *channels.entry(ch).or_default() += n,
                None => patterns += 1,
            }
        }
        match sub.as_str() {
            "channels" => {
                let filter = a.get(2);
                Reply::Array(
                    channels
                        .keys()
                        .filter(|c| {
                            filter.is_none_or(|f| mesh_proto::glob::matches(f, c.as_bytes()))
                        })
                        .map(|c| Reply::bulk(c.as_str()))
                        .collect(),
                )
            }
            "numsub" => {
                let mut out = Vec::new();
                for ch in &a[2..] {
                    let n = channels
                        .get(String::from_utf8_lossy(ch).as_ref())
                        .copied()
                        .unwrap_or(0);
                    out.push(Reply::Bulk(ch.clone()));
                    out.push(Reply::Int(n as i64));
                }
                // A flat array in RESP3 too, as Redis sends it.
                Reply::Array(out)
            }
            _ => Reply::Int(patterns as i64),
        }
    }

    // ----- blocking pops ----------------------------------------------------

    /// `BLPOP`/`BRPOP`/`BLMOVE`/`BRPOPLPUSH`: pops now if it can; else waits
    /// for this node's replica to apply something that fills a list, then
    /// pops through the log (another client may win the race: it waits on).
    async fn blocking(&mut self, name: &str, args: Vec<Vec<u8>>, rd: &mut OwnedReadHalf) -> Reply {
        // Redis answers every blocking timeout with a null array.
        let timed_out = Reply::NilArray;
        let (cmd, timeout) = match blocking_cmd(name, args) {
            Ok(x) => x,
            Err(e) => return e,
        };
        let keys: Vec<Vec<u8>> = match &cmd {
            KvCmd::PopFirst { keys, .. } => keys.clone(),
            KvCmd::LMove { src, .. } => vec![src.clone()],
            _ => unreachable!("blocking_cmd makes pops"),
        };
        let svc = self.server.svc.clone();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let stats = &self.server.stats;
        let mut watching_socket = true;
        let mut blocked = false;
        let result = loop {
            let (ready, applied) = svc.kv_lists_ready(&keys);
            if ready {
                match svc.kv_write_batch(vec![cmd.clone()]).await {
                    Ok(mut r) => {
                        let r = r.remove(0);
                        if r != mesh_state::Reply::Nil {
                            break convert(r, &Shape::Plain, self.resp3);
                        }
                        // Another client took it: wait for the replica to
                        // apply that pop before looking again.
                        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
                        svc.kv_wait_applied_after(applied, soon).await;
                        continue;
                    }
                    Err(e) => break service_error(&e, true),
                }
            }
            let now = tokio::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break timed_out;
            }
            if !blocked {
                blocked = true;
                stats.blocked.fetch_add(1, Ordering::Relaxed);
            }
            // Wake at the deadline, or at least every second (a list may
            // also fill through a snapshot).
            let until = deadline
                .unwrap_or(now + Duration::from_secs(1))
                .min(now + Duration::from_secs(1));
            let mut probe = [0u8; 1];
            tokio::select! {
                _ = svc.kv_wait_applied_after(applied, until) => {}
                r = rd.peek(&mut probe), if watching_socket => match r {
                    // The client went away: stop waiting, pop nothing.
                    Ok(0) | Err(_) => break Reply::Nil,
                    // More requests arrived: they wait their turn.
                    Ok(_) => watching_socket = false,
                },
            }
        };
        if blocked {
            stats.blocked.fetch_sub(1, Ordering::Relaxed);
        }
        result
    }
}

/// The pop a blocking command makes, and its timeout.
fn blocking_cmd(name: &str, mut a: Vec<Vec<u8>>) -> Result<(KvCmd, Option<Duration>), Reply> {
    let timeout = args::timeout(a.last().expect("arity checked"))?;
    a.pop();
    let cmd = match name {
        "blpop" | "brpop" => KvCmd::PopFirst {
            keys: a.split_off(1),
            front: name == "blpop",
        },
        "blmove" => KvCmd::LMove {
            from_front: args::side(&a[3])?,
            to_front: args::side(&a[4])?,
            dst: a.swap_remove(2),
            src: a.swap_remove(1),
        },
        _ => KvCmd::LMove {
            dst: a.swap_remove(2),
            src: a.swap_remove(1),
            from_front: false,
            to_front: true,
        },
    };
    Ok((cmd, timeout))
}

fn spawn_forwarder(
    mut sub: mesh_node::messaging::Subscription,
    pattern: Option<String>,
    tx: mpsc::Sender<Push>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ev) = sub.rx.recv().await {
            let p = match ev {
                SubEvent::Message(m) => Push::Message {
                    pattern: pattern.clone(),
                    channel: m.channel.clone(),
                    payload: m.payload.clone(),
                },
                SubEvent::Lagged(_) => Push::Lagged,
            };
            if tx.send(p).await.is_err() {
                break;
            }
        }
    })
}

/// Replies for `n` commands of one slot.
fn shaped(mut replies: Vec<mesh_state::Reply>, shape: &Shape, group: bool, resp3: bool) -> Reply {
    if group || *shape == Shape::AllOk {
        return all_ok(replies);
    }
    match replies.pop() {
        Some(r) => convert(r, shape, resp3),
        None => Reply::err("ERR no reply"),
    }
}

fn ping(a: &[Vec<u8>]) -> Reply {
    match a {
        [_] => Reply::Simple("PONG".into()),
        [_, msg] => Reply::Bulk(msg.clone()),
        _ => wrong_args("ping"),
    }
}

/// Redis's text for an unknown command, with the first arguments quoted.
fn unknown_command(a: &[Vec<u8>]) -> Reply {
    let mut args = String::new();
    for x in &a[1..] {
        if args.len() >= 128 {
            break;
        }
        let s = String::from_utf8_lossy(x);
        let room = 128 - args.len();
        args.push('\'');
        args.extend(s.chars().take(room));
        args.push_str("' ");
    }
    let name: String = String::from_utf8_lossy(&a[0]).chars().take(128).collect();
    Reply::err(format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    ))
}

fn check_client_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(())
    } else {
        Err(Reply::err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bytes a write adds to a run (to bound one log entry).
fn cmd_weight(c: &KvCmd) -> usize {
    let keys: usize = c.keys().iter().map(|k| k.len()).sum();
    let values = match c {
        KvCmd::Set { value, .. } | KvCmd::Append { value, .. } => value.len(),
        KvCmd::Push { values, .. } => values.iter().map(Vec::len).sum(),
        KvCmd::SAdd { members, .. } => members.iter().map(Vec::len).sum(),
        KvCmd::HSet { pairs, .. } => pairs.iter().map(|(f, v)| f.len() + v.len()).sum(),
        KvCmd::ZAdd { items, .. } => items.iter().map(|(_, m)| m.len() + 8).sum(),
        _ => 0,
    };
    keys + values + 16
}

fn read_weight(c: &ReadCmd) -> usize {
    c.keys().iter().map(|k| k.len()).sum::<usize>() + 16
}

async fn write(wr: &mut OwnedWriteHalf, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = wr.write_all(out).await;
    out.clear();
    if out.capacity() > 4 * MAX_OUT_BYTES {
        out.shrink_to(16 * 1024);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_commands_quote_their_first_arguments() {
        let a: Vec<Vec<u8>> = vec![b"FOO".to_vec(), b"a".to_vec(), b"b c".to_vec()];
        assert_eq!(
            unknown_command(&a),
            Reply::err("ERR unknown command 'FOO', with args beginning with: 'a' 'b c' ")
        );
        assert_eq!(
            unknown_command(&[b"x".to_vec()]),
            Reply::err("ERR unknown command 'x', with args beginning with: ")
        );
    }

    #[test]
    fn secrets_and_names() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(check_client_name(b"worker-1").is_ok());
        assert!(check_client_name(b"has space").is_err());
    }
}
