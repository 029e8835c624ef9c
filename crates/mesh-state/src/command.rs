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
    /// The client's idempotency key, if it gave one: a retry with the same id
    /// gets the first reply and changes nothing.
    pub request_id: Option<RequestId>,
    /// What to apply.
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
        /// (key, digest) of each watched key, as the client saw it at `WATCH`.
        watch: Vec<(Vec<u8>, u64)>,
        /// The queued operations, in order.
        ops: Vec<TxOp>,
    },
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxOp {
    /// A keyspace write, applied as [`Command::Kv`] would.
    Write(KvCmd),
    /// A read, of the keyspace as the transaction's earlier operations left it.
    Read(crate::read::ReadCmd),
}

/// A coordination command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordCmd {
    /// Registers an agent, or re-registers it with the same public key.
    RegisterAgent {
        /// The agent's id, unique in the mesh.
        id: String,
        /// Its type (group barriers count agents by it).
        kind: String,
        /// Capabilities it offers to tasks.
        caps: Vec<String>,
        /// The node that hosts it.
        node: String,
        /// Its ed25519 public key (32 bytes), which verifies its votes.
        public_key: Vec<u8>,
        /// The zone of its node, if the node has one.
        zone: Option<String>,
    },
    /// Sets an agent's state; a change may release barriers.
    SetAgentState {
        /// The agent's id.
        id: String,
        /// Its new state.
        state: crate::agents::AgentState,
    },
    /// Notes that an agent is alive (its `last_seen_ms`).
    Heartbeat {
        /// The agent's id.
        id: String,
    },
    /// Removes an agent; its running and queued tasks move to others first.
    UnregisterAgent {
        /// The agent's id.
        id: String,
    },
    /// The membership layer confirmed `node` dead: mark its agents.
    NodeDead {
        /// The dead node's name, as its agents registered it.
        node: String,
    },
    /// A new proposal. `voters: None` means every agent registered now.
    Propose {
        /// The proposal's id, unique in the mesh.
        id: String,
        /// What is proposed: JSON text, at most [`crate::proposals::MAX_BODY_BYTES`].
        body: String,
        /// Who proposes it, if the client says.
        proposer: Option<String>,
        /// The eligible voters, each a registered agent; `None`: every agent registered now.
        voters: Option<Vec<String>>,
        /// Fraction of the voters whose approval decides, in (0, 1]; `None`:
        /// [`crate::proposals::DEFAULT_THRESHOLD`].
        threshold: Option<f64>,
        /// When it expires if still open, in Unix ms (after the stamp).
        deadline_ms: u64,
    },
    /// A vote, signed over [`crate::proposals::vote_signing_bytes`].
    Vote {
        /// The proposal voted on.
        proposal_id: String,
        /// The voting agent.
        agent_id: String,
        /// `true` approves, `false` rejects.
        approve: bool,
        /// An optional explanation, covered by the signature.
        reason: Option<String>,
        /// The agent's vote counter: higher than that of its vote already counted.
        seq: u64,
        /// ed25519 signature (64 bytes) by the agent's key.
        signature: Vec<u8>,
    },
    /// Creates a barrier; it is released at once if its condition already holds.
    CreateBarrier {
        /// The barrier's id, unique in the mesh.
        id: String,
        /// What it waits for.
        spec: crate::barriers::BarrierSpec,
    },
    /// Deletes a barrier, released or not.
    DeleteBarrier {
        /// The barrier's id.
        id: String,
    },
}

/// Something an applied command caused, for the node to publish (events channel,
/// waiting clients). Derived from the log, so every replica reports the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A proposal was approved, rejected or expired.
    ProposalDecided {
        /// The proposal's id.
        id: String,
        /// How it ended.
        status: crate::proposals::ProposalStatus,
        /// From its creation to the decision, in ms.
        latency_ms: u64,
        /// Fraction of the eligible voters who voted, 0 to 1.
        participation: f64,
    },
    /// A barrier's condition came true.
    BarrierReleased {
        /// The barrier's id.
        id: String,
    },
    /// An agent registered (as ACTIVE) or changed its state.
    AgentStateChanged {
        /// The agent's id.
        id: String,
        /// Its new state.
        state: crate::agents::AgentState,
    },
    /// A node was confirmed dead: the agents it hosted are marked and their
    /// tasks moved on.
    AgentsOrphaned {
        /// The dead node.
        node: String,
        /// The agents on it that were marked.
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
    /// Whatever the key holds (plain `SET`).
    Always,
    /// Only if the key does not exist (`NX`).
    IfAbsent,
    /// Only if the key exists (`XX`).
    IfPresent,
}

