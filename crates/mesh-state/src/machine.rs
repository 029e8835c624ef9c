//! The state machine: applies stamped commands, deduplicates retried requests,
//! and produces snapshots and a digest to compare replicas.

use std::collections::{BTreeMap, BTreeSet};

use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
use serde::{Deserialize, Serialize};

use crate::agents::{self, Agent, AgentState, MAX_AGENT_CAPS};
use crate::barriers::{Barrier, BarrierSpec};
use crate::command::{
    Command, CoordCmd, Event, Expiry, KvCmd, Reply, RequestId, SetCond, Stamped, TxOp, ZAddFlags,
};
use crate::error::StateError;
use crate::keyspace::{Entry, Keyspace};
use crate::limits::*;
use crate::proposals::{
    self, DEFAULT_THRESHOLD, MAX_BODY_BYTES, MAX_REASON_BYTES, MAX_VOTERS, Proposal,
    ProposalStatus, Vote,
};
use crate::tasks::table::Ctx;
use crate::tasks::{TaskCmd, TaskTable};
use crate::value::{Score, Value};

/// The replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateMachine {
    /// Index of the last applied log entry.
    pub applied_index: u64,
    /// The newest stamp applied: reads at a replica are as of this time at least.
    pub clock_ms: u64,
    /// Every key and its value (the Redis-model data).
    pub keyspace: Keyspace,
    /// Replies to recent requests by id, with the stamp they were applied at.
    dedup: BTreeMap<RequestId, (u64, Reply)>,
    /// The same ids in the order they were applied (stamps never decrease), so
    /// forgetting the oldest is O(1) per command instead of a scan.
    dedup_order: std::collections::VecDeque<(u64, RequestId)>,
    /// Registered agents by id.
    pub agents: BTreeMap<String, Agent>,
    /// Proposals by id, open and decided.
    pub proposals: BTreeMap<String, Proposal>,
    /// (deadline, id) of open proposals, to expire them in time order.
    deadlines: BTreeSet<(u64, String)>,
    /// Barriers by id, holding and released.
    pub barriers: BTreeMap<String, Barrier>,
    /// Every task, its queues and leases.
    pub tasks: TaskTable,
}

fn check_key(key: &[u8]) -> Result<(), StateError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::TooLarge {
            what: "key".into(),
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

fn check_value(v: &[u8]) -> Result<(), StateError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(StateError::TooLarge {
            what: "value".into(),
            len: v.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

fn check_count(n: usize) -> Result<(), StateError> {
    if n > MAX_ITEMS_PER_COMMAND {
        return Err(StateError::Invalid(format!(
            "{n} items in one command (at most {MAX_ITEMS_PER_COMMAND})"
        )));
    }
    Ok(())
}

fn check_expiry(e: Expiry) -> Result<(), StateError> {
    match e {
        Expiry::At(at) | Expiry::In(at) if at > MAX_EXPIRY_MS => Err(StateError::BadExpiry),
        _ => Ok(()),
    }
}

/// Checks everything about a command that does not depend on the state, so a bad
/// command is refused before it touches anything.
pub fn validate(cmd: &KvCmd) -> Result<(), StateError> {
    for k in cmd.keys() {
        check_key(k)?;
    }
    match cmd {
        KvCmd::Set { value, expiry, .. } => {
            check_value(value)?;
            check_expiry(*expiry)
        }
        KvCmd::Cas {
            expected,
            new,
            expiry,
            ..
        } => {
            if let Some(e) = expected {
                check_value(e)?;
            }
            check_value(new)?;
            check_expiry(*expiry)
        }
        KvCmd::Append { value, .. } => check_value(value),
        KvCmd::Expire {
            at_ms: Some(at), ..
        } if *at > MAX_EXPIRY_MS => Err(StateError::BadExpiry),
        KvCmd::Del { keys } | KvCmd::PopFirst { keys, .. } => check_count(keys.len()),
        KvCmd::Push { values, .. } => {
            check_count(values.len())?;
            values.iter().try_for_each(|v| check_value(v))
        }
        KvCmd::Pop { count: Some(c), .. } | KvCmd::SPop { count: Some(c), .. } => check_count(*c),
        KvCmd::ZPop { count, .. } => check_count(*count),
        KvCmd::LRem { value, .. } => check_value(value),
        KvCmd::SAdd { members, .. } | KvCmd::SRem { members, .. } | KvCmd::ZRem { members, .. } => {
            check_count(members.len())?;
            members.iter().try_for_each(|v| check_value(v))
        }
        KvCmd::ZAdd { items, flags, .. } => {
            check_count(items.len())?;
            if flags.nx && flags.xx {
                return Err(StateError::Invalid(
                    "XX and NX options at the same time are not compatible".into(),
                ));
            }
            if (flags.gt || flags.lt) && flags.nx || flags.gt && flags.lt {
                return Err(StateError::Invalid(
                    "GT, LT, and/or NX options at the same time are not compatible".into(),
                ));
            }
            if flags.incr && items.len() != 1 {
                return Err(StateError::Invalid(
                    "INCR option supports a single increment-element pair".into(),
                ));
            }
            if items.iter().any(|(s, _)| s.is_nan()) {
                return Err(StateError::NotFloat);
            }
            items.iter().try_for_each(|(_, m)| check_value(m))
        }
        KvCmd::ZIncrBy { by, member, .. } => {
            if by.is_nan() {
                return Err(StateError::NotFloat);
            }
            check_value(member)
        }
        KvCmd::HSet { pairs, .. } => {
            if pairs.is_empty() {
                return Err(StateError::Invalid(
                    "wrong number of arguments for 'hset' command".into(),
                ));
            }
            check_count(pairs.len())?;
            pairs
                .iter()
                .try_for_each(|(f, v)| check_value(f).and_then(|_| check_value(v)))
        }
        KvCmd::HDel { fields, .. } => check_count(fields.len()),
        KvCmd::HIncrBy { field, .. } => check_value(field),
        _ => Ok(()),
    }
}

fn parse_int(bytes: &[u8]) -> Result<i64, StateError> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.is_empty() && !s.starts_with('+') && s.trim() == *s)
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(StateError::NotInteger)
}

fn not_found(what: &str, id: &str) -> StateError {
    StateError::NotFound {
        what: what.into(),
        id: id.into(),
    }
}

fn status_name(s: ProposalStatus) -> &'static str {
    match s {
        ProposalStatus::Open => "open",
        ProposalStatus::Approved => "approved",
        ProposalStatus::Rejected => "rejected",
        ProposalStatus::Expired => "expired",
    }
}

