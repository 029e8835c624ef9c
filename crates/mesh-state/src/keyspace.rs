//! The keyspace: keys to values, each with an optional expiry, and the reads.
//!
//! Writes go through [`StateMachine::apply`](crate::StateMachine::apply), which
//! first removes every key whose expiry is at or before the command's stamp (so all
//! replicas expire the same keys at the same log position). Reads take the reader's
//! `now_ms` and treat a key past its expiry as absent, so a read between two log
//! entries never sees a dead key either.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::glob;
use crate::value::{HashFields, Value, ValueType, ZSet};

/// A stored value and its expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// What the key holds.
    pub value: Value,
    /// Unix milliseconds; `None`: no expiry.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    fn live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// Every key of the mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<(Vec<u8>, Entry)>", into = "Vec<(Vec<u8>, Entry)>")]
pub struct Keyspace {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// (expiry, key) for every key with an expiry, to expire in time order.
    expiries: BTreeSet<(u64, Vec<u8>)>,
    /// (hash, key) of every key, for `SCAN`'s numeric cursors (derived, not
    /// serialized: rebuilt when a snapshot loads).
    by_hash: BTreeSet<(u64, Vec<u8>)>,
}

/// FNV-1a, 64 bits: a hash fixed by its definition (not by a Rust version),
/// so every replica and every release computes the same value.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A key's place in `SCAN` order: never 0, which is the cursor that starts
/// and ends a scan.
fn scan_hash(key: &[u8]) -> u64 {
    fnv1a(key).max(1)
}

impl From<Vec<(Vec<u8>, Entry)>> for Keyspace {
    fn from(items: Vec<(Vec<u8>, Entry)>) -> Self {
        let mut k = Keyspace::default();
        for (key, e) in items {
            k.put(key, e);
        }
        k
    }
}
impl From<Keyspace> for Vec<(Vec<u8>, Entry)> {
    fn from(k: Keyspace) -> Self {
        k.entries.into_iter().collect()
    }
}

fn wrong_type() -> StateError {
    StateError::WrongType
}

/// Resolves Redis's inclusive, possibly negative `start..=stop` over `len` items.
pub fn resolve_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { len + i } else { i };
    let (s, e) = (norm(start).max(0), norm(stop).min(len - 1));
    if len == 0 || s > e || s >= len {
        None
    } else {
        Some((s as usize, e as usize))
    }
}

impl Keyspace {
    // ----- storage (crate-internal; the machine keeps the index right) ----------

    pub(crate) fn put(&mut self, key: Vec<u8>, entry: Entry) {
        if let Some(old) = self.entries.get(&key)
            && let Some(at) = old.expires_at_ms
        {
            self.expiries.remove(&(at, key.clone()));
        }
        if let Some(at) = entry.expires_at_ms {
            self.expiries.insert((at, key.clone()));
        }
        if !self.entries.contains_key(&key) {
            self.by_hash.insert((scan_hash(&key), key.clone()));
        }
        self.entries.insert(key, entry);
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        if let Some(at) = e.expires_at_ms {
            self.expiries.remove(&(at, key.to_vec()));
        }
        self.by_hash.remove(&(scan_hash(key), key.to_vec()));
        Some(e)
    }

