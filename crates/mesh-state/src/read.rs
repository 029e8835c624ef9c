//! Keyspace reads with Redis's semantics and reply shapes (`GET`, `LRANGE`,
//! `ZRANGE ... BYSCORE`, `SCAN`, ...), evaluated on a [`Keyspace`] at a given
//! time. They run outside the log on any replica (after a read-index round, or
//! stale), and inside the log as part of a transaction ([`crate::Command::Exec`]),
//! so one definition serves both and `MULTI; GET; INCR; EXEC` reads and writes
//! atomically.
//!
//! Replies are RESP2-shaped ([`Reply`]); a front end that speaks RESP3 reshapes
//! the few that differ (maps, doubles, sets).

use std::ops::Bound;

use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
use serde::{Deserialize, Serialize};

use crate::command::Reply;
use crate::error::StateError;
use crate::keyspace::{Keyspace, resolve_range};
use crate::machine::format_score;
use crate::value::{ValueType, score_in};

/// How `ZRANGE` selects members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ZRangeBy {
    /// By rank, inclusive, negative from the end.
    Rank {
        /// First rank, 0-based; negative counts from the end (-1 is the last).
        start: i64,
        /// Last rank, inclusive; negative counts from the end.
        stop: i64,
    },
    /// By score; with `rev` the bounds are still (min, max).
    Score {
        /// Lowest score (inclusive, exclusive or open).
        min: Bound<f64>,
        /// Highest score (inclusive, exclusive or open).
        max: Bound<f64>,
    },
}

