//! The command table: every command the endpoint serves, with Redis's arity,
//! flags, key positions, group and summary (what `COMMAND`, `COMMAND INFO`
//! and `COMMAND DOCS` report, and what the arity check uses).

use std::collections::HashMap;
use std::sync::LazyLock;

/// Who serves a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keyspace read or write, planned by [`super::plan`].
    Data,
    /// Connection state, pub/sub, transactions, blocking pops, server
    /// commands: served by the connection.
    Conn,
}

/// One command.
#[derive(Debug)]
pub struct Spec {
    /// The command's name, lower case.
    pub name: &'static str,
    /// Redis's arity: `n` exactly n arguments (the name included), `-n` at least n.
    pub arity: i32,
    /// Redis's command flags (`write`, `readonly`, `fast`, ...).
    pub flags: &'static [&'static str],
    /// Position of the first key argument (0: none).
    pub first_key: i32,
    /// Position of the last key argument (-1: the last argument).
    pub last_key: i32,
    /// Steps between key arguments.
    pub step: i32,
    /// Redis's command group (`string`, `list`, ...).
    pub group: &'static str,
    /// The Redis version that introduced it.
    pub since: &'static str,
    /// One line on what it does (`COMMAND DOCS`).
    pub summary: &'static str,
    /// Who serves it.
    pub kind: Kind,
}

impl Spec {
    /// Whether `argc` arguments (the name included) fit the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }
    /// Whether it writes the keyspace (the `write` flag).
    pub fn is_write(&self) -> bool {
        self.flags.contains(&"write")
    }
}

const W: &[&str] = &["write"];
const WD: &[&str] = &["write", "denyoom"];
const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const WF: &[&str] = &["write", "fast"];
const B: &[&str] = &["write", "blocking"];
const C: &[&str] = &["fast", "loading", "stale"];
const NA: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth"];
const PS: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast"];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $f:expr, $l:expr, $s:expr, $group:literal, $since:literal, $kind:ident, $summary:literal) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $f,
            last_key: $l,
            step: $s,
            group: $group,
            since: $since,
            summary: $summary,
            kind: Kind::$kind,
        }
    };
}

