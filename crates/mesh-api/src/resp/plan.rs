//! Keyspace commands: a Redis command's arguments become a replicated write
//! (`mesh_state::KvCmd`) or a read (`mesh_state::read::ReadCmd`), and a
//! [`Shape`] saying how its reply reads in RESP. Bad arguments give Redis's
//! error text and nothing is proposed. Pure: no I/O, no connection state.

use std::ops::Bound;

use mesh_state::read::{ReadCmd, ZRangeBy};
use mesh_state::{Expiry, KvCmd, SetCond, ValueType, ZAddFlags};

use super::args::{Arg, float, int, is, score_bound, side, syntax};
use super::frame::Reply;
use super::table::Spec;

/// How a state-machine reply reads in RESP.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// The reply as it is (most commands).
    Plain,
    /// Nil is a null array (`LPOP key count` on a missing key).
    NilArray,
    /// `OK` as 1, nil as 0 (`SETNX`).
    OkAsOne,
    /// A flat field/value array is a map (`HGETALL`).
    Map,
    /// An array is a set (`SMEMBERS`).
    Set,
    /// A score: a double in RESP3.
    Score,
    /// `member score ...` pairs of member and double in RESP3 (when `true`).
    WithScores(bool),
    /// `ZPOPMIN`/`ZPOPMAX`: with a count, pairs in RESP3.
    ZPop {
        /// Whether the command gave a count.
        count: bool,
    },
    /// Several writes replying `OK` unless one failed (`MSET`, `HMSET`).
    AllOk,
    /// A bulk string that Redis sends as a status (`TYPE`).
    Status,
}

/// A planned command.
#[derive(Debug)]
pub enum Step {
    /// Writes applied together (one command, or several that must stay in one
    /// log entry like `MSET`'s).
    Write(Vec<KvCmd>, Shape),
    /// A read of the keyspace.
    Read(ReadCmd, Shape),
    /// Answered without the keyspace (an error, mostly).
    Now(Reply),
}

fn w(cmd: KvCmd) -> Step {
    Step::Write(vec![cmd], Shape::Plain)
}

fn r(cmd: ReadCmd) -> Step {
    Step::Read(cmd, Shape::Plain)
}