/// `ZADD`'s flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZAddFlags {
    /// Only add new members, never update (`NX`).
    pub nx: bool,
    /// Only update existing members, never add (`XX`).
    pub xx: bool,
    /// Update only when the new score is greater (`GT`); new members still added.
    pub gt: bool,
    /// Update only when the new score is less (`LT`); new members still added.
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
        /// The key written.
        key: Vec<u8>,
        /// Its new string value.
        value: Vec<u8>,
        /// When the write happens (`NX`, `XX`, always).
        cond: SetCond,
        /// `GET`: reply with the old string (nil if none) instead of `OK`.
        get: bool,
        /// The key's expiry after the write.
        expiry: Expiry,
    },
    /// Compare-and-set: write `new` only if the current string equals `expected`
    /// (`None`: only if the key is absent). Replies 1 on success, 0 otherwise.
    Cas {
        /// The key compared and written.
        key: Vec<u8>,
        /// The string it must hold now; `None`: it must be absent.
        expected: Option<Vec<u8>>,
        /// The string written on a match.
        new: Vec<u8>,
        /// The key's expiry after the write.
        expiry: Expiry,
    },
    /// `INCRBY` (and `INCR`, `DECR`, `DECRBY`).
    IncrBy {
        /// The key holding the integer (absent counts as 0).
        key: Vec<u8>,
        /// The amount added; negative decrements.
        by: i64,
    },
    /// `APPEND key value`: replies with the new length.
    Append {
        /// The key appended to (absent counts as empty).
        key: Vec<u8>,
        /// The bytes appended.
        value: Vec<u8>,
    },
    /// `GETDEL key`: replies with the string (nil if absent) and deletes the key.
    GetDel {
        /// The key read and deleted.
        key: Vec<u8>,
    },
    /// `DEL` / `UNLINK`: replies with how many existed.
    Del {
        /// The keys deleted.
        keys: Vec<Vec<u8>>,
    },
    /// `EXPIRE`/`PEXPIRE` (`Some(at)`) or `PERSIST` (`None`): replies 1 if changed.
    /// An expiry at or before the stamp deletes the key, as Redis does.
    Expire {
        /// The key whose expiry changes.
        key: Vec<u8>,
        /// When it expires, in Unix ms; `None` removes its expiry.
        at_ms: Option<u64>,
    },
    /// `LPUSH`/`RPUSH` (`front`), `LPUSHX`/`RPUSHX` (`only_if_exists`): replies with the length.
    Push {
        /// The list pushed to.
        key: Vec<u8>,
        /// Elements pushed one at a time, in order (so `LPUSH a b` leaves `b` first).
        values: Vec<Vec<u8>>,
        /// Push at the head (`LPUSH`) rather than the tail.
        front: bool,
        /// Push only to an existing list (`LPUSHX`/`RPUSHX`); otherwise reply 0.
        only_if_exists: bool,
    },
    /// `LPOP`/`RPOP` with an optional count.
    Pop {
        /// The list popped from.
        key: Vec<u8>,
        /// Pop from the head (`LPOP`) rather than the tail.
        front: bool,
        /// `None`: one element (bulk or nil); `Some(n)`: up to n, as an array.
        count: Option<usize>,
    },
    /// `LREM key count value`.
    LRem {
        /// The list.
        key: Vec<u8>,
        /// How many to remove: positive from the head, negative from the tail, 0 all.
        count: i64,
        /// The element removed.
        value: Vec<u8>,
    },
    /// `LMOVE src dst LEFT|RIGHT LEFT|RIGHT` (and `RPOPLPUSH`).
    LMove {
        /// The list popped from.
        src: Vec<u8>,
        /// The list pushed to (created if absent; may be `src`).
        dst: Vec<u8>,
        /// Pop from `src`'s head (`LEFT`) rather than its tail.
        from_front: bool,
        /// Push at `dst`'s head (`LEFT`) rather than its tail.
        to_front: bool,
    },
    /// `SADD key member ...`: replies with how many members were new.
    SAdd {
        /// The set.
        key: Vec<u8>,
        /// Members added.
        members: Vec<Vec<u8>>,
    },
    /// `SREM key member ...`: replies with how many members were there.
    SRem {
        /// The set.
        key: Vec<u8>,
        /// Members removed.
        members: Vec<Vec<u8>>,
    },
    /// `SPOP key [count]`: random members, chosen with the stamp's seed.
    SPop {
        /// The set.
        key: Vec<u8>,
        /// `None`: one member (bulk or nil); `Some(n)`: up to n, as an array.
        count: Option<usize>,
    },
    /// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ...`: replies with the
    /// members added (or changed, with `CH`), or the new score with `INCR`.
    ZAdd {
        /// The sorted set.
        key: Vec<u8>,
        /// (score, member) pairs.
        items: Vec<(f64, Vec<u8>)>,
        /// The options.
        flags: ZAddFlags,
    },
    /// `ZREM key member ...`: replies with how many members were removed.
    ZRem {
        /// The sorted set.
        key: Vec<u8>,
        /// Members removed.
        members: Vec<Vec<u8>>,
    },
    /// `ZINCRBY key by member`: replies with the new score.
    ZIncrBy {
        /// The sorted set.
        key: Vec<u8>,
        /// Added to the member's score (absent counts as 0).
        by: f64,
        /// The member.
        member: Vec<u8>,
    },
    /// `ZPOPMIN`/`ZPOPMAX` (`highest`).
    ZPop {
        /// The sorted set.
        key: Vec<u8>,
        /// Most members popped.
        count: usize,
        /// Pop the highest scores (`ZPOPMAX`) rather than the lowest.
        highest: bool,
    },
    /// `HSET key field value [field value ...]`: replies with how many fields were new.
    HSet {
        /// The hash.
        key: Vec<u8>,
        /// (field, value) pairs, at least one.
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// `HDEL key field ...`: replies with how many fields were removed.
    HDel {
        /// The hash.
        key: Vec<u8>,
        /// Fields removed.
        fields: Vec<Vec<u8>>,
    },
    /// `HINCRBY key field by`: replies with the new value.
    HIncrBy {
        /// The hash.
        key: Vec<u8>,
        /// The field holding the integer (absent counts as 0).
        field: Vec<u8>,
        /// The amount added; negative decrements.
        by: i64,
    },
    /// `FLUSHDB`: everything goes.
    FlushAll,
    /// Pops one element from the first of `keys` holding a non-empty list (what
    /// `BLPOP`/`BRPOP` do once an element is there): replies `[key, element]`,
    /// or nil when every list is empty.
    PopFirst {
        /// The lists tried, in order.
        keys: Vec<Vec<u8>>,
        /// Pop from the head (`BLPOP`) rather than the tail (`BRPOP`).
        front: bool,
    },
    /// `EXPIRE`/`PEXPIRE`: expire `ms` after the command's stamp (the
    /// leader's clock, as `SET ... EX` does); zero or less deletes the key.
    /// Replies 1 if the key exists, else 0.
    ExpireIn {
        /// The key whose expiry changes.
        key: Vec<u8>,
        /// Milliseconds after the stamp; zero or less deletes the key.
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
    /// `OK`: done, nothing to return.
    Ok,
    /// No value: an absent key, an unmet condition, or a transaction whose watched key changed.
    Nil,
    /// An integer: a count, a length, a new value, or 1/0 for yes/no.
    Int(i64),
    /// A binary-safe string (values, and scores as Redis formats them).
    Bulk(Vec<u8>),
    /// A floating-point number.
    Double(f64),
    /// An ordered list of replies.
    Array(Vec<Reply>),
    /// An error for one command inside a `Multi`.
    Error(crate::StateError),
    /// A task command's reply.
    Task(crate::tasks::TaskReply),
}