fn decided(p: &Proposal) -> Event {
    Event::ProposalDecided {
        id: p.id.clone(),
        status: p.status,
        latency_ms: p.decision_latency_ms().unwrap_or(0),
        participation: p.participation(),
    }
}

/// Redis's float formatting for replies (`ZINCRBY`, `ZADD INCR`): shortest round trip.
pub fn format_score(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    format!("{v}")
}

impl StateMachine {
    /// An empty state: the state before the first log entry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the command at log `index`. Deterministic: the same commands in the
    /// same order give the same state and replies on every replica. An error
    /// changes nothing (but the index and clock still advance: the entry is in the log).
    pub fn apply(&mut self, index: u64, stamped: &Stamped) -> Result<Reply, StateError> {
        self.apply_with_events(index, stamped, &mut Vec::new())
    }

    /// [`StateMachine::apply`], also collecting what the command caused (decisions,
    /// released barriers, agent changes) into `events`.
    pub fn apply_with_events(
        &mut self,
        index: u64,
        stamped: &Stamped,
        events: &mut Vec<Event>,
    ) -> Result<Reply, StateError> {
        debug_assert!(index > self.applied_index, "log index went backwards");
        self.applied_index = index;
        self.apply_one(stamped, events)
    }

    /// Applies a batch of commands that share one log entry at `index`, in
    /// order, as if each had its own entry. The leader batches concurrent
    /// writes this way so one log append (one fsync) carries many of them.
    pub fn apply_batch_with_events(
        &mut self,
        index: u64,
        batch: &[Stamped],
        events: &mut Vec<Event>,
    ) -> Vec<Result<Reply, StateError>> {
        debug_assert!(index > self.applied_index, "log index went backwards");
        self.applied_index = index;
        batch.iter().map(|s| self.apply_one(s, events)).collect()
    }