/// The arity error for `name`.
pub fn wrong_args(name: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Plans a keyspace command whose arity was checked (`a[0]` is the name).
pub fn plan(spec: &Spec, a: Vec<Vec<u8>>) -> Step {
    match plan_inner(spec.name, a) {
        Ok(step) => step,
        Err(e) => Step::Now(e),
    }
}

/// An optional last argument at position 2 (`LPOP key [count]`,
/// `SRANDMEMBER key [count]`): more arguments are `too_many`.
fn optional<T>(a: &Args, parse: fn(&[u8]) -> Arg<T>, too_many: Reply) -> Arg<Option<T>> {
    match a.len() {
        0..=2 => Ok(None),
        3 => parse(a.get(2)).map(Some),
        _ => Err(too_many),
    }
}

/// A count that must not be negative (`LPOP key count`, `SPOP`, `ZPOPMIN`).
fn count(a: &[u8]) -> Arg<usize> {
    let n = int(a)?;
    if n < 0 {
        return Err(Reply::err("ERR value is out of range, must be positive"));
    }
    Ok(n as usize)
}

fn expire_ms(t: i64, unit: i64, cmd: &str) -> Arg<i64> {
    t.checked_mul(unit)
        .ok_or_else(|| Reply::err(format!("ERR invalid expire time in '{cmd}' command")))
}

/// Arguments by position, moved out once each (the arity was checked).
struct Args(Vec<Vec<u8>>);

impl Args {
    fn take(&mut self, i: usize) -> Vec<u8> {
        std::mem::take(&mut self.0[i])
    }
    fn rest(&mut self, from: usize) -> Vec<Vec<u8>> {
        self.0.split_off(from.min(self.0.len()))
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> &[u8] {
        &self.0[i]
    }
}

fn pairs(name: &str, rest: Vec<Vec<u8>>) -> Arg<Vec<(Vec<u8>, Vec<u8>)>> {
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(wrong_args(name));
    }
    let mut it = rest.into_iter();
    let mut out = Vec::with_capacity(it.len() / 2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn plan_inner(name: &'static str, a: Vec<Vec<u8>>) -> Arg<Step> {
    let mut a = Args(a);
    Ok(match name {
        "set" => plan_set(&mut a)?,
        "setex" | "psetex" => {
            let t = int(a.get(2))?;
            if t <= 0 {
                return Err(Reply::err(format!(
                    "ERR invalid expire time in '{name}' command"
                )));
            }
            let ms = expire_ms(t, if name == "setex" { 1000 } else { 1 }, name)?;
            w(KvCmd::Set {
                key: a.take(1),
                value: a.take(3),
                cond: SetCond::Always,
                get: false,
                expiry: Expiry::In(ms as u64),
            })
        }
        "setnx" => Step::Write(
            vec![KvCmd::Set {
                key: a.take(1),
                value: a.take(2),
                cond: SetCond::IfAbsent,
                get: false,
                expiry: Expiry::Never,
            }],
            Shape::OkAsOne,
        ),
        "get" => r(ReadCmd::Get { key: a.take(1) }),
        "getdel" => w(KvCmd::GetDel { key: a.take(1) }),
        "mget" => r(ReadCmd::MGet { keys: a.rest(1) }),
        "mset" => {
            let items = pairs(name, a.rest(1))?;
            let cmds = items
                .into_iter()
                .map(|(key, value)| KvCmd::Set {
                    key,
                    value,
                    cond: SetCond::Always,
                    get: false,
                    expiry: Expiry::Never,
                })
                .collect();
            Step::Write(cmds, Shape::AllOk)
        }
        "strlen" => r(ReadCmd::StrLen { key: a.take(1) }),
        "incr" | "decr" => w(KvCmd::IncrBy {
            key: a.take(1),
            by: if name == "incr" { 1 } else { -1 },
        }),
        "incrby" | "decrby" => {
            let by = int(a.get(2))?;
            let by = if name == "incrby" {
                by
            } else {
                by.checked_neg()
                    .ok_or_else(|| Reply::err("ERR decrement would overflow"))?
            };
            w(KvCmd::IncrBy { key: a.take(1), by })
        }
        "append" => w(KvCmd::Append {
            key: a.take(1),
            value: a.take(2),
        }),
        "del" | "unlink" => w(KvCmd::Del { keys: a.rest(1) }),
        "exists" => r(ReadCmd::Exists { keys: a.rest(1) }),
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let t = int(a.get(2))?;
            if a.len() > 3 {
                let opt = a.get(3);
                if ["nx", "xx", "gt", "lt"].iter().any(|o| is(opt, o)) {
                    return Err(Reply::err(format!(
                        "ERR the {} option of {} is not served by this endpoint",
                        String::from_utf8_lossy(opt).to_uppercase(),
                        name.to_uppercase()
                    )));
                }
                return Err(Reply::err(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )));
            }
            let unit = if name.starts_with('p') { 1 } else { 1000 };
            let ms = expire_ms(t, unit, name)?;
            if name.ends_with("at") {
                w(KvCmd::Expire {
                    key: a.take(1),
                    at_ms: Some(ms.max(0) as u64),
                })
            } else {
                w(KvCmd::ExpireIn { key: a.take(1), ms })
            }
        }
        "persist" => w(KvCmd::Expire {
            key: a.take(1),
            at_ms: None,
        }),
        "ttl" | "pttl" => r(ReadCmd::Ttl {
            key: a.take(1),
            millis: name == "pttl",
        }),
        "type" => Step::Read(ReadCmd::Type { key: a.take(1) }, Shape::Status),
        "keys" => r(ReadCmd::Keys { pattern: a.take(1) }),
        "scan" => plan_scan(&mut a)?,
        "dbsize" => r(ReadCmd::DbSize),
        "lpush" | "rpush" | "lpushx" | "rpushx" => w(KvCmd::Push {
            key: a.take(1),
            values: a.rest(2),
            front: name.starts_with('l'),
            only_if_exists: name.ends_with('x'),
        }),
        "lpop" | "rpop" => {
            let n = optional(&a, count, wrong_args(name))?;
            Step::Write(
                vec![KvCmd::Pop {
                    key: a.take(1),
                    front: name == "lpop",
                    count: n,
                }],
                if n.is_some() {
                    Shape::NilArray
                } else {
                    Shape::Plain
                },
            )
        }
        "llen" => r(ReadCmd::LLen { key: a.take(1) }),
        "lrange" => r(ReadCmd::LRange {
            start: int(a.get(2))?,
            stop: int(a.get(3))?,
            key: a.take(1),
        }),
        "lindex" => r(ReadCmd::LIndex {
            index: int(a.get(2))?,
            key: a.take(1),
        }),
        "lrem" => w(KvCmd::LRem {
            count: int(a.get(2))?,
            key: a.take(1),
            value: a.take(3),
        }),
        "lmove" => w(KvCmd::LMove {
            from_front: side(a.get(3))?,
            to_front: side(a.get(4))?,
            src: a.take(1),
            dst: a.take(2),
        }),
        "rpoplpush" => w(KvCmd::LMove {
            src: a.take(1),
            dst: a.take(2),
            from_front: false,
            to_front: true,
        }),
        "sadd" => w(KvCmd::SAdd {
            key: a.take(1),
            members: a.rest(2),
        }),
        "srem" => w(KvCmd::SRem {
            key: a.take(1),
            members: a.rest(2),
        }),
        "smembers" => Step::Read(ReadCmd::SMembers { key: a.take(1) }, Shape::Set),
        "sismember" => r(ReadCmd::SIsMember {
            key: a.take(1),
            member: a.take(2),
        }),
        "scard" => r(ReadCmd::SCard { key: a.take(1) }),
        "srandmember" => {
            let count = optional(&a, int, syntax())?;
            r(ReadCmd::SRandMember {
                key: a.take(1),
                count,
            })
        }
        "spop" => {
            let n = optional(&a, count, syntax())?;
            w(KvCmd::SPop {
                key: a.take(1),
                count: n,
            })
        }
        "zadd" => plan_zadd(&mut a)?,
        "zrem" => w(KvCmd::ZRem {
            key: a.take(1),
            members: a.rest(2),
        }),
        "zscore" => Step::Read(
            ReadCmd::ZScore {
                key: a.take(1),
                member: a.take(2),
            },
            Shape::Score,
        ),
        "zcard" => r(ReadCmd::ZCard { key: a.take(1) }),
        "zcount" => r(ReadCmd::ZCount {
            min: score_bound(a.get(2))?,
            max: score_bound(a.get(3))?,
            key: a.take(1),
        }),
        "zrange" | "zrevrange" | "zrangebyscore" | "zrevrangebyscore" => plan_zrange(name, &mut a)?,
        "zrank" | "zrevrank" => {
            if a.len() > 3 {
                return Err(syntax());
            }
            r(ReadCmd::ZRank {
                key: a.take(1),
                member: a.take(2),
                rev: name == "zrevrank",
            })
        }
        "zincrby" => Step::Write(
            vec![KvCmd::ZIncrBy {
                by: float(a.get(2))?,
                key: a.take(1),
                member: a.take(3),
            }],
            Shape::Score,
        ),
        "zpopmin" | "zpopmax" => {
            let n = optional(&a, count, syntax())?;
            Step::Write(
                vec![KvCmd::ZPop {
                    key: a.take(1),
                    count: n.unwrap_or(1),
                    highest: name == "zpopmax",
                }],
                Shape::ZPop { count: n.is_some() },
            )
        }
        "hset" | "hmset" => {
            let key = a.take(1);
            let pairs = pairs(name, a.rest(2))?;
            Step::Write(
                vec![KvCmd::HSet { key, pairs }],
                if name == "hmset" {
                    Shape::AllOk
                } else {
                    Shape::Plain
                },
            )
        }
        "hget" => r(ReadCmd::HGet {
            key: a.take(1),
            field: a.take(2),
        }),
        "hmget" => r(ReadCmd::HMGet {
            key: a.take(1),
            fields: a.rest(2),
        }),
        "hgetall" => Step::Read(ReadCmd::HGetAll { key: a.take(1) }, Shape::Map),
        "hdel" => w(KvCmd::HDel {
            key: a.take(1),
            fields: a.rest(2),
        }),
        "hexists" => r(ReadCmd::HExists {
            key: a.take(1),
            field: a.take(2),
        }),
        "hincrby" => w(KvCmd::HIncrBy {
            by: int(a.get(3))?,
            key: a.take(1),
            field: a.take(2),
        }),
        "hkeys" => r(ReadCmd::HKeys { key: a.take(1) }),
        "hvals" => r(ReadCmd::HVals { key: a.take(1) }),
        "hlen" => r(ReadCmd::HLen { key: a.take(1) }),
        other => {
            return Err(Reply::err(format!(
                "ERR '{other}' is not a keyspace command"
            )));
        }
    })
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`.
fn plan_set(a: &mut Args) -> Arg<Step> {
    let mut cond = SetCond::Always;
    let mut get = false;
    let mut expiry = Expiry::Never;
    let mut has_expiry = false;
    let mut i = 3;
    while i < a.len() {
        let opt = a.get(i);
        let has_arg = i + 1 < a.len();
        if is(opt, "nx") && cond == SetCond::Always {
            cond = SetCond::IfAbsent;
        } else if is(opt, "xx") && cond == SetCond::Always {
            cond = SetCond::IfPresent;
        } else if is(opt, "get") {
            get = true;
        } else if is(opt, "keepttl") && !has_expiry {
            expiry = Expiry::Keep;
            has_expiry = true;
        } else if ["ex", "px", "exat", "pxat"].iter().any(|o| is(opt, o)) && !has_expiry && has_arg
        {
            let lower = opt.to_ascii_lowercase();
            let t = int(a.get(i + 1))?;
            let bad = || Reply::err("ERR invalid expire time in 'set' command");
            if t <= 0 {
                return Err(bad());
            }
            let unit = if lower.starts_with(b"p") { 1 } else { 1000 };
            let ms = t.checked_mul(unit).ok_or_else(bad)? as u64;
            expiry = if lower.ends_with(b"at") {
                Expiry::At(ms)
            } else {
                Expiry::In(ms)
            };
            has_expiry = true;
            i += 1;
        } else {
            return Err(syntax());
        }
        i += 1;
    }
    Ok(w(KvCmd::Set {
        key: a.take(1),
        value: a.take(2),
        cond,
        get,
        expiry,
    }))
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`.
fn plan_scan(a: &mut Args) -> Arg<Step> {
    let cursor = std::str::from_utf8(a.get(1))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut of_type) = (None, 10usize, None);
    let mut i = 2;
    while i < a.len() {
        if i + 1 >= a.len() {
            return Err(syntax());
        }
        let opt = a.get(i).to_vec();
        if is(&opt, "match") {
            pattern = Some(a.take(i + 1));
        } else if is(&opt, "count") {
            let n = int(a.get(i + 1))?;
            if n < 1 {
                return Err(syntax());
            }
            count = n.min(1_000_000) as usize;
        } else if is(&opt, "type") {
            let t = a.get(i + 1).to_ascii_lowercase();
            of_type = match &t[..] {
                b"string" => Some(ValueType::String),
                b"list" => Some(ValueType::List),
                b"set" => Some(ValueType::Set),
                b"zset" => Some(ValueType::ZSet),
                b"hash" => Some(ValueType::Hash),
                // Redis matches no key for a type it does not have.
                _ => {
                    return Ok(Step::Now(Reply::Array(vec![
                        Reply::bulk("0"),
                        Reply::Array(vec![]),
                    ])));
                }
            };
        } else {
            return Err(syntax());
        }
        i += 2;
    }
    Ok(r(ReadCmd::Scan {
        cursor,
        pattern,
        count,
        of_type,
    }))
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
fn plan_zadd(a: &mut Args) -> Arg<Step> {
    let mut f = ZAddFlags::default();
    let mut i = 2;
    while i < a.len() {
        let opt = a.get(i);
        match () {
            _ if is(opt, "nx") => f.nx = true,
            _ if is(opt, "xx") => f.xx = true,
            _ if is(opt, "gt") => f.gt = true,
            _ if is(opt, "lt") => f.lt = true,
            _ if is(opt, "ch") => f.ch = true,
            _ if is(opt, "incr") => f.incr = true,
            _ => break,
        }
        i += 1;
    }
    let rest = a.rest(i);
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(syntax());
    }
    if f.nx && f.xx {
        return Err(Reply::err(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if ((f.gt || f.lt) && f.nx) || (f.gt && f.lt) {
        return Err(Reply::err(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if f.incr && rest.len() > 2 {
        return Err(Reply::err(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let mut items = Vec::with_capacity(rest.len() / 2);
    let mut it = rest.into_iter();
    while let (Some(score), Some(member)) = (it.next(), it.next()) {
        items.push((float(&score)?, member));
    }
    Ok(Step::Write(
        vec![KvCmd::ZAdd {
            key: a.take(1),
            items,
            flags: f,
        }],
        if f.incr { Shape::Score } else { Shape::Plain },
    ))
}

/// `ZRANGE` and its older forms.
fn plan_zrange(name: &str, a: &mut Args) -> Arg<Step> {
    let (mut by_score, mut rev, mut limit, mut with_scores) = (false, false, None, false);
    match name {
        "zrevrange" => rev = true,
        "zrangebyscore" => by_score = true,
        "zrevrangebyscore" => (by_score, rev) = (true, true),
        _ => {}
    }
    let mut i = 4;
    while i < a.len() {
        let opt = a.get(i);
        let zrange = name == "zrange";
        if is(opt, "withscores") {
            with_scores = true;
        } else if is(opt, "limit") && name != "zrevrange" && i + 2 < a.len() {
            limit = Some((int(a.get(i + 1))?, int(a.get(i + 2))?));
            i += 2;
        } else if zrange && is(opt, "byscore") {
            by_score = true;
        } else if zrange && is(opt, "rev") {
            rev = true;
        } else if zrange && is(opt, "bylex") {
            return Err(Reply::err(
                "ERR BYLEX is not served by this endpoint (sorted sets are ordered by score)",
            ));
        } else {
            return Err(syntax());
        }
        i += 1;
    }
    if limit.is_some() && !by_score {
        return Err(Reply::err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    let by = if by_score {
        // Reversed ranges name the bounds high first.
        let (lo, hi) = if rev { (3, 2) } else { (2, 3) };
        ZRangeBy::Score {
            min: score_bound(a.get(lo))?,
            max: score_bound(a.get(hi))?,
        }
    } else {
        ZRangeBy::Rank {
            start: int(a.get(2))?,
            stop: int(a.get(3))?,
        }
    };
    // An empty score range is empty, not an error.
    if let ZRangeBy::Score { min, max } = &by
        && bound_value(min) > bound_value(max)
    {
        return Ok(Step::Now(Reply::Array(vec![])));
    }
    Ok(Step::Read(
        ReadCmd::ZRange {
            key: a.take(1),
            by,
            rev,
            limit,
            with_scores,
        },
        Shape::WithScores(with_scores),
    ))
}

fn bound_value(b: &Bound<f64>) -> f64 {
    match b {
        Bound::Included(v) | Bound::Excluded(v) => *v,
        Bound::Unbounded => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::table::lookup;

    fn p(cmd: &str) -> Step {
        let args: Vec<Vec<u8>> = cmd.split(' ').map(|s| s.as_bytes().to_vec()).collect();
        let spec = lookup(&args[0]).unwrap();
        assert!(spec.arity_ok(args.len()), "{cmd}: arity");
        plan(spec, args)
    }

    fn err(cmd: &str) -> String {
        match p(cmd) {
            Step::Now(Reply::Error(e)) => e,
            other => panic!("{cmd}: {other:?}"),
        }
    }

    #[test]
    fn set_options() {
        let Step::Write(cmds, _) = p("SET k v NX PX 1500 GET") else {
            panic!()
        };
        assert_eq!(
            cmds,
            vec![KvCmd::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                cond: SetCond::IfAbsent,
                get: true,
                expiry: Expiry::In(1500),
            }]
        );
        let Step::Write(cmds, _) = p("set k v keepttl xx") else {
            panic!()
        };
        assert!(matches!(
            cmds[0],
            KvCmd::Set {
                cond: SetCond::IfPresent,
                expiry: Expiry::Keep,
                ..
            }
        ));
        assert_eq!(err("SET k v NX XX"), "ERR syntax error");
        assert_eq!(err("SET k v EX 1 PX 2"), "ERR syntax error");
        assert_eq!(err("SET k v EX"), "ERR syntax error");
        assert_eq!(
            err("SET k v EX 0"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            err("SET k v EX x"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err("SETEX k -1 v"),
            "ERR invalid expire time in 'setex' command"
        );
    }

    #[test]
    fn argument_errors_are_redis_texts() {
        assert_eq!(
            err("MSET a 1 b"),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(
            err("HSET h f v g"),
            "ERR wrong number of arguments for 'hset' command"
        );
        assert_eq!(
            err("LPOP l -1"),
            "ERR value is out of range, must be positive"
        );
        assert_eq!(
            err("INCRBY k 1.5"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err("ZADD z NX XX 1 a"),
            "ERR XX and NX options at the same time are not compatible"
        );
        assert_eq!(
            err("ZADD z GT LT 1 a"),
            "ERR GT, LT, and/or NX options at the same time are not compatible"
        );
        assert_eq!(
            err("ZADD z INCR 1 a 2 b"),
            "ERR INCR option supports a single increment-element pair"
        );
        assert_eq!(err("ZADD z 1 a 2"), "ERR syntax error");
        assert_eq!(err("ZADD z x a"), "ERR value is not a valid float");
        assert_eq!(err("ZRANGEBYSCORE z a 1"), "ERR min or max is not a float");
        assert_eq!(
            err("ZRANGE z 0 1 LIMIT 0 1"),
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
        );
        assert_eq!(err("SCAN x"), "ERR invalid cursor");
        assert_eq!(err("SCAN 0 COUNT 0"), "ERR syntax error");
        assert_eq!(err("LMOVE a b UP LEFT"), "ERR syntax error");
        assert_eq!(
            err("DECRBY k -9223372036854775808"),
            "ERR decrement would overflow"
        );
    }

    #[test]
    fn reversed_score_ranges_name_the_high_bound_first() {
        let Step::Read(ReadCmd::ZRange { by, rev, .. }, _) = p("ZREVRANGEBYSCORE z (5 -inf") else {
            panic!()
        };
        assert!(rev);
        assert_eq!(
            by,
            ZRangeBy::Score {
                min: Bound::Included(f64::NEG_INFINITY),
                max: Bound::Excluded(5.0)
            }
        );
        let Step::Read(ReadCmd::ZRange { by, limit, .. }, _) =
            p("ZRANGE z 5 1 BYSCORE REV LIMIT 1 2 WITHSCORES")
        else {
            panic!()
        };
        assert_eq!(limit, Some((1, 2)));
        assert_eq!(
            by,
            ZRangeBy::Score {
                min: Bound::Included(1.0),
                max: Bound::Included(5.0)
            }
        );
        assert!(matches!(p("ZRANGEBYSCORE z 5 1"), Step::Now(Reply::Array(v)) if v.is_empty()));
    }
}