    pub(crate) fn set_expiry(&mut self, key: &[u8], at: Option<u64>) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        if let Some(old) = e.expires_at_ms {
            self.expiries.remove(&(old, key.to_vec()));
        }
        e.expires_at_ms = at;
        if let Some(at) = at {
            self.expiries.insert((at, key.to_vec()));
        }
        true
    }

    /// Removes every key expired at `now_ms`; returns how many.
    pub(crate) fn expire_due(&mut self, now_ms: u64) -> usize {
        let due: Vec<Vec<u8>> = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, k)| k.clone())
            .collect();
        for key in &due {
            self.remove(key);
        }
        due.len()
    }

    /// The container at `key` for a write: `Ok(None)` if absent and not `create`d,
    /// `WrongType` if the key holds another type. A created container has no
    /// expiry; the caller drops it again if it stays empty ([`Keyspace::drop_if_empty`]).
    fn typed_mut<T>(
        &mut self,
        key: &[u8],
        now: u64,
        create: Option<fn() -> Value>,
        pick: impl FnOnce(&mut Value) -> Option<&mut T>,
    ) -> Result<Option<&mut T>, StateError> {
        if self.get(key, now).is_none() {
            let Some(make) = create else { return Ok(None) };
            self.put(
                key.to_vec(),
                Entry {
                    value: make(),
                    expires_at_ms: None,
                },
            );
        }
        let entry = self
            .entries
            .get_mut(key)
            .expect("present: checked or just inserted");
        pick(&mut entry.value)
            .map(Some)
            .ok_or(StateError::WrongType)
    }

    pub(crate) fn list_mut(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
    ) -> Result<Option<&mut VecDeque<Vec<u8>>>, StateError> {
        let make: fn() -> Value = || Value::List(VecDeque::new());
        self.typed_mut(key, now, create.then_some(make), |v| {
            if let Value::List(l) = v {
                Some(l)
            } else {
                None
            }
        })
    }

    pub(crate) fn set_mut(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
    ) -> Result<Option<&mut BTreeSet<Vec<u8>>>, StateError> {
        let make: fn() -> Value = || Value::Set(BTreeSet::new());
        self.typed_mut(key, now, create.then_some(make), |v| {
            if let Value::Set(s) = v { Some(s) } else { None }
        })
    }

    pub(crate) fn zset_mut(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
    ) -> Result<Option<&mut ZSet>, StateError> {
        let make: fn() -> Value = || Value::ZSet(ZSet::default());
        self.typed_mut(key, now, create.then_some(make), |v| {
            if let Value::ZSet(z) = v {
                Some(z)
            } else {
                None
            }
        })
    }

    pub(crate) fn hash_mut(
        &mut self,
        key: &[u8],
        now: u64,
        create: bool,
    ) -> Result<Option<&mut HashFields>, StateError> {
        let make: fn() -> Value = || Value::Hash(HashFields::new());
        self.typed_mut(key, now, create.then_some(make), |v| {
            if let Value::Hash(h) = v {
                Some(h)
            } else {
                None
            }
        })
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.expiries.clear();
        self.by_hash.clear();
    }

    /// Removes `key` if its container became empty.
    pub(crate) fn drop_if_empty(&mut self, key: &[u8]) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.value.is_empty_container())
        {
            self.remove(key);
        }
    }

    // ----- reads --------------------------------------------------------------

    /// The entry at `key` if it exists and has not expired at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.entries.get(key).filter(|e| e.live(now_ms))
    }

    /// Whether `key` holds a live value at `now_ms`.
    pub fn exists(&self, key: &[u8], now_ms: u64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// The type of `key`'s live value (`TYPE`); `None` if it has none.
    pub fn value_type(&self, key: &[u8], now_ms: u64) -> Option<ValueType> {
        self.get(key, now_ms).map(|e| e.value.value_type())
    }

    /// Remaining time to live: `None` no such key, `Some(None)` no expiry.
    pub fn ttl_ms(&self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        self.get(key, now_ms)
            .map(|e| e.expires_at_ms.map(|at| at - now_ms))
    }

    /// Live keys (keys already past their expiry but not yet swept are not counted).
    pub fn len(&self, now_ms: u64) -> usize {
        let expired = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .count();
        self.entries.len() - expired
    }

    /// Whether no key is live at `now_ms`.
    pub fn is_empty(&self, now_ms: u64) -> bool {
        self.len(now_ms) == 0
    }

    /// `key`'s string value; `Ok(None)` if absent, `WrongType` if it holds another type.
    pub fn get_string(&self, key: &[u8], now_ms: u64) -> Result<Option<&[u8]>, StateError> {
        match self.get(key, now_ms).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type()),
        }
    }

    /// `key`'s list; `Ok(None)` if absent, `WrongType` if it holds another type.
    pub fn list(&self, key: &[u8], now_ms: u64) -> Result<Option<&VecDeque<Vec<u8>>>, StateError> {
        match self.get(key, now_ms).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::List(l)) => Ok(Some(l)),
            Some(_) => Err(wrong_type()),
        }
    }

    /// `LRANGE key start stop`.
    pub fn list_range(
        &self,
        key: &[u8],
        start: i64,
        stop: i64,
        now_ms: u64,
    ) -> Result<Vec<Vec<u8>>, StateError> {
        let Some(l) = self.list(key, now_ms)? else {
            return Ok(vec![]);
        };
        Ok(match resolve_range(start, stop, l.len()) {
            Some((s, e)) => l.range(s..=e).cloned().collect(),
            None => vec![],
        })
    }

    /// `LINDEX key index`.
    pub fn list_index(
        &self,
        key: &[u8],
        index: i64,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let Some(l) = self.list(key, now_ms)? else {
            return Ok(None);
        };
        let i = if index < 0 {
            l.len() as i64 + index
        } else {
            index
        };
        Ok(if i < 0 {
            None
        } else {
            l.get(i as usize).cloned()
        })
    }

    /// `key`'s set; `Ok(None)` if absent, `WrongType` if it holds another type.
    pub fn set(&self, key: &[u8], now_ms: u64) -> Result<Option<&BTreeSet<Vec<u8>>>, StateError> {
        match self.get(key, now_ms).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Set(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type()),
        }
    }

    /// `key`'s sorted set; `Ok(None)` if absent, `WrongType` if it holds another type.
    pub fn zset(&self, key: &[u8], now_ms: u64) -> Result<Option<&ZSet>, StateError> {
        match self.get(key, now_ms).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::ZSet(z)) => Ok(Some(z)),
            Some(_) => Err(wrong_type()),
        }
    }

    /// `key`'s hash fields; `Ok(None)` if absent, `WrongType` if it holds another type.
    pub fn hash(&self, key: &[u8], now_ms: u64) -> Result<Option<&HashFields>, StateError> {
        match self.get(key, now_ms).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Hash(h)) => Ok(Some(h)),
            Some(_) => Err(wrong_type()),
        }
    }

    /// `KEYS pattern`, in key order.
    pub fn keys(&self, pattern: &[u8], now_ms: u64) -> Vec<Vec<u8>> {
        self.entries
            .iter()
            .filter(|(k, e)| e.live(now_ms) && glob::matches(pattern, k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Live keys that start with `prefix` and match `pattern`, in key order, at
    /// most `limit`; and whether more would have matched. Visits only the keys
    /// under the prefix (a range of the ordered map), not the whole keyspace.
    pub fn keys_with_prefix(
        &self,
        prefix: &[u8],
        pattern: &[u8],
        limit: usize,
        now_ms: u64,
    ) -> (Vec<Vec<u8>>, bool) {
        let mut out = Vec::new();
        for (k, e) in self
            .entries
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if e.live(now_ms) && glob::matches(pattern, k) {
                if out.len() == limit {
                    return (out, true);
                }
                out.push(k.clone());
            }
        }
        (out, false)
    }

    /// `SCAN`: up to `count` keys after `cursor` (exclusive; empty = from the
    /// start), matching `pattern` and `of_type` if given. Returns the keys and the
    /// cursor to continue from (`None` when the scan is complete). Keys present for
    /// the whole scan are returned exactly once, as Redis guarantees.
    pub fn scan(
        &self,
        cursor: &[u8],
        count: usize,
        pattern: Option<&[u8]>,
        of_type: Option<ValueType>,
        now_ms: u64,
    ) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        use std::ops::Bound;
        let start = if cursor.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(cursor.to_vec())
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut visited = 0usize;
        for (k, e) in self.entries.range((start, Bound::Unbounded)) {
            visited += 1;
            last = Some(k.clone());
            if e.live(now_ms)
                && pattern.is_none_or(|p| glob::matches(p, k))
                && of_type.is_none_or(|t| e.value.value_type() == t)
            {
                out.push(k.clone());
            }
            // COUNT bounds the work per call, as in Redis, not the number returned.
            if visited >= count.max(1) {
                break;
            }
        }
        let more = last.as_ref().is_some_and(|l| {
            self.entries
                .range::<Vec<u8>, _>((Bound::Excluded(l.clone()), Bound::Unbounded))
                .next()
                .is_some()
        });
        (out, if more { last } else { None })
    }

    /// `SCAN` with Redis's numeric cursors: keys are visited in the order of a
    /// fixed hash of the key, and the cursor is the hash to continue from (0
    /// starts and ends a scan). Stateless, so a scan may continue on another
    /// node or connection; a key present for the whole scan is returned
    /// exactly once (keys sharing a hash are visited in the same call), and
    /// `count` bounds the keys visited per call, not those returned.
    pub fn scan_hashed(
        &self,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        of_type: Option<ValueType>,
        now_ms: u64,
    ) -> (Vec<Vec<u8>>, u64) {
        use std::ops::Bound;
        let start = (cursor, Vec::new());
        let mut out = Vec::new();
        let mut last_hash = None;
        for (visited, (h, k)) in self
            .by_hash
            .range((Bound::Included(start), Bound::Unbounded))
            .enumerate()
        {
            if visited >= count.max(1) && last_hash != Some(*h) {
                return (out, *h);
            }
            last_hash = Some(*h);
            let Some(e) = self.entries.get(k) else {
                continue;
            };
            if e.live(now_ms)
                && pattern.is_none_or(|p| glob::matches(p, k))
                && of_type.is_none_or(|t| e.value.value_type() == t)
            {
                out.push(k.clone());
            }
        }
        (out, 0)
    }

    /// A digest of `key`'s live entry (value and expiry), or of its absence,
    /// for `WATCH`: a transaction runs only if every watched key's digest is
    /// unchanged when the log applies it.
    pub fn watch_digest(&self, key: &[u8], now_ms: u64) -> u64 {
        match self.get(key, now_ms) {
            None => 0,
            Some(e) => {
                fnv1a(&postcard::to_allocvec(e).expect("encoding to a Vec cannot fail")).max(1)
            }
        }
    }
}