    fn apply_one(
        &mut self,
        stamped: &Stamped,
        events: &mut Vec<Event>,
    ) -> Result<Reply, StateError> {
        // The leader's clock never runs backwards in the log; a stale stamp
        // (a new leader with a slower clock) must not un-expire anything.
        self.clock_ms = self.clock_ms.max(stamped.now_ms);
        let now = self.clock_ms;
        self.keyspace.expire_due(now);
        self.expire_proposals(now, events);
        {
            let mut ctx = Ctx {
                now,
                index: self.applied_index,
                agents: &self.agents,
                events,
            };
            self.tasks.advance(&mut ctx);
        }
        self.forget_old_requests(now);

        if let Some(id) = &stamped.request_id {
            if id.0.len() > MAX_REQUEST_ID_BYTES {
                return Err(StateError::TooLarge {
                    what: "request id".into(),
                    len: id.0.len(),
                    max: MAX_REQUEST_ID_BYTES,
                });
            }
            if let Some((_, reply)) = self.dedup.get(id) {
                return Ok(reply.clone());
            }
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(stamped.seed);
        let result = match &stamped.command {
            Command::Tick => Ok(Reply::Ok),
            Command::Coord(cmd) => self.apply_coord(cmd, now, events),
            Command::Task(cmd) => self.apply_task(cmd, now, &mut rng, events),
            Command::Kv(cmd) => validate(cmd).and_then(|_| self.apply_kv(cmd, now, &mut rng)),
            Command::Multi(cmds) => Ok(Reply::Array(
                cmds.iter()
                    .map(
                        |c| match validate(c).and_then(|_| self.apply_kv(c, now, &mut rng)) {
                            Ok(r) => r,
                            Err(e) => Reply::Error(e),
                        },
                    )
                    .collect(),
            )),
            Command::Exec { watch, ops } => Ok(self.exec(watch, ops, now, &mut rng)),
        };
        if let (Some(id), Ok(reply)) = (&stamped.request_id, &result) {
            self.dedup.insert(id.clone(), (now, reply.clone()));
            self.dedup_order.push_back((now, id.clone()));
        }
        result
    }

    /// Forgets request ids older than the window, and the oldest past the cap.
    fn forget_old_requests(&mut self, now: u64) {
        while let Some((at, _)) = self.dedup_order.front() {
            let expired = at.saturating_add(DEDUP_WINDOW_MS) <= now;
            if !expired && self.dedup_order.len() <= DEDUP_MAX_ENTRIES {
                break;
            }
            let (_, id) = self.dedup_order.pop_front().expect("front exists");
            self.dedup.remove(&id);
        }
    }

    fn apply_kv(
        &mut self,
        cmd: &KvCmd,
        now: u64,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<Reply, StateError> {
        let ks = &mut self.keyspace;
        match cmd {
            KvCmd::Set {
                key,
                value,
                cond,
                get,
                expiry,
            } => {
                let old = ks.get(key, now).cloned();
                let old_str = match &old {
                    Some(Entry {
                        value: Value::Str(s),
                        ..
                    }) => Some(s.clone()),
                    Some(_) if *get => return Err(StateError::WrongType),
                    _ => None,
                };
                let allowed = match cond {
                    SetCond::Always => true,
                    SetCond::IfAbsent => old.is_none(),
                    SetCond::IfPresent => old.is_some(),
                };
                if allowed {
                    let expires_at_ms = match expiry {
                        Expiry::Never => None,
                        Expiry::Keep => old.as_ref().and_then(|e| e.expires_at_ms),
                        Expiry::At(at) => Some(*at),
                        Expiry::In(ms) => Some(now.saturating_add(*ms)),
                    };
                    if expires_at_ms.is_some_and(|at| at <= now) {
                        ks.remove(key);
                    } else {
                        ks.put(
                            key.clone(),
                            Entry {
                                value: Value::Str(value.clone()),
                                expires_at_ms,
                            },
                        );
                    }
                }
                Ok(match (get, allowed) {
                    (true, _) => old_str.map(Reply::Bulk).unwrap_or(Reply::Nil),
                    (false, true) => Reply::Ok,
                    (false, false) => Reply::Nil,
                })
            }
            KvCmd::Cas {
                key,
                expected,
                new,
                expiry,
            } => {
                let current = ks.get_string(key, now)?.map(<[u8]>::to_vec);
                if current != *expected {
                    return Ok(Reply::Int(0));
                }
                let expires_at_ms = match expiry {
                    Expiry::Never => None,
                    Expiry::Keep => ks.get(key, now).and_then(|e| e.expires_at_ms),
                    Expiry::At(at) => Some(*at),
                    Expiry::In(ms) => Some(now.saturating_add(*ms)),
                };
                ks.put(
                    key.clone(),
                    Entry {
                        value: Value::Str(new.clone()),
                        expires_at_ms,
                    },
                );
                Ok(Reply::Int(1))
            }
            KvCmd::IncrBy { key, by } => {
                let current = match ks.get_string(key, now)? {
                    Some(s) => parse_int(s)?,
                    None => 0,
                };
                let next = current.checked_add(*by).ok_or(StateError::Overflow)?;
                let expires_at_ms = ks.get(key, now).and_then(|e| e.expires_at_ms);
                ks.put(
                    key.clone(),
                    Entry {
                        value: Value::Str(next.to_string().into_bytes()),
                        expires_at_ms,
                    },
                );
                Ok(Reply::Int(next))
            }
            KvCmd::Append { key, value } => {
                let mut s = ks
                    .get_string(key, now)?
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                if s.len() + value.len() > MAX_VALUE_BYTES {
                    return Err(StateError::TooLarge {
                        what: "value".into(),
                        len: s.len() + value.len(),
                        max: MAX_VALUE_BYTES,
                    });
                }
                s.extend_from_slice(value);
                let len = s.len() as i64;
                let expires_at_ms = ks.get(key, now).and_then(|e| e.expires_at_ms);
                ks.put(
                    key.clone(),
                    Entry {
                        value: Value::Str(s),
                        expires_at_ms,
                    },
                );
                Ok(Reply::Int(len))
            }
            KvCmd::GetDel { key } => match ks.get_string(key, now)?.map(<[u8]>::to_vec) {
                Some(v) => {
                    ks.remove(key);
                    Ok(Reply::Bulk(v))
                }
                None => Ok(Reply::Nil),
            },
            KvCmd::Del { keys } => {
                let mut n = 0;
                for k in keys {
                    if ks.remove(k).is_some() {
                        n += 1;
                    }
                }
                Ok(Reply::Int(n))
            }
            KvCmd::Expire { key, at_ms } => {
                if !ks.exists(key, now) {
                    return Ok(Reply::Int(0));
                }
                match at_ms {
                    Some(at) if *at <= now => {
                        ks.remove(key);
                        Ok(Reply::Int(1))
                    }
                    Some(at) => Ok(Reply::Int(ks.set_expiry(key, Some(*at)) as i64)),
                    None => {
                        let had = ks.get(key, now).is_some_and(|e| e.expires_at_ms.is_some());
                        if had {
                            ks.set_expiry(key, None);
                        }
                        Ok(Reply::Int(had as i64))
                    }
                }
            }
            KvCmd::Push {
                key,
                values,
                front,
                only_if_exists,
            } => {
                let Some(l) = ks.list_mut(key, now, !*only_if_exists)? else {
                    return Ok(Reply::Int(0));
                };
                for v in values {
                    if *front {
                        l.push_front(v.clone())
                    } else {
                        l.push_back(v.clone())
                    }
                }
                let len = l.len() as i64;
                ks.drop_if_empty(key);
                Ok(Reply::Int(len))
            }
            KvCmd::Pop { key, front, count } => {
                let Some(l) = ks.list_mut(key, now, false)? else {
                    return Ok(Reply::Nil);
                };
                let n = count.unwrap_or(1);
                let mut out = Vec::new();
                while out.len() < n {
                    match if *front { l.pop_front() } else { l.pop_back() } {
                        Some(v) => out.push(v),
                        None => break,
                    }
                }
                ks.drop_if_empty(key);
                Ok(match count {
                    None => out.pop().map(Reply::Bulk).unwrap_or(Reply::Nil),
                    Some(_) => Reply::Array(out.into_iter().map(Reply::Bulk).collect()),
                })
            }
            KvCmd::LRem { key, count, value } => {
                let Some(l) = ks.list_mut(key, now, false)? else {
                    return Ok(Reply::Int(0));
                };
                let limit = if *count == 0 {
                    usize::MAX
                } else {
                    count.unsigned_abs() as usize
                };
                let mut removed = 0usize;
                if *count >= 0 {
                    let mut i = 0;
                    while i < l.len() && removed < limit {
                        if l[i] == *value {
                            l.remove(i);
                            removed += 1;
                        } else {
                            i += 1;
                        }
                    }
                } else {
                    let mut i = l.len();
                    while i > 0 && removed < limit {
                        i -= 1;
                        if l[i] == *value {
                            l.remove(i);
                            removed += 1;
                        }
                    }
                }
                ks.drop_if_empty(key);
                Ok(Reply::Int(removed as i64))
            }
            KvCmd::LMove {
                src,
                dst,
                from_front,
                to_front,
            } => {
                if ks.list(src, now)?.is_none() {
                    return Ok(Reply::Nil);
                }
                // Redis checks the destination's type before popping.
                ks.list(dst, now)?;
                let l = ks.list_mut(src, now, false)?.expect("checked above");
                let Some(v) = (if *from_front {
                    l.pop_front()
                } else {
                    l.pop_back()
                }) else {
                    return Ok(Reply::Nil);
                };
                ks.drop_if_empty(src);
                let d = ks.list_mut(dst, now, true)?.expect("created");
                if *to_front {
                    d.push_front(v.clone())
                } else {
                    d.push_back(v.clone())
                }
                Ok(Reply::Bulk(v))
            }
            KvCmd::SAdd { key, members } => {
                let s = ks.set_mut(key, now, true)?.expect("created");
                let added = members.iter().filter(|m| s.insert((*m).clone())).count();
                ks.drop_if_empty(key);
                Ok(Reply::Int(added as i64))
            }
            KvCmd::SRem { key, members } => {
                let Some(s) = ks.set_mut(key, now, false)? else {
                    return Ok(Reply::Int(0));
                };
                let removed = members.iter().filter(|m| s.remove(*m)).count();
                ks.drop_if_empty(key);
                Ok(Reply::Int(removed as i64))
            }
            KvCmd::SPop { key, count } => {
                let Some(s) = ks.set_mut(key, now, false)? else {
                    return Ok(if count.is_some() {
                        Reply::Array(vec![])
                    } else {
                        Reply::Nil
                    });
                };
                let n = count.unwrap_or(1).min(s.len());
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    // The leader's seed picks; every replica picks the same.
                    let i = rng.random_range(0..s.len());
                    let m = s.iter().nth(i).cloned().expect("index in range");
                    s.remove(&m);
                    out.push(m);
                }
                ks.drop_if_empty(key);
                Ok(match count {
                    None => out.pop().map(Reply::Bulk).unwrap_or(Reply::Nil),
                    Some(_) => Reply::Array(out.into_iter().map(Reply::Bulk).collect()),
                })
            }
            KvCmd::ZAdd { key, items, flags } => self.zadd(key, items, *flags, now),
            KvCmd::ZRem { key, members } => {
                let Some(z) = ks.zset_mut(key, now, false)? else {
                    return Ok(Reply::Int(0));
                };
                let removed = members.iter().filter(|m| z.remove(m).is_some()).count();
                ks.drop_if_empty(key);
                Ok(Reply::Int(removed as i64))
            }
            KvCmd::ZIncrBy { key, by, member } => {
                let flags = ZAddFlags {
                    incr: true,
                    ..Default::default()
                };
                self.zadd(key, &[(*by, member.clone())], flags, now)
            }
            KvCmd::ZPop {
                key,
                count,
                highest,
            } => {
                let Some(z) = ks.zset_mut(key, now, false)? else {
                    return Ok(Reply::Array(vec![]));
                };
                let popped = z.pop(*count, *highest);
                ks.drop_if_empty(key);
                Ok(Reply::Array(
                    popped
                        .into_iter()
                        .flat_map(|(m, s)| {
                            [Reply::Bulk(m), Reply::Bulk(format_score(s).into_bytes())]
                        })
                        .collect(),
                ))
            }
            KvCmd::HSet { key, pairs } => {
                let h = ks.hash_mut(key, now, true)?.expect("created");
                let added = pairs
                    .iter()
                    .filter(|(f, v)| h.insert(f.clone(), v.clone()).is_none())
                    .count();
                Ok(Reply::Int(added as i64))
            }
            KvCmd::HDel { key, fields } => {
                let Some(h) = ks.hash_mut(key, now, false)? else {
                    return Ok(Reply::Int(0));
                };
                let removed = fields.iter().filter(|f| h.remove(*f).is_some()).count();
                ks.drop_if_empty(key);
                Ok(Reply::Int(removed as i64))
            }
            KvCmd::HIncrBy { key, field, by } => {
                let current = match ks.hash(key, now)?.and_then(|h| h.get(field)) {
                    Some(v) => parse_int(v).map_err(|_| StateError::HashNotInteger)?,
                    None => 0,
                };
                let next = current.checked_add(*by).ok_or(StateError::Overflow)?;
                let h = ks.hash_mut(key, now, true)?.expect("created");
                h.insert(field.clone(), next.to_string().into_bytes());
                Ok(Reply::Int(next))
            }
            KvCmd::FlushAll => {
                ks.clear();
                Ok(Reply::Ok)
            }
            KvCmd::ExpireIn { key, ms } => {
                if !ks.exists(key, now) {
                    return Ok(Reply::Int(0));
                }
                if *ms <= 0 {
                    ks.remove(key);
                    return Ok(Reply::Int(1));
                }
                let at = now.saturating_add(*ms as u64);
                if at > MAX_EXPIRY_MS {
                    return Err(StateError::BadExpiry);
                }
                Ok(Reply::Int(ks.set_expiry(key, Some(at)) as i64))
            }
            KvCmd::PopFirst { keys, front } => {
                for key in keys {
                    let Some(l) = ks.list_mut(key, now, false)? else {
                        continue;
                    };
                    let Some(v) = (if *front { l.pop_front() } else { l.pop_back() }) else {
                        continue;
                    };
                    ks.drop_if_empty(key);
                    return Ok(Reply::Array(vec![Reply::Bulk(key.clone()), Reply::Bulk(v)]));
                }
                Ok(Reply::Nil)
            }
        }
    }

    fn expire_proposals(&mut self, now: u64, events: &mut Vec<Event>) {
        while let Some((deadline, id)) = self.deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.proposals.get_mut(&id)
                && p.status == ProposalStatus::Open
            {
                p.status = ProposalStatus::Expired;
                p.decided_at_ms = Some(deadline);
                events.push(decided(p));
            }
        }
    }