/// Every command served.
pub static COMMANDS: &[Spec] = &[
    // connection
    spec!(
        "ping",
        -1,
        C,
        0,
        0,
        0,
        "connection",
        "1.0.0",
        Conn,
        "Returns the server's liveliness response."
    ),
    spec!(
        "echo",
        2,
        C,
        0,
        0,
        0,
        "connection",
        "1.0.0",
        Conn,
        "Returns the given string."
    ),
    spec!(
        "auth",
        -2,
        NA,
        0,
        0,
        0,
        "connection",
        "1.0.0",
        Conn,
        "Authenticates the connection."
    ),
    spec!(
        "hello",
        -1,
        NA,
        0,
        0,
        0,
        "connection",
        "6.0.0",
        Conn,
        "Handshakes with the server: protocol version, authentication, client name."
    ),
    spec!(
        "select",
        2,
        C,
        0,
        0,
        0,
        "connection",
        "1.0.0",
        Conn,
        "Changes the selected database (only 0 exists)."
    ),
    spec!(
        "quit",
        -1,
        NA,
        0,
        0,
        0,
        "connection",
        "1.0.0",
        Conn,
        "Closes the connection."
    ),
    spec!(
        "reset",
        1,
        NA,
        0,
        0,
        0,
        "connection",
        "6.2.0",
        Conn,
        "Resets the connection."
    ),
    spec!(
        "client",
        -2,
        C,
        0,
        0,
        0,
        "connection",
        "2.4.0",
        Conn,
        "CLIENT SETNAME, GETNAME, ID, INFO, SETINFO."
    ),
    spec!(
        "readonly",
        1,
        C,
        0,
        0,
        0,
        "cluster",
        "3.0.0",
        Conn,
        "Reads on this connection come from this node's replica (possibly stale), also without a quorum."
    ),
    spec!(
        "readwrite",
        1,
        C,
        0,
        0,
        0,
        "cluster",
        "3.0.0",
        Conn,
        "Reads on this connection are linearizable again (the default)."
    ),
    // server
    spec!(
        "command",
        -1,
        &["loading", "stale"],
        0,
        0,
        0,
        "server",
        "2.8.13",
        Conn,
        "COMMAND, COMMAND COUNT, COMMAND INFO, COMMAND DOCS, COMMAND LIST."
    ),
    spec!(
        "info",
        -1,
        &["loading", "stale"],
        0,
        0,
        0,
        "server",
        "1.0.0",
        Conn,
        "Information about the node and the mesh, with a # Mesh section."
    ),
    spec!(
        "dbsize",
        1,
        RF,
        0,
        0,
        0,
        "server",
        "1.0.0",
        Data,
        "Returns the number of keys."
    ),
    spec!(
        "flushdb",
        -1,
        W,
        0,
        0,
        0,
        "server",
        "1.0.0",
        Conn,
        "Removes every key of the mesh (refused unless the node enables it)."
    ),
    spec!(
        "flushall",
        -1,
        W,
        0,
        0,
        0,
        "server",
        "1.0.0",
        Conn,
        "Removes every key of the mesh (refused unless the node enables it)."
    ),
    // strings and keys
    spec!(
        "set",
        -3,
        WD,
        1,
        1,
        1,
        "string",
        "1.0.0",
        Data,
        "Sets a string value, with NX XX GET EX PX EXAT PXAT KEEPTTL."
    ),
    spec!(
        "setex",
        4,
        WD,
        1,
        1,
        1,
        "string",
        "2.0.0",
        Data,
        "Sets a string value with a time to live in seconds."
    ),
    spec!(
        "psetex",
        4,
        WD,
        1,
        1,
        1,
        "string",
        "2.6.0",
        Data,
        "Sets a string value with a time to live in milliseconds."
    ),
    spec!(
        "setnx",
        3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "string",
        "1.0.0",
        Data,
        "Sets a string value only if the key does not exist."
    ),
    spec!(
        "get",
        2,
        RF,
        1,
        1,
        1,
        "string",
        "1.0.0",
        Data,
        "Returns the string value of a key."
    ),
    spec!(
        "getdel",
        2,
        WF,
        1,
        1,
        1,
        "string",
        "6.2.0",
        Data,
        "Returns the string value of a key and deletes it."
    ),
    spec!(
        "mget",
        -2,
        RF,
        1,
        -1,
        1,
        "string",
        "1.0.0",
        Data,
        "Returns the string values of keys."
    ),
    spec!(
        "mset",
        -3,
        WD,
        1,
        -1,
        2,
        "string",
        "1.0.1",
        Data,
        "Sets several keys at once, atomically."
    ),
    spec!(
        "strlen",
        2,
        RF,
        1,
        1,
        1,
        "string",
        "2.2.0",
        Data,
        "Returns the length of a string value."
    ),
    spec!(
        "incr",
        2,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "string",
        "1.0.0",
        Data,
        "Increments an integer value by one."
    ),
    spec!(
        "incrby",
        3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "string",
        "1.0.0",
        Data,
        "Increments an integer value."
    ),
    spec!(
        "decr",
        2,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "string",
        "1.0.0",
        Data,
        "Decrements an integer value by one."
    ),
    spec!(
        "decrby",
        3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "string",
        "1.0.0",
        Data,
        "Decrements an integer value."
    ),
    spec!(
        "append",
        3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "string",
        "2.0.0",
        Data,
        "Appends to a string value."
    ),
    spec!(
        "del",
        -2,
        W,
        1,
        -1,
        1,
        "generic",
        "1.0.0",
        Data,
        "Deletes keys."
    ),
    spec!(
        "unlink",
        -2,
        WF,
        1,
        -1,
        1,
        "generic",
        "4.0.0",
        Data,
        "Deletes keys."
    ),
    spec!(
        "exists",
        -2,
        RF,
        1,
        -1,
        1,
        "generic",
        "1.0.0",
        Data,
        "Counts the given keys that exist."
    ),
    spec!(
        "expire",
        -3,
        WF,
        1,
        1,
        1,
        "generic",
        "1.0.0",
        Data,
        "Sets a key's time to live in seconds."
    ),
    spec!(
        "pexpire",
        -3,
        WF,
        1,
        1,
        1,
        "generic",
        "2.6.0",
        Data,
        "Sets a key's time to live in milliseconds."
    ),
    spec!(
        "expireat",
        -3,
        WF,
        1,
        1,
        1,
        "generic",
        "1.2.0",
        Data,
        "Sets a key's expiry as a Unix time in seconds."
    ),
    spec!(
        "pexpireat",
        -3,
        WF,
        1,
        1,
        1,
        "generic",
        "2.6.0",
        Data,
        "Sets a key's expiry as a Unix time in milliseconds."
    ),
    spec!(
        "ttl",
        2,
        RF,
        1,
        1,
        1,
        "generic",
        "1.0.0",
        Data,
        "Returns a key's time to live in seconds."
    ),
    spec!(
        "pttl",
        2,
        RF,
        1,
        1,
        1,
        "generic",
        "2.6.0",
        Data,
        "Returns a key's time to live in milliseconds."
    ),
    spec!(
        "persist",
        2,
        WF,
        1,
        1,
        1,
        "generic",
        "2.2.0",
        Data,
        "Removes a key's expiry."
    ),
    spec!(
        "type",
        2,
        RF,
        1,
        1,
        1,
        "generic",
        "1.0.0",
        Data,
        "Returns the type of a key's value."
    ),
    spec!(
        "keys",
        2,
        R,
        0,
        0,
        0,
        "generic",
        "1.0.0",
        Data,
        "Returns the keys that match a pattern."
    ),
    spec!(
        "scan",
        -2,
        R,
        0,
        0,
        0,
        "generic",
        "2.8.0",
        Data,
        "Iterates over keys, with MATCH, COUNT and TYPE."
    ),
    // lists
    spec!(
        "lpush",
        -3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Prepends elements to a list."
    ),
    spec!(
        "rpush",
        -3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Appends elements to a list."
    ),
    spec!(
        "lpushx",
        -3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "list",
        "2.2.0",
        Data,
        "Prepends elements to a list that exists."
    ),
    spec!(
        "rpushx",
        -3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "list",
        "2.2.0",
        Data,
        "Appends elements to a list that exists."
    ),
    spec!(
        "lpop",
        -2,
        WF,
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Removes and returns the first elements of a list."
    ),
    spec!(
        "rpop",
        -2,
        WF,
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Removes and returns the last elements of a list."
    ),
    spec!(
        "llen",
        2,
        RF,
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Returns the length of a list."
    ),
    spec!(
        "lrange",
        4,
        R,
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Returns a range of elements of a list."
    ),
    spec!(
        "lindex",
        3,
        R,
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Returns an element of a list by its index."
    ),
    spec!(
        "lrem",
        4,
        W,
        1,
        1,
        1,
        "list",
        "1.0.0",
        Data,
        "Removes elements equal to a value from a list."
    ),
    spec!(
        "lmove",
        5,
        WD,
        1,
        2,
        1,
        "list",
        "6.2.0",
        Data,
        "Pops an element from a list and pushes it to another."
    ),
    spec!(
        "rpoplpush",
        3,
        WD,
        1,
        2,
        1,
        "list",
        "1.2.0",
        Data,
        "Pops the last element of a list and prepends it to another."
    ),
    spec!(
        "blpop",
        -3,
        B,
        1,
        -2,
        1,
        "list",
        "2.0.0",
        Conn,
        "Pops the first element of the first non-empty list, or blocks until one is pushed."
    ),
    spec!(
        "brpop",
        -3,
        B,
        1,
        -2,
        1,
        "list",
        "2.0.0",
        Conn,
        "Pops the last element of the first non-empty list, or blocks until one is pushed."
    ),
    spec!(
        "blmove",
        6,
        &["write", "denyoom", "blocking"],
        1,
        2,
        1,
        "list",
        "6.2.0",
        Conn,
        "LMOVE, or blocks until the source has an element."
    ),
    spec!(
        "brpoplpush",
        4,
        &["write", "denyoom", "blocking"],
        1,
        2,
        1,
        "list",
        "2.2.0",
        Conn,
        "RPOPLPUSH, or blocks until the source has an element."
    ),
    // sets
    spec!(
        "sadd",
        -3,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "set",
        "1.0.0",
        Data,
        "Adds members to a set."
    ),
    spec!(
        "srem",
        -3,
        WF,
        1,
        1,
        1,
        "set",
        "1.0.0",
        Data,
        "Removes members from a set."
    ),
    spec!(
        "smembers",
        2,
        R,
        1,
        1,
        1,
        "set",
        "1.0.0",
        Data,
        "Returns every member of a set."
    ),
    spec!(
        "sismember",
        3,
        RF,
        1,
        1,
        1,
        "set",
        "1.0.0",
        Data,
        "Whether a member belongs to a set."
    ),
    spec!(
        "scard",
        2,
        RF,
        1,
        1,
        1,
        "set",
        "1.0.0",
        Data,
        "Returns the number of members of a set."
    ),
    spec!(
        "srandmember",
        -2,
        R,
        1,
        1,
        1,
        "set",
        "1.0.0",
        Data,
        "Returns random members of a set."
    ),
    spec!(
        "spop",
        -2,
        WF,
        1,
        1,
        1,
        "set",
        "1.0.0",
        Data,
        "Removes and returns random members of a set."
    ),
    // sorted sets
    spec!(
        "zadd",
        -4,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "sorted-set",
        "1.2.0",
        Data,
        "Adds members to a sorted set, with NX XX GT LT CH INCR."
    ),
    spec!(
        "zrem",
        -3,
        WF,
        1,
        1,
        1,
        "sorted-set",
        "1.2.0",
        Data,
        "Removes members from a sorted set."
    ),
    spec!(
        "zscore",
        3,
        RF,
        1,
        1,
        1,
        "sorted-set",
        "1.2.0",
        Data,
        "Returns a member's score."
    ),
    spec!(
        "zcard",
        2,
        RF,
        1,
        1,
        1,
        "sorted-set",
        "1.2.0",
        Data,
        "Returns the number of members of a sorted set."
    ),
    spec!(
        "zcount",
        4,
        RF,
        1,
        1,
        1,
        "sorted-set",
        "2.0.0",
        Data,
        "Counts the members with scores in a range."
    ),
    spec!(
        "zrange",
        -4,
        R,
        1,
        1,
        1,
        "sorted-set",
        "1.2.0",
        Data,
        "Returns members by rank or score, with BYSCORE REV LIMIT WITHSCORES."
    ),
    spec!(
        "zrevrange",
        -4,
        R,
        1,
        1,
        1,
        "sorted-set",
        "1.2.0",
        Data,
        "Returns members by rank, highest score first."
    ),
    spec!(
        "zrangebyscore",
        -4,
        R,
        1,
        1,
        1,
        "sorted-set",
        "1.0.5",
        Data,
        "Returns members with scores in a range."
    ),
    spec!(
        "zrevrangebyscore",
        -4,
        R,
        1,
        1,
        1,
        "sorted-set",
        "2.2.0",
        Data,
        "Returns members with scores in a range, highest first."
    ),
    spec!(
        "zrank",
        3,
        RF,
        1,
        1,
        1,
        "sorted-set",
        "2.0.0",
        Data,
        "Returns a member's rank, lowest score first."
    ),
    spec!(
        "zrevrank",
        3,
        RF,
        1,
        1,
        1,
        "sorted-set",
        "2.0.0",
        Data,
        "Returns a member's rank, highest score first."
    ),
    spec!(
        "zincrby",
        4,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "sorted-set",
        "1.2.0",
        Data,
        "Increments a member's score."
    ),
    spec!(
        "zpopmin",
        -2,
        WF,
        1,
        1,
        1,
        "sorted-set",
        "5.0.0",
        Data,
        "Removes and returns the members with the lowest scores."
    ),
    spec!(
        "zpopmax",
        -2,
        WF,
        1,
        1,
        1,
        "sorted-set",
        "5.0.0",
        Data,
        "Removes and returns the members with the highest scores."
    ),
    // hashes
    spec!(
        "hset",
        -4,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Sets fields of a hash."
    ),
    spec!(
        "hmset",
        -4,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Sets fields of a hash (replies OK)."
    ),
    spec!(
        "hget",
        3,
        RF,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Returns a field's value."
    ),
    spec!(
        "hmget",
        -3,
        RF,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Returns the values of fields."
    ),
    spec!(
        "hgetall",
        2,
        R,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Returns every field and value of a hash."
    ),
    spec!(
        "hdel",
        -3,
        WF,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Deletes fields of a hash."
    ),
    spec!(
        "hexists",
        3,
        RF,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Whether a field exists."
    ),
    spec!(
        "hincrby",
        4,
        &["write", "denyoom", "fast"],
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Increments a field's integer value."
    ),
    spec!(
        "hkeys",
        2,
        R,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Returns the fields of a hash."
    ),
    spec!(
        "hvals",
        2,
        R,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Returns the values of a hash."
    ),
    spec!(
        "hlen",
        2,
        RF,
        1,
        1,
        1,
        "hash",
        "2.0.0",
        Data,
        "Returns the number of fields of a hash."
    ),
    // pub/sub
    spec!(
        "publish",
        3,
        &["pubsub", "loading", "stale", "fast"],
        0,
        0,
        0,
        "pubsub",
        "2.0.0",
        Conn,
        "Publishes to a channel on every node; replies with the receivers, mesh-wide."
    ),
    spec!(
        "subscribe",
        -2,
        PS,
        0,
        0,
        0,
        "pubsub",
        "2.0.0",
        Conn,
        "Subscribes to channels (messages from any node)."
    ),
    spec!(
        "psubscribe",
        -2,
        PS,
        0,
        0,
        0,
        "pubsub",
        "2.0.0",
        Conn,
        "Subscribes to channel patterns (messages from any node)."
    ),
    spec!(
        "unsubscribe",
        -1,
        PS,
        0,
        0,
        0,
        "pubsub",
        "2.0.0",
        Conn,
        "Unsubscribes from channels."
    ),
    spec!(
        "punsubscribe",
        -1,
        PS,
        0,
        0,
        0,
        "pubsub",
        "2.0.0",
        Conn,
        "Unsubscribes from channel patterns."
    ),
    spec!(
        "pubsub",
        -2,
        &["pubsub", "loading", "stale"],
        0,
        0,
        0,
        "pubsub",
        "2.8.0",
        Conn,
        "PUBSUB CHANNELS, NUMSUB, NUMPAT, counted on every node."
    ),
    // transactions
    spec!(
        "multi",
        1,
        TX,
        0,
        0,
        0,
        "transactions",
        "1.2.0",
        Conn,
        "Starts a transaction."
    ),
    spec!(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        0,
        0,
        0,
        "transactions",
        "1.2.0",
        Conn,
        "Runs the queued commands as one replicated command."
    ),
    spec!(
        "discard",
        1,
        TX,
        0,
        0,
        0,
        "transactions",
        "2.0.0",
        Conn,
        "Discards the queued commands."
    ),
    spec!(
        "watch",
        -2,
        TX,
        1,
        -1,
        1,
        "transactions",
        "2.2.0",
        Conn,
        "Runs the next EXEC only if these keys do not change first."
    ),
    spec!(
        "unwatch",
        1,
        TX,
        0,
        0,
        0,
        "transactions",
        "2.2.0",
        Conn,
        "Forgets the watched keys."
    ),
];

static BY_NAME: LazyLock<HashMap<&'static str, &'static Spec>> =
    LazyLock::new(|| COMMANDS.iter().map(|s| (s.name, s)).collect());

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > 32 {
        return None;
    }
    let mut lower = [0u8; 32];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    BY_NAME.get(std::str::from_utf8(lower).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lowercase_and_found_in_any_case() {
        assert_eq!(BY_NAME.len(), COMMANDS.len());
        for s in COMMANDS {
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert_eq!(
                lookup(s.name.to_uppercase().as_bytes()).unwrap().name,
                s.name
            );
        }
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(&[b'x'; 100]).is_none());
        assert!(lookup(b"GeT").unwrap().arity_ok(2));
        assert!(!lookup(b"get").unwrap().arity_ok(3));
        assert!(lookup(b"del").unwrap().arity_ok(5));
        assert!(!lookup(b"del").unwrap().arity_ok(1));
    }
}
