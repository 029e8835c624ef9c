//! Commands of the replicated log and their replies.
//!
//! A [`Stamped`] command carries what the leader decided when it accepted it: its
//! clock (`now_ms`, which decides TTL expiry) and a random `seed` (for commands
//! that choose at random, like `SPOP`), so every replica applies it identically.

use serde::{Deserialize, Serialize};

/// A client's idempotency key: a retried request with the same id is applied once
/// and answered with the first reply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub String);

/// A command as it sits in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// The leader's clock when it accepted the command, in Unix milliseconds.
    pub now_ms: u64,
    /// Randomness chosen by the leader for this command.
    pub seed: u64,
    pub request_id: Option<RequestId>,
    pub command: Command,
}

/// A replicated command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// One keyspace command.
    Kv(KvCmd),
    /// Several keyspace commands applied as one (MULTI/EXEC): all replies, in order.
    /// A command that fails inside returns its error in its slot; the others still
    /// apply, as in Redis.
    Multi(Vec<KvCmd>),
    /// Nothing but the stamp: lets the leader's time advance TTL expiry when idle.
    Tick,
    /// Agents, proposals and votes, barriers.
    Coord(CoordCmd),
    /// Tasks.
    Task(crate::tasks::TaskCmd),
    /// `MULTI ... EXEC`: reads and writes applied as one, in order, if every
    /// watched key's digest ([`crate::Keyspace::watch_digest`]) is still the
    /// one given (`WATCH`); otherwise nothing runs and the reply is `Nil`.
    /// Replies: an array with each operation's reply (an error in its slot).
    Exec {
        watch: Vec<(Vec<u8>, u64)>,
        ops: Vec<TxOp>,
    },
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxOp {
    Write(KvCmd),
    Read(crate::read::ReadCmd),
}

/// A coordination command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordCmd {
    /// Registers an agent, or re-registers it with the same public key.
    RegisterAgent {
        id: String,
        kind: String,
        caps: Vec<String>,
        node: String,
        public_key: Vec<u8>,
        /// The zone of its node, if the node has one.
        zone: Option<String>,
    },
    SetAgentState {
        id: String,
        state: crate::agents::AgentState,
    },
    Heartbeat {
        id: String,
    },
    UnregisterAgent {
        id: String,
    },
    /// The membership layer confirmed `node` dead: mark its agents.
    NodeDead {
        node: String,
    },
    /// A new proposal. `voters: None` means every agent registered now.
    Propose {
        id: String,
        body: String,
        proposer: Option<String>,
        voters: Option<Vec<String>>,
        threshold: Option<f64>,
        deadline_ms: u64,
    },
    /// A vote, signed over [`crate::proposals::vote_signing_bytes`].
    Vote {
        proposal_id: String,
        agent_id: String,
        approve: bool,
        reason: Option<String>,
        seq: u64,
        signature: Vec<u8>,
    },
    CreateBarrier {
        id: String,
        spec: crate::barriers::BarrierSpec,
    },
    DeleteBarrier {
        id: String,
    },
}

/// Something an applied command caused, for the node to publish (events channel,
/// waiting clients). Derived from the log, so every replica reports the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    ProposalDecided {
        id: String,
        status: crate::proposals::ProposalStatus,
        latency_ms: u64,
        participation: f64,
    },
    BarrierReleased {
        id: String,
    },
    AgentStateChanged {
        id: String,
        state: crate::agents::AgentState,
    },
    AgentsOrphaned {
        node: String,
        agents: Vec<String>,
    },
    /// A task changed state.
    Task(crate::tasks::TaskEvent),
}

/// When a written key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// No expiry (a write without a TTL clears an old one, as `SET` does).
    Never,
    /// Keep the key's current expiry (`KEEPTTL`).
    Keep,
    /// Expire at this Unix time in milliseconds.
    At(u64),
    /// Expire this many milliseconds after the command's stamp (`SETEX`, `EX`,
    /// a TTL given over HTTP): relative to the leader's clock, not the client's.
    In(u64),
}

/// `SET`'s condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCond {
    Always,
    /// Only if the key does not exist (`NX`).
    IfAbsent,
    /// Only if the key exists (`XX`).
    IfPresent,
}

/// `ZADD`'s flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZAddFlags {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
    /// Count changed members, not only added ones.
    pub ch: bool,
    /// Increment instead of set (one member only); replies with the new score.
    pub incr: bool,
}

