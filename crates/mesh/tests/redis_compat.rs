//! The Redis endpoint against a real `redis-server` (Debian's, on this
//! machine): the same command sequence to both, the same replies, error texts
//! included, except where `docs/redis.md` documents a difference (the order
//! of unordered collections, random picks, live TTLs: compared as sorted, by
//! shape or by bounds, as marked).

mod common;

use common::redis::{Resp, redis_tools};
use mesh_cli::cluster::Cluster;
use mesh_cli::redis_server::RedisServer;
use mesh_proto::resp::Reply;

/// How two replies must agree.
#[derive(Clone, Copy, Debug)]
enum Cmp {
    Exact,
    /// Arrays as multisets (`SMEMBERS`, `KEYS`).
    Sorted,
    /// A flat array of pairs as a set of pairs (`HGETALL`).
    Pairs,
    /// The same kind of reply with the same number of elements (random picks).
    Shape,
    /// `SCAN` to completion in one call: the keys as a set, cursor 0.
    Scan,
    /// A TTL in milliseconds: both within 2 s of each other.
    Near,
    /// A documented difference (`docs/redis.md`): our reply is this error.
    Ours(&'static str),
}

use Cmp::*;

/// The sequence: the commands compared, with good and bad arguments.
const CASES: &[(&str, Cmp)] = &[
    // connection
    ("PING", Exact),
    ("PING hello", Exact),
    ("PING a b", Exact),
    ("ECHO hi", Exact),
    ("SELECT 0", Exact),
    // One keyspace for the whole mesh: database 0 only.
    ("SELECT 1", Ours("ERR DB index is out of range")),
    ("SELECT x", Exact),
    ("CLIENT SETNAME worker-1", Exact),
    ("CLIENT GETNAME", Exact),
    ("CLIENT NOSUCH", Exact),
    ("FOO bar baz", Exact),
    ("GET", Exact),
    // strings and keys
    ("SET k v", Exact),
    ("GET k", Exact),
    ("SET k v2 NX", Exact),
    ("SET k v2 XX GET", Exact),
    ("GET k", Exact),
    ("SET k2 v XX", Exact),
    ("SET k v EX 100", Exact),
    ("TTL k", Exact),
    ("PTTL k", Near),
    ("SET k v PX 0", Exact),
    ("SET k v EX x", Exact),
    ("SET k v NX XX", Exact),
    ("SET k v EX 10 PX 10", Exact),
    ("SET k v BADOPT", Exact),
    ("SET k v3 KEEPTTL", Exact),
    ("TTL k", Exact),
    ("SET k v", Exact),
    ("TTL k", Exact),
    ("SETEX s 100 v", Exact),
    ("TTL s", Exact),
    ("SETEX s 0 v", Exact),
    ("SETEX s x v", Exact),
    ("PSETEX p 100000 v", Exact),
    ("PTTL p", Near),
    ("SETNX k x", Exact),
    ("SETNX fresh x", Exact),
    ("GETDEL fresh", Exact),
    ("GETDEL fresh", Exact),
    ("MSET a 1 b 2 c 3", Exact),
    ("MGET a b nokey c", Exact),
    ("MSET a 1 b", Exact),
    ("INCR cnt", Exact),
    ("INCRBY cnt 10", Exact),
    ("DECR cnt", Exact),
    ("DECRBY cnt 3", Exact),
    ("INCR k", Exact),
    ("INCRBY cnt x", Exact),
    ("INCRBY cnt 1.5", Exact),
    ("SET big 9223372036854775807", Exact),
    ("INCR big", Exact),
    ("DECRBY cnt -9223372036854775808", Exact),
    ("APPEND k xyz", Exact),
    ("APPEND newapp abc", Exact),
    ("STRLEN k", Exact),
    ("STRLEN nokey", Exact),
    ("DEL a b nokey", Exact),
    ("UNLINK c", Exact),
    ("EXISTS k k nokey", Exact),
    ("EXPIRE k 100", Exact),
    ("TTL k", Exact),
    ("PEXPIRE k 100000", Exact),
    ("PTTL k", Near),
    ("PERSIST k", Exact),
    ("PERSIST k", Exact),
    ("TTL k", Exact),
    ("TTL nokey", Exact),
    ("EXPIRE nokey 10", Exact),
    ("EXPIRE k x", Exact),
    ("SET gone v", Exact),
    ("EXPIRE gone -1", Exact),
    ("EXISTS gone", Exact),
    ("SET at v", Exact),
    ("EXPIREAT at 1", Exact),
    ("EXISTS at", Exact),
    ("TYPE k", Exact),
    ("TYPE nokey", Exact),
    ("DBSIZE", Exact),
    ("KEYS *", Sorted),
    ("KEYS [kp]*", Sorted),
    // lists
    ("LPUSH l a b c", Exact),
    ("RPUSH l d e", Exact),
    ("LLEN l", Exact),
    ("LRANGE l 0 -1", Exact),
    ("LRANGE l -2 -1", Exact),
    ("LRANGE l 5 10", Exact),
    ("LRANGE l x 1", Exact),
    ("LINDEX l 0", Exact),
    ("LINDEX l -1", Exact),
    ("LINDEX l 99", Exact),
    ("LPOP l", Exact),
    ("RPOP l", Exact),
    ("LPOP l 2", Exact),
    ("LPOP nolist", Exact),
    ("LPOP nolist 2", Exact),
    ("LPOP l -1", Exact),
    ("LPOP l 1 2", Exact),
    ("RPUSH l x y x z x", Exact),
    ("LREM l -1 x", Exact),
    ("LREM l 0 x", Exact),
    ("LRANGE l 0 -1", Exact),
    ("LMOVE l l2 LEFT RIGHT", Exact),
    ("RPOPLPUSH l l2", Exact),
    ("LRANGE l2 0 -1", Exact),
    ("LMOVE l l2 UP LEFT", Exact),
    ("LMOVE nolist l2 LEFT LEFT", Exact),
    ("LPUSH k x", Exact),
    ("LPUSHX nolist a", Exact),
    ("RPUSHX l2 z", Exact),
    ("BLPOP nolist l2 1", Exact),
    ("BRPOP l2 0.1", Exact),
    ("BLPOP nolist 0.1", Exact),
    ("BLPOP l2 -1", Exact),
    ("BLPOP l2 x", Exact),
    ("BLMOVE l2 l3 RIGHT LEFT 1", Exact),
    ("BLMOVE nolist l3 RIGHT LEFT 0.1", Exact),
    ("BRPOPLPUSH l3 l4 1", Exact),
    ("BLPOP k 1", Exact),
    // sets
    ("SADD s1 a b c d", Exact),
    ("SADD s1 a", Exact),
    ("SREM s1 a z", Exact),
    ("SMEMBERS s1", Sorted),
    ("SMEMBERS noset", Exact),
    ("SISMEMBER s1 b", Exact),
    ("SISMEMBER s1 z", Exact),
    ("SCARD s1", Exact),
    ("SRANDMEMBER s1", Shape),
    ("SRANDMEMBER s1 10", Sorted),
    ("SRANDMEMBER s1 -5", Shape),
    ("SRANDMEMBER noset", Exact),
    ("SRANDMEMBER noset 3", Exact),
    ("SPOP s1 1", Shape),
    ("SPOP s1 10", Shape),
    ("SCARD s1", Exact),
    ("SPOP s1", Exact),
    ("SADD k x", Exact),
    // sorted sets
    ("ZADD z 1 a 2 b 3 c", Exact),
    ("ZADD z NX 5 a 4 d", Exact),
    ("ZADD z XX CH 10 a 7 e", Exact),
    ("ZADD z GT 1 b", Exact),
    ("ZADD z LT 1 b", Exact),
    ("ZADD z INCR 2 a", Exact),
    ("ZADD z NX XX 1 a", Exact),
    ("ZADD z GT LT 1 a", Exact),
    ("ZADD z INCR 1 a 2 b", Exact),
    ("ZADD z x a", Exact),
    ("ZADD z 1", Exact),
    ("ZADD z 1 a 2", Exact),
    ("ZSCORE z a", Exact),
    ("ZSCORE z nomember", Exact),
    ("ZCARD z", Exact),
    ("ZCOUNT z 1 5", Exact),
    ("ZCOUNT z (1 +inf", Exact),
    ("ZCOUNT z x 1", Exact),
    ("ZRANGE z 0 -1", Exact),
    ("ZRANGE z 0 -1 WITHSCORES", Exact),
    ("ZRANGE z 0 1 REV", Exact),
    ("ZRANGE z 2 5 BYSCORE", Exact),
    ("ZRANGE z 5 2 BYSCORE REV LIMIT 0 2 WITHSCORES", Exact),
    ("ZRANGE z 0 1 LIMIT 0 1", Exact),
    ("ZRANGE z 0 1 BADOPT", Exact),
    ("ZREVRANGE z 0 1", Exact),
    ("ZREVRANGE z 0 1 WITHSCORES", Exact),
    ("ZRANGEBYSCORE z -inf +inf WITHSCORES", Exact),
    ("ZRANGEBYSCORE z (1 3 LIMIT 1 1", Exact),
    ("ZRANGEBYSCORE z 5 1", Exact),
    ("ZRANGEBYSCORE z a 1", Exact),
    ("ZREVRANGEBYSCORE z +inf 2", Exact),
    ("ZREVRANGEBYSCORE z +inf -inf WITHSCORES LIMIT 1 2", Exact),
    ("ZRANK z c", Exact),
    ("ZREVRANK z c", Exact),
    ("ZRANK z nomember", Exact),
    ("ZINCRBY z 1.5 b", Exact),
    ("ZINCRBY z 1 newm", Exact),
    ("ZINCRBY z x b", Exact),
    ("ZREM z d nomember", Exact),
    ("ZPOPMIN z", Exact),
    ("ZPOPMAX z 2", Exact),
    ("ZPOPMIN nozset", Exact),
    ("ZPOPMIN z -1", Exact),
    ("ZRANGE z 0 -1 WITHSCORES", Exact),
    ("ZADD k 1 a", Exact),
    ("ZSCORE k a", Exact),
    // hashes
    ("HSET h f1 v1 f2 v2", Exact),
    ("HSET h f1 x", Exact),
    ("HSET h f1", Exact),
    ("HSET h f1 v f2", Exact),
    ("HGET h f1", Exact),
    ("HGET h nofield", Exact),
    ("HMGET h f1 nofield f2", Exact),
    ("HGETALL h", Pairs),
    ("HGETALL nohash", Exact),
    ("HEXISTS h f1", Exact),
    ("HEXISTS h nofield", Exact),
    ("HDEL h f2 nofield", Exact),
    ("HLEN h", Exact),
    ("HINCRBY h n 5", Exact),
    ("HINCRBY h n -7", Exact),
    ("HINCRBY h f1 1", Exact),
    ("HINCRBY h n x", Exact),
    ("HMSET h a 1 b 2", Exact),
    ("HKEYS h", Sorted),
    ("HVALS h", Sorted),
    ("HGET k f", Exact),
    ("HSET k f v", Exact),
    // scans
    ("SCAN 0 COUNT 1000", Scan),
    ("SCAN 0 MATCH h* COUNT 1000", Scan),
    ("SCAN 0 TYPE list COUNT 1000", Scan),
    ("SCAN 0 TYPE nosuchtype COUNT 1000", Scan),
    ("SCAN x", Exact),
    ("SCAN 0 COUNT 0", Exact),
    ("SCAN 0 MATCH", Exact),
    // transactions
    ("MULTI", Exact),
    ("SET t 1", Exact),
    ("INCR t", Exact),
    ("GET t", Exact),
    ("LPUSH t x", Exact),
    ("SET t", Exact),
    ("EXEC", Exact),
    ("MULTI", Exact),
    ("SET t 1", Exact),
    ("INCR t", Exact),
    ("GET t", Exact),
    ("LPUSH t x", Exact),
    ("INCRBY t x", Exact),
    ("EXEC", Exact),
    ("GET t", Exact),
    ("MULTI", Exact),
    ("MULTI", Exact),
    ("GET t", Exact),
    ("DISCARD", Exact),
    ("EXEC", Exact),
    ("DISCARD", Exact),
    ("WATCH t", Exact),
    ("SET t 5", Exact),
    ("MULTI", Exact),
    ("WATCH x", Exact),
    ("GET t", Exact),
    ("EXEC", Exact),
    ("WATCH t", Exact),
    ("MULTI", Exact),
    ("INCR t", Exact),
    ("EXEC", Exact),
    ("WATCH t", Exact),
    ("UNWATCH", Exact),
    ("SET t 9", Exact),
    ("MULTI", Exact),
    ("GET t", Exact),
    ("EXEC", Exact),
    ("MULTI", Exact),
    ("EXEC", Exact),
    // pub/sub with nobody listening
    ("PUBLISH news hello", Exact),
    ("PUBSUB NUMSUB news other", Exact),
    ("PUBSUB NUMPAT", Exact),
    ("PUBSUB CHANNELS", Exact),
    ("PUBSUB NOSUCH", Exact),
    // the end
    ("DBSIZE", Exact),
    ("FLUSHDB", Exact),
    ("DBSIZE", Exact),
];

fn args(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

fn sorted(r: &Reply) -> Vec<String> {
    let mut v: Vec<String> = match r {
        Reply::Array(items) | Reply::Set(items) => items.iter().map(|i| format!("{i:?}")).collect(),
        other => vec![format!("{other:?}")],
    };
    v.sort();
    v
}

fn pairs(r: &Reply) -> Vec<String> {
    let mut v: Vec<String> = match r {
        Reply::Array(items) => items.chunks(2).map(|c| format!("{:?}", c)).collect(),
        other => vec![format!("{other:?}")],
    };
    v.sort();
    v
}

fn shape(r: &Reply) -> String {
    match r {
        Reply::Array(items) => format!("array of {}", items.len()),
        Reply::Bulk(_) => "bulk".into(),
        other => format!("{other:?}"),
    }
}

fn int(r: &Reply) -> i64 {
    match r {
        Reply::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn agree(cmp: Cmp, ours: &Reply, redis: &Reply) -> bool {
    match cmp {
        Exact => ours == redis,
        Sorted => sorted(ours) == sorted(redis),
        Pairs => pairs(ours) == pairs(redis),
        Shape => shape(ours) == shape(redis),
        Near => (int(ours) - int(redis)).abs() <= 2_000,
        Ours(e) => *ours == Reply::Error(e.into()),
        Scan => match (ours, redis) {
            (Reply::Array(a), Reply::Array(b)) if a.len() == 2 && b.len() == 2 => {
                a[0] == b[0] && sorted(&a[1]) == sorted(&b[1])
            }
            _ => ours == redis,
        },
    }
}

/// Both endpoints, flushed: (mesh cluster, redis-server, mesh conn, redis conn).
fn endpoints(tag: &str) -> Option<(Cluster, RedisServer, Resp, Resp)> {
    let (server, _, _) = redis_tools()?;
    let redis = RedisServer::start(&server).unwrap();
    let exe = env!("CARGO_BIN_EXE_mesh");
    let mut c = Cluster::new(std::path::Path::new(exe), "local", tag).unwrap();
    let n = c
        .spawn_with(
            "rc0",
            &[],
            &[
                "--resp",
                "127.0.0.1:0",
                "--resp-allow-flush",
                "--voters",
                "1",
            ],
        )
        .unwrap();
    let addr = c.info(n).resp.expect("the node serves RESP").to_string();
    let mut ours = Resp::connect(&addr);
    let mut theirs = Resp::connect(&redis.addr);
    for conn in [&mut ours, &mut theirs] {
        assert_eq!(conn.cmd(&["FLUSHALL"]), Reply::Simple("OK".into()));
    }
    Some((c, redis, ours, theirs))
}

fn report(differences: Vec<String>) {
    assert!(
        differences.is_empty(),
        "{} of {} replies differ from redis-server's:\n{}",
        differences.len(),
        CASES.len(),
        differences.join("\n")
    );
}

/// The whole sequence as one pipeline: consecutive writes become one log
/// entry and consecutive reads one read round, yet every reply is the one
/// the commands give one at a time.
#[test]
fn a_pipeline_replies_as_redis_server_does() {
    let Some((_c, _redis, mut ours, mut theirs)) = endpoints("rcpipe") else {
        return;
    };
    let cmds: Vec<Vec<String>> = CASES
        .iter()
        .map(|(l, _)| args(l).into_iter().map(String::from).collect())
        .collect();
    let (o, r) = (ours.pipeline(&cmds), theirs.pipeline(&cmds));
    let mut differences = Vec::new();
    for (((line, cmp), o), r) in CASES.iter().zip(&o).zip(&r) {
        if !agree(*cmp, o, r) {
            differences.push(format!("{line}\n    mesh:  {o:?}\n    redis: {r:?}"));
        }
    }
    report(differences);
}

#[test]
fn every_command_replies_as_redis_server_does() {
    let Some((_c, _redis, mut ours, mut theirs)) = endpoints("rcseq") else {
        return;
    };
    let mut differences = Vec::new();
    for (line, cmp) in CASES {
        let a = args(line);
        let (o, r) = (ours.cmd(&a), theirs.cmd(&a));
        if !agree(*cmp, &o, &r) {
            differences.push(format!("{line}\n    mesh:  {o:?}\n    redis: {r:?}"));
        }
    }
    report(differences);
}