    fn apply_task(
        &mut self,
        cmd: &TaskCmd,
        now: u64,
        rng: &mut Xoshiro256PlusPlus,
        events: &mut Vec<Event>,
    ) -> Result<Reply, StateError> {
        let mut ctx = Ctx {
            now,
            index: self.applied_index,
            agents: &self.agents,
            events,
        };
        let t = &mut self.tasks;
        let reply = match cmd {
            TaskCmd::Submit { tasks } => t.submit(tasks, rng, &mut ctx),
            TaskCmd::Claim {
                agent,
                max,
                lease_ms,
                wait_ms,
                since,
            } => t.claim(agent, *max, *lease_ms, *wait_ms, *since, &mut ctx),
            TaskCmd::Renew { agent, tasks } => t.renew(agent, tasks, &mut ctx),
            TaskCmd::Finish {
                agent,
                outcomes,
                then_claim,
            } => t.finish_many(agent, outcomes, *then_claim, &mut ctx),
            TaskCmd::Cancel { id, reason } => t.cancel(id, reason, &mut ctx),
            TaskCmd::Bid {
                task,
                agent,
                resources,
            } => t.bid(task, agent, *resources, &mut ctx),
            TaskCmd::Transfer {
                task,
                to_agent,
                reason,
            } => t.transfer(task, to_agent, reason, &mut ctx),
            TaskCmd::Configure {
                default_route,
                hash_replicas,
            } => t.configure(*default_route, *hash_replicas),
            TaskCmd::Failover { agent, reason } => {
                if !ctx.agents.contains_key(agent) {
                    return Err(not_found("agent", agent));
                }
                Ok(t.failover(agent, reason, &mut ctx))
            }
        }?;
        // Agents that touch their tasks are alive.
        if let TaskCmd::Claim { agent, .. }
        | TaskCmd::Renew { agent, .. }
        | TaskCmd::Finish { agent, .. }
        | TaskCmd::Bid { agent, .. } = cmd
            && let Some(a) = self.agents.get_mut(agent)
        {
            a.last_seen_ms = now;
        }
        Ok(Reply::Task(reply))
    }