/// A keyspace write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvCmd {
    /// `SET key value [NX|XX] [GET] [EX|PX|KEEPTTL]`; `SETEX`, `SETNX` are special cases.
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        cond: SetCond,
        get: bool,
        expiry: Expiry,
    },
    /// Compare-and-set: write `new` only if the current string equals `expected`
    /// (`None`: only if the key is absent). Replies 1 on success, 0 otherwise.
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        expiry: Expiry,
    },
    /// `INCRBY` (and `INCR`, `DECR`, `DECRBY`).
    IncrBy {
        key: Vec<u8>,
        by: i64,
    },
    Append {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    GetDel {
        key: Vec<u8>,
    },
    /// `DEL` / `UNLINK`: replies with how many existed.
    Del {
        keys: Vec<Vec<u8>>,
    },
    /// `EXPIRE`/`PEXPIRE` (`Some(at)`) or `PERSIST` (`None`): replies 1 if changed.
    /// An expiry at or before the stamp deletes the key, as Redis does.
    Expire {
        key: Vec<u8>,
        at_ms: Option<u64>,
    },
    /// `LPUSH`/`RPUSH` (`front`), `LPUSHX`/`RPUSHX` (`only_if_exists`): replies with the length.
    Push {
        key: Vec<u8>,
        values: Vec<Vec<u8>>,
        front: bool,
        only_if_exists: bool,
    },
    /// `LPOP`/`RPOP` with an optional count.
    Pop {
        key: Vec<u8>,
        front: bool,
        count: Option<usize>,
    },
    /// `LREM key count value`.
    LRem {
        key: Vec<u8>,
        count: i64,
        value: Vec<u8>,
    },
    /// `LMOVE src dst LEFT|RIGHT LEFT|RIGHT` (and `RPOPLPUSH`).
    LMove {
        src: Vec<u8>,
        dst: Vec<u8>,
        from_front: bool,
        to_front: bool,
    },
    SAdd {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    SRem {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    /// `SPOP key [count]`: random members, chosen with the stamp's seed.
    SPop {
        key: Vec<u8>,
        count: Option<usize>,
    },
    ZAdd {
        key: Vec<u8>,
        items: Vec<(f64, Vec<u8>)>,
        flags: ZAddFlags,
    },
    ZRem {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    ZIncrBy {
        key: Vec<u8>,
        by: f64,
        member: Vec<u8>,
    },
    /// `ZPOPMIN`/`ZPOPMAX` (`highest`).
    ZPop {
        key: Vec<u8>,
        count: usize,
        highest: bool,
    },
    /// `HSET key field value [field value ...]`: replies with how many fields were new.
    HSet {
        key: Vec<u8>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    HDel {
        key: Vec<u8>,
        fields: Vec<Vec<u8>>,
    },
    HIncrBy {
        key: Vec<u8>,
        field: Vec<u8>,
        by: i64,
    },
    /// `FLUSHDB`: everything goes.
    FlushAll,
    /// Pops one element from the first of `keys` holding a non-empty list (what
    /// `BLPOP`/`BRPOP` do once an element is there): replies `[key, element]`,
    /// or nil when every list is empty.
    PopFirst {
        keys: Vec<Vec<u8>>,
        front: bool,
    },
    /// `EXPIRE`/`PEXPIRE`: expire `ms` after the command's stamp (the
    /// leader's clock, as `SET ... EX` does); zero or less deletes the key.
    /// Replies 1 if the key exists, else 0.
    ExpireIn {
        key: Vec<u8>,
        ms: i64,
    },
}

impl KvCmd {
    /// The keys this command writes (for routing, watching and invalidation).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            KvCmd::Set { key, .. }
            | KvCmd::Cas { key, .. }
            | KvCmd::IncrBy { key, .. }
            | KvCmd::Append { key, .. }
            | KvCmd::GetDel { key }
            | KvCmd::Expire { key, .. }
            | KvCmd::ExpireIn { key, .. }
            | KvCmd::Push { key, .. }
            | KvCmd::Pop { key, .. }
            | KvCmd::LRem { key, .. }
            | KvCmd::SAdd { key, .. }
            | KvCmd::SRem { key, .. }
            | KvCmd::SPop { key, .. }
            | KvCmd::ZAdd { key, .. }
            | KvCmd::ZRem { key, .. }
            | KvCmd::ZIncrBy { key, .. }
            | KvCmd::ZPop { key, .. }
            | KvCmd::HSet { key, .. }
            | KvCmd::HDel { key, .. }
            | KvCmd::HIncrBy { key, .. } => vec![key],
            KvCmd::Del { keys } | KvCmd::PopFirst { keys, .. } => {
                keys.iter().map(Vec::as_slice).collect()
            }
            KvCmd::LMove { src, dst, .. } => vec![src, dst],
            KvCmd::FlushAll => vec![],
        }
    }
}

/// A reply, shaped like RESP's so every front end can encode it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Double(f64),
    Array(Vec<Reply>),
    /// An error for one command inside a `Multi`.
    Error(crate::StateError),
    /// A task command's reply.
    Task(crate::tasks::TaskReply),
}