/// A read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadCmd {
    /// `GET key`: the string, or nil.
    Get {
        /// The key read.
        key: Vec<u8>,
    },
    /// `MGET key ...`: each key's string, nil for absent keys and other types.
    MGet {
        /// The keys read, in reply order.
        keys: Vec<Vec<u8>>,
    },
    /// `STRLEN key`: the string's length in bytes (0 if absent).
    StrLen {
        /// The key read.
        key: Vec<u8>,
    },
    /// Counts a key once per mention, as Redis does.
    Exists {
        /// The keys looked up (repeats count again).
        keys: Vec<Vec<u8>>,
    },
    /// `TTL` (`millis: false`) or `PTTL`: -2 no key, -1 no expiry.
    Ttl {
        /// The key read.
        key: Vec<u8>,
        /// Reply in milliseconds (`PTTL`) rather than rounded seconds.
        millis: bool,
    },
    /// `TYPE key`: `string`, `list`, `set`, `zset`, `hash` or `none`.
    Type {
        /// The key read.
        key: Vec<u8>,
    },
    /// `KEYS pattern`: every live key matching, in key order.
    Keys {
        /// A glob pattern ([`crate::glob`]).
        pattern: Vec<u8>,
    },
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`, cursors as in
    /// [`Keyspace::scan_hashed`].
    Scan {
        /// Where to continue; 0 starts a scan.
        cursor: u64,
        /// Only keys matching this glob (`MATCH`).
        pattern: Option<Vec<u8>>,
        /// Keys visited in this call (`COUNT`), not the number returned.
        count: usize,
        /// Only keys holding this type (`TYPE`).
        of_type: Option<ValueType>,
    },
    /// `DBSIZE`: the number of live keys.
    DbSize,
    /// `LLEN key`: the list's length (0 if absent).
    LLen {
        /// The list.
        key: Vec<u8>,
    },
    /// `LRANGE key start stop`: elements from index `start` to `stop`, inclusive.
    LRange {
        /// The list.
        key: Vec<u8>,
        /// First index, 0-based; negative counts from the end.
        start: i64,
        /// Last index, inclusive; negative counts from the end.
        stop: i64,
    },
    /// `LINDEX key index`: one element, or nil.
    LIndex {
        /// The list.
        key: Vec<u8>,
        /// 0-based; negative counts from the end.
        index: i64,
    },
    /// `SMEMBERS key`: every member, in byte order.
    SMembers {
        /// The set.
        key: Vec<u8>,
    },
    /// `SISMEMBER key member`: 1 or 0.
    SIsMember {
        /// The set.
        key: Vec<u8>,
        /// The member looked up.
        member: Vec<u8>,
    },
    /// `SCARD key`: the number of members (0 if absent).
    SCard {
        /// The set.
        key: Vec<u8>,
    },
    /// Without `count`: one member or nil. A positive count: distinct members;
    /// a negative one: that many, repeats allowed.
    SRandMember {
        /// The set.
        key: Vec<u8>,
        /// How many members, and whether they may repeat (see above).
        count: Option<i64>,
    },
    /// `ZSCORE key member`: the score as Redis formats it, or nil.
    ZScore {
        /// The sorted set.
        key: Vec<u8>,
        /// The member looked up.
        member: Vec<u8>,
    },
    /// `ZCARD key`: the number of members (0 if absent).
    ZCard {
        /// The sorted set.
        key: Vec<u8>,
    },
    /// `ZCOUNT key min max`: members with a score in the range.
    ZCount {
        /// The sorted set.
        key: Vec<u8>,
        /// Lowest score counted.
        min: Bound<f64>,
        /// Highest score counted.
        max: Bound<f64>,
    },
    /// `ZRANGE key ... [BYSCORE] [REV] [LIMIT offset count] [WITHSCORES]`.
    ZRange {
        /// The sorted set.
        key: Vec<u8>,
        /// By rank or by score.
        by: ZRangeBy,
        /// From the highest score down (`REV`).
        rev: bool,
        /// `LIMIT offset count` (a negative count: all the rest).
        limit: Option<(i64, i64)>,
        /// Follow each member with its score (`WITHSCORES`).
        with_scores: bool,
    },
    /// `ZRANK`/`ZREVRANK key member`: the 0-based rank, or nil.
    ZRank {
        /// The sorted set.
        key: Vec<u8>,
        /// The member looked up.
        member: Vec<u8>,
        /// Rank from the highest score (`ZREVRANK`).
        rev: bool,
    },
    /// `HGET key field`: the value, or nil.
    HGet {
        /// The hash.
        key: Vec<u8>,
        /// The field read.
        field: Vec<u8>,
    },
    /// `HMGET key field ...`: each field's value, or nil.
    HMGet {
        /// The hash.
        key: Vec<u8>,
        /// The fields read, in reply order.
        fields: Vec<Vec<u8>>,
    },
    /// `HGETALL key`: field, value, field, value, ... in field order.
    HGetAll {
        /// The hash.
        key: Vec<u8>,
    },
    /// `HEXISTS key field`: 1 or 0.
    HExists {
        /// The hash.
        key: Vec<u8>,
        /// The field looked up.
        field: Vec<u8>,
    },
    /// `HKEYS key`: every field, in byte order.
    HKeys {
        /// The hash.
        key: Vec<u8>,
    },
    /// `HVALS key`: every value, in field order.
    HVals {
        /// The hash.
        key: Vec<u8>,
    },
    /// `HLEN key`: the number of fields (0 if absent).
    HLen {
        /// The hash.
        key: Vec<u8>,
    },
}

fn bulks<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Reply {
    Reply::Array(items.into_iter().map(|b| Reply::Bulk(b.to_vec())).collect())
}

fn opt_bulk(b: Option<&[u8]>) -> Reply {
    b.map(|b| Reply::Bulk(b.to_vec())).unwrap_or(Reply::Nil)
}

impl ReadCmd {
    /// The keys this read looks at (for `WATCH`-style checks and routing).
    pub fn keys(&self) -> Vec<&[u8]> {
        use ReadCmd::*;
        match self {
            MGet { keys } | Exists { keys } => keys.iter().map(Vec::as_slice).collect(),
            Keys { .. } | Scan { .. } | DbSize => vec![],
            Get { key }
            | StrLen { key }
            | Ttl { key, .. }
            | Type { key }
            | LLen { key }
            | LRange { key, .. }
            | LIndex { key, .. }
            | SMembers { key }
            | SIsMember { key, .. }
            | SCard { key }
            | SRandMember { key, .. }
            | ZScore { key, .. }
            | ZCard { key }
            | ZCount { key, .. }
            | ZRange { key, .. }
            | ZRank { key, .. }
            | HGet { key, .. }
            | HMGet { key, .. }
            | HGetAll { key }
            | HExists { key, .. }
            | HKeys { key }
            | HVals { key }
            | HLen { key } => vec![key],
        }
    }

    /// Evaluates the read at `now_ms`. `seed` drives `SRANDMEMBER` (the
    /// command's stamp inside the log, anything outside it).
    pub fn eval(&self, ks: &Keyspace, now_ms: u64, seed: u64) -> Result<Reply, StateError> {
        use ReadCmd::*;
        let now = now_ms;
        Ok(match self {
            Get { key } => opt_bulk(ks.get_string(key, now)?),
            // MGET answers nil for a key of another type, as Redis does.
            MGet { keys } => Reply::Array(
                keys.iter()
                    .map(|k| opt_bulk(ks.get_string(k, now).ok().flatten()))
                    .collect(),
            ),
            StrLen { key } => Reply::Int(ks.get_string(key, now)?.map_or(0, <[u8]>::len) as i64),
            Exists { keys } => Reply::Int(keys.iter().filter(|k| ks.exists(k, now)).count() as i64),
            Ttl { key, millis } => Reply::Int(match ks.ttl_ms(key, now) {
                None => -2,
                Some(None) => -1,
                Some(Some(ms)) if *millis => ms as i64,
                // Redis rounds to the nearest second.
                Some(Some(ms)) => ms.saturating_add(500) as i64 / 1000,
            }),
            Type { key } => Reply::Bulk(
                ks.value_type(key, now)
                    .map_or("none", ValueType::as_str)
                    .as_bytes()
                    .to_vec(),
            ),
            Keys { pattern } => {
                Reply::Array(ks.keys(pattern, now).into_iter().map(Reply::Bulk).collect())
            }
            Scan {
                cursor,
                pattern,
                count,
                of_type,
            } => {
                let (keys, next) =
                    ks.scan_hashed(*cursor, *count, pattern.as_deref(), *of_type, now);
                Reply::Array(vec![
                    Reply::Bulk(next.to_string().into_bytes()),
                    Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
                ])
            }
            DbSize => Reply::Int(ks.len(now) as i64),
            LLen { key } => Reply::Int(ks.list(key, now)?.map_or(0, |l| l.len()) as i64),
            LRange { key, start, stop } => Reply::Array(
                ks.list_range(key, *start, *stop, now)?
                    .into_iter()
                    .map(Reply::Bulk)
                    .collect(),
            ),
            LIndex { key, index } => opt_bulk(ks.list_index(key, *index, now)?.as_deref()),
            SMembers { key } => match ks.set(key, now)? {
                Some(s) => bulks(s.iter().map(Vec::as_slice)),
                None => Reply::Array(vec![]),
            },
            SIsMember { key, member } => {
                Reply::Int(ks.set(key, now)?.is_some_and(|s| s.contains(member)) as i64)
            }
            SCard { key } => Reply::Int(ks.set(key, now)?.map_or(0, |s| s.len()) as i64),
            SRandMember { key, count } => {
                let set = ks.set(key, now)?;
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
                let members: Vec<&[u8]> = set
                    .map(|s| s.iter().map(Vec::as_slice).collect())
                    .unwrap_or_default();
                match count {
                    None if members.is_empty() => Reply::Nil,
                    None => Reply::Bulk(members[rng.random_range(0..members.len())].to_vec()),
                    Some(_) if members.is_empty() => Reply::Array(vec![]),
                    Some(n) if *n >= 0 => {
                        // Distinct members: a partial shuffle of the first n.
                        let mut pool = members;
                        let n = (*n as usize).min(pool.len());
                        for i in 0..n {
                            let j = rng.random_range(i..pool.len());
                            pool.swap(i, j);
                        }
                        bulks(pool[..n].iter().copied())
                    }
                    Some(n) => bulks(
                        (0..n.unsigned_abs()).map(|_| members[rng.random_range(0..members.len())]),
                    ),
                }
            }
            ZScore { key, member } => match ks.zset(key, now)?.and_then(|z| z.score(member)) {
                Some(s) => Reply::Bulk(format_score(s).into_bytes()),
                None => Reply::Nil,
            },
            ZCard { key } => Reply::Int(ks.zset(key, now)?.map_or(0, |z| z.len()) as i64),
            ZCount { key, min, max } => Reply::Int(
                ks.zset(key, now)?
                    .map_or(0, |z| z.range_by_score(*min, *max, false).len())
                    as i64,
            ),
            ZRange {
                key,
                by,
                rev,
                limit,
                with_scores,
            } => {
                let Some(z) = ks.zset(key, now)? else {
                    return Ok(Reply::Array(vec![]));
                };
                let mut items: Vec<(&[u8], f64)> = match by {
                    ZRangeBy::Rank { start, stop } => match resolve_range(*start, *stop, z.len()) {
                        Some((s, e)) => z.iter(*rev).skip(s).take(e - s + 1).collect(),
                        None => vec![],
                    },
                    ZRangeBy::Score { min, max } => z
                        .iter(*rev)
                        .filter(|(_, s)| score_in(*s, *min, *max))
                        .collect(),
                };
                if let Some((offset, count)) = limit {
                    if *offset < 0 {
                        items.clear();
                    } else {
                        let rest = items.split_off((*offset as usize).min(items.len()));
                        items = if *count < 0 {
                            rest
                        } else {
                            rest.into_iter().take(*count as usize).collect()
                        };
                    }
                }
                let mut out = Vec::with_capacity(items.len() * (1 + *with_scores as usize));
                for (m, s) in items {
                    out.push(Reply::Bulk(m.to_vec()));
                    if *with_scores {
                        out.push(Reply::Bulk(format_score(s).into_bytes()));
                    }
                }
                Reply::Array(out)
            }
            ZRank { key, member, rev } => {
                match ks.zset(key, now)?.and_then(|z| z.rank(member, *rev)) {
                    Some(r) => Reply::Int(r as i64),
                    None => Reply::Nil,
                }
            }
            HGet { key, field } => opt_bulk(
                ks.hash(key, now)?
                    .and_then(|h| h.get(field))
                    .map(Vec::as_slice),
            ),
            HMGet { key, fields } => {
                let h = ks.hash(key, now)?;
                Reply::Array(
                    fields
                        .iter()
                        .map(|f| opt_bulk(h.and_then(|h| h.get(f)).map(Vec::as_slice)))
                        .collect(),
                )
            }
            HGetAll { key } => match ks.hash(key, now)? {
                Some(h) => bulks(h.iter().flat_map(|(f, v)| [f.as_slice(), v.as_slice()])),
                None => Reply::Array(vec![]),
            },
            HExists { key, field } => {
                Reply::Int(ks.hash(key, now)?.is_some_and(|h| h.contains_key(field)) as i64)
            }
            HKeys { key } => match ks.hash(key, now)? {
                Some(h) => bulks(h.keys().map(Vec::as_slice)),
                None => Reply::Array(vec![]),
            },
            HVals { key } => match ks.hash(key, now)? {
                Some(h) => bulks(h.values().map(Vec::as_slice)),
                None => Reply::Array(vec![]),
            },
            HLen { key } => Reply::Int(ks.hash(key, now)?.map_or(0, |h| h.len()) as i64),
        })
    }
}