    fn apply_coord(
        &mut self,
        cmd: &CoordCmd,
        now: u64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, StateError> {
        match cmd {
            CoordCmd::RegisterAgent {
                id,
                kind,
                caps,
                node,
                public_key,
                zone,
            } => {
                agents::check_name("agent id", id)?;
                if let Some(z) = zone {
                    agents::check_name("zone", z)?;
                }
                agents::check_name("agent type", kind)?;
                agents::check_name("node", node)?;
                if caps.len() > MAX_AGENT_CAPS {
                    return Err(StateError::Invalid(format!(
                        "{} capabilities (at most {MAX_AGENT_CAPS})",
                        caps.len()
                    )));
                }
                caps.iter()
                    .try_for_each(|c| agents::check_name("capability", c))?;
                agents::check_public_key(public_key)?;
                if let Some(old) = self.agents.get(id)
                    && old.public_key != *public_key
                {
                    return Err(StateError::Conflict(format!(
                        "agent '{id}' is registered with another public key; unregister it first"
                    )));
                }
                let registered_at_ms = self
                    .agents
                    .get(id)
                    .map(|a| a.registered_at_ms)
                    .unwrap_or(now);
                self.agents.insert(
                    id.clone(),
                    Agent {
                        id: id.clone(),
                        kind: kind.clone(),
                        caps: caps.clone(),
                        node: node.clone(),
                        public_key: public_key.clone(),
                        state: AgentState::Active,
                        registered_at_ms,
                        last_seen_ms: now,
                        node_dead_at_ms: None,
                        zone: zone.clone(),
                    },
                );
                events.push(Event::AgentStateChanged {
                    id: id.clone(),
                    state: AgentState::Active,
                });
                self.check_barriers(now, events);
                self.tasks.agents_changed(&self.agents);
                Ok(Reply::Ok)
            }
            CoordCmd::SetAgentState { id, state } => {
                let agent = self.agent_mut(id)?;
                agent.last_seen_ms = now;
                if agent.state != *state {
                    agent.state = *state;
                    events.push(Event::AgentStateChanged {
                        id: id.clone(),
                        state: *state,
                    });
                    self.check_barriers(now, events);
                }
                Ok(Reply::Ok)
            }
            CoordCmd::Heartbeat { id } => {
                self.agent_mut(id)?.last_seen_ms = now;
                Ok(Reply::Ok)
            }
            CoordCmd::UnregisterAgent { id } => {
                if !self.agents.contains_key(id) {
                    return Err(not_found("agent", id));
                }
                // Its tasks move on before it is gone.
                let mut ctx = Ctx {
                    now,
                    index: self.applied_index,
                    agents: &self.agents,
                    events,
                };
                self.tasks.agents_gone(
                    std::slice::from_ref(id),
                    &format!("agent '{id}' unregistered"),
                    &mut ctx,
                );
                self.agents.remove(id);
                self.check_barriers(now, events);
                self.tasks.agents_changed(&self.agents);
                Ok(Reply::Ok)
            }
            CoordCmd::NodeDead { node } => {
                let mut marked = Vec::new();
                for a in self
                    .agents
                    .values_mut()
                    .filter(|a| a.node == *node && a.node_dead_at_ms.is_none())
                {
                    a.node_dead_at_ms = Some(now);
                    marked.push(a.id.clone());
                }
                let n = marked.len() as i64;
                let mut ctx = Ctx {
                    now,
                    index: self.applied_index,
                    agents: &self.agents,
                    events,
                };
                self.tasks
                    .agents_gone(&marked, &format!("node '{node}' confirmed dead"), &mut ctx);
                self.tasks.agents_changed(&self.agents);
                if !marked.is_empty() {
                    events.push(Event::AgentsOrphaned {
                        node: node.clone(),
                        agents: marked,
                    });
                }
                Ok(Reply::Int(n))
            }
            CoordCmd::Propose {
                id,
                body,
                proposer,
                voters,
                threshold,
                deadline_ms,
            } => {
                agents::check_name("proposal id", id)?;
                if self.proposals.contains_key(id) {
                    return Err(StateError::Conflict(format!("proposal '{id}' exists")));
                }
                if body.len() > MAX_BODY_BYTES {
                    return Err(StateError::TooLarge {
                        what: "proposal body".into(),
                        len: body.len(),
                        max: MAX_BODY_BYTES,
                    });
                }
                let threshold = threshold.unwrap_or(DEFAULT_THRESHOLD);
                if !(threshold > 0.0 && threshold <= 1.0) {
                    return Err(StateError::Invalid(format!(
                        "threshold {threshold} is not in (0, 1]"
                    )));
                }
                if *deadline_ms <= now || *deadline_ms > MAX_EXPIRY_MS {
                    return Err(StateError::Invalid(
                        "the deadline must be in the future".into(),
                    ));
                }
                let voters: Vec<String> = match voters {
                    Some(list) => {
                        let mut v = list.clone();
                        v.sort();
                        v.dedup();
                        if let Some(unknown) = v.iter().find(|a| !self.agents.contains_key(*a)) {
                            return Err(not_found("agent", unknown));
                        }
                        v
                    }
                    None => self.agents.keys().cloned().collect(),
                };
                if voters.is_empty() {
                    return Err(StateError::Invalid(
                        "a proposal needs at least one eligible voter".into(),
                    ));
                }
                if voters.len() > MAX_VOTERS {
                    return Err(StateError::Invalid(format!(
                        "{} voters (at most {MAX_VOTERS})",
                        voters.len()
                    )));
                }
                self.deadlines.insert((*deadline_ms, id.clone()));
                self.proposals.insert(
                    id.clone(),
                    Proposal {
                        id: id.clone(),
                        body: body.clone(),
                        proposer: proposer.clone(),
                        voters,
                        threshold,
                        created_at_ms: now,
                        deadline_ms: *deadline_ms,
                        votes: BTreeMap::new(),
                        status: ProposalStatus::Open,
                        decided_at_ms: None,
                    },
                );
                Ok(Reply::Ok)
            }
            CoordCmd::Vote {
                proposal_id,
                agent_id,
                approve,
                reason,
                seq,
                signature,
            } => {
                if let Some(r) = reason
                    && r.len() > MAX_REASON_BYTES
                {
                    return Err(StateError::TooLarge {
                        what: "reason".into(),
                        len: r.len(),
                        max: MAX_REASON_BYTES,
                    });
                }
                let agent = self
                    .agents
                    .get(agent_id)
                    .ok_or_else(|| not_found("agent", agent_id))?;
                let message = proposals::vote_signing_bytes(
                    proposal_id,
                    agent_id,
                    *approve,
                    reason.as_deref(),
                    *seq,
                );
                proposals::verify_vote(&agent.public_key, &message, signature)?;
                let p = self
                    .proposals
                    .get_mut(proposal_id)
                    .ok_or_else(|| not_found("proposal", proposal_id))?;
                if p.status != ProposalStatus::Open {
                    return Err(StateError::Conflict(format!(
                        "proposal '{proposal_id}' is already {}",
                        status_name(p.status)
                    )));
                }
                if p.voters.binary_search(agent_id).is_err() {
                    return Err(StateError::Forbidden(format!(
                        "agent '{agent_id}' is not an eligible voter of '{proposal_id}'"
                    )));
                }
                if let Some(old) = p.votes.get(agent_id)
                    && old.seq >= *seq
                {
                    return Err(StateError::Conflict(format!(
                        "a vote with seq {} or higher is already counted (replayed or stale vote)",
                        old.seq
                    )));
                }
                p.votes.insert(
                    agent_id.clone(),
                    Vote {
                        approve: *approve,
                        reason: reason.clone(),
                        seq: *seq,
                        signature: signature.clone(),
                        at_ms: now,
                    },
                );
                if p.evaluate(now) {
                    self.deadlines.remove(&(p.deadline_ms, p.id.clone()));
                    events.push(decided(p));
                }
                Ok(Reply::Bulk(status_name(p.status).as_bytes().to_vec()))
            }
            CoordCmd::CreateBarrier { id, spec } => {
                agents::check_name("barrier id", id)?;
                if self.barriers.contains_key(id) {
                    return Err(StateError::Conflict(format!("barrier '{id}' exists")));
                }
                match spec {
                    BarrierSpec::Agents(list) if list.is_empty() => {
                        return Err(StateError::Invalid(
                            "a barrier needs at least one agent".into(),
                        ));
                    }
                    BarrierSpec::Agents(list) => list
                        .iter()
                        .try_for_each(|a| agents::check_name("agent id", a))?,
                    BarrierSpec::Group { kind, count } => {
                        agents::check_name("agent type", kind)?;
                        if *count == 0 {
                            return Err(StateError::Invalid(
                                "a group barrier needs a count of at least 1".into(),
                            ));
                        }
                    }
                }
                self.barriers.insert(
                    id.clone(),
                    Barrier {
                        id: id.clone(),
                        spec: spec.clone(),
                        created_at_ms: now,
                        released_at_ms: None,
                    },
                );
                self.check_barriers(now, events);
                Ok(Reply::Ok)
            }
            CoordCmd::DeleteBarrier { id } => {
                self.barriers
                    .remove(id)
                    .ok_or_else(|| not_found("barrier", id))?;
                Ok(Reply::Ok)
            }
        }
    }

    fn agent_mut(&mut self, id: &str) -> Result<&mut Agent, StateError> {
        self.agents
            .get_mut(id)
            .ok_or_else(|| not_found("agent", id))
    }

    /// Releases every barrier whose condition now holds.
    fn check_barriers(&mut self, now: u64, events: &mut Vec<Event>) {
        let complete = |a: &Agent| a.state == AgentState::Complete;
        for b in self
            .barriers
            .values_mut()
            .filter(|b| b.released_at_ms.is_none())
        {
            let met = match &b.spec {
                BarrierSpec::Agents(list) => list
                    .iter()
                    .all(|id| self.agents.get(id).is_some_and(complete)),
                BarrierSpec::Group { kind, count } => {
                    self.agents
                        .values()
                        .filter(|a| a.kind == *kind && complete(a))
                        .count()
                        >= *count
                }
            };
            if met {
                b.released_at_ms = Some(now);
                events.push(Event::BarrierReleased { id: b.id.clone() });
            }
        }
    }

    /// A transaction: nothing if a watched key changed, else every operation
    /// in order, each reply (or error) in its slot.
    fn exec(
        &mut self,
        watch: &[(Vec<u8>, u64)],
        ops: &[TxOp],
        now: u64,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Reply {
        if watch
            .iter()
            .any(|(key, digest)| self.keyspace.watch_digest(key, now) != *digest)
        {
            return Reply::Nil;
        }
        let replies = ops.iter().map(|op| {
            let r = match op {
                TxOp::Write(c) => validate(c).and_then(|_| self.apply_kv(c, now, rng)),
                TxOp::Read(r) => r.eval(&self.keyspace, now, rng.random()),
            };
            r.unwrap_or_else(Reply::Error)
        });
        Reply::Array(replies.collect())
    }

    fn zadd(
        &mut self,
        key: &[u8],
        items: &[(f64, Vec<u8>)],
        f: ZAddFlags,
        now: u64,
    ) -> Result<Reply, StateError> {
        let ks = &mut self.keyspace;
        if f.xx && ks.zset(key, now)?.is_none() {
            return Ok(if f.incr { Reply::Nil } else { Reply::Int(0) });
        }
        let z = ks.zset_mut(key, now, true)?.expect("created");
        let mut added = 0i64;
        let mut changed = 0i64;
        let mut incr_result = None;
        for (score, member) in items {
            let old = z.score(member);
            if (f.nx && old.is_some()) || (f.xx && old.is_none()) {
                continue;
            }
            let new = if f.incr {
                old.unwrap_or(0.0) + score
            } else {
                *score
            };
            let Some(new_score) = Score::new(new) else {
                ks.drop_if_empty(key);
                return Err(StateError::NanScore);
            };
            if let Some(o) = old
                && ((f.gt && new <= o) || (f.lt && new >= o))
            {
                continue;
            }
            z.insert(member.clone(), new_score);
            match old {
                None => added += 1,
                Some(o) if o != new => changed += 1,
                _ => {}
            }
            incr_result = Some(new_score.get());
        }
        ks.drop_if_empty(key);
        Ok(if f.incr {
            incr_result
                .map(|s| Reply::Bulk(format_score(s).into_bytes()))
                .unwrap_or(Reply::Nil)
        } else if f.ch {
            Reply::Int(added + changed)
        } else {
            Reply::Int(added)
        })
    }

    /// A snapshot of the whole state (for Raft snapshots and new replicas).
    pub fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding to a Vec cannot fail")
    }

    /// Restores a snapshot taken with [`StateMachine::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// A 64-bit digest of the state (FNV-1a over the snapshot): equal states have
    /// equal digests, so replicas can be compared cheaply.
    pub fn digest(&self) -> u64 {
        crate::keyspace::fnv1a(&self.snapshot())
    }
}
