//! The values a key can hold, as in Redis: strings, lists, sets, sorted sets, hashes.
//!
//! Everything is ordered (`BTreeMap`, `BTreeSet`, `VecDeque`) so iteration, and so
//! every reply and snapshot, is the same on every replica.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// The type of a value, as `TYPE` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueType {
    /// A binary-safe string ([`Value::Str`]).
    String,
    /// A list ([`Value::List`]).
    List,
    /// A set ([`Value::Set`]).
    Set,
    /// A sorted set ([`Value::ZSet`]).
    ZSet,
    /// A hash ([`Value::Hash`]).
    Hash,
}

impl ValueType {
    /// Redis's name for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::List => "list",
            ValueType::Set => "set",
            ValueType::ZSet => "zset",
            ValueType::Hash => "hash",
        }
    }
}

/// A hash's fields.
pub type HashFields = BTreeMap<Vec<u8>, Vec<u8>>;

/// Whether `s` lies within `min..max` (each bound inclusive, exclusive or open).
pub fn score_in(s: f64, min: Bound<f64>, max: Bound<f64>) -> bool {
    let lo = match min {
        Bound::Included(m) => s >= m,
        Bound::Excluded(m) => s > m,
        Bound::Unbounded => true,
    };
    let hi = match max {
        Bound::Included(m) => s <= m,
        Bound::Excluded(m) => s < m,
        Bound::Unbounded => true,
    };
    lo && hi
}

/// A value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A binary-safe string (`SET`, `INCR`, `APPEND`); integers are kept as their decimal text.
    Str(Vec<u8>),
    /// A list of elements, front first (`LPUSH`, `RPOP`, `LRANGE`).
    List(VecDeque<Vec<u8>>),
    /// A set of distinct members, in byte order (`SADD`, `SPOP`).
    Set(BTreeSet<Vec<u8>>),
    /// Members with scores (`ZADD`, `ZRANGE`).
    ZSet(ZSet),
    /// Fields to values (`HSET`, `HGETALL`).
    Hash(HashFields),
}

impl Value {
    /// Which of the five types this is, as `TYPE` reports it.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Str(_) => ValueType::String,
            Value::List(_) => ValueType::List,
            Value::Set(_) => ValueType::Set,
            Value::ZSet(_) => ValueType::ZSet,
            Value::Hash(_) => ValueType::Hash,
        }
    }

    /// A container with no element is deleted, as in Redis.
    pub fn is_empty_container(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
            Value::Hash(h) => h.is_empty(),
        }
    }
}

/// A score with a total order. NaN is never stored; -0.0 is stored as 0.0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score(f64);

impl Score {
    /// The score `v`; `None` for NaN.
    pub fn new(v: f64) -> Option<Score> {
        if v.is_nan() {
            None
        } else {
            Some(Score(if v == 0.0 { 0.0 } else { v }))
        }
    }
    /// The score as a float.
    pub fn get(self) -> f64 {
        self.0
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members ordered by score, then by member bytes (Redis's order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<(Vec<u8>, Score)>", into = "Vec<(Vec<u8>, Score)>")]
pub struct ZSet {
    by_member: BTreeMap<Vec<u8>, Score>,
    by_score: BTreeSet<(Score, Vec<u8>)>,
}

impl From<Vec<(Vec<u8>, Score)>> for ZSet {
    fn from(items: Vec<(Vec<u8>, Score)>) -> Self {
        let mut z = ZSet::default();
        for (m, s) in items {
            z.insert(m, s);
        }
        z
    }
}
impl From<ZSet> for Vec<(Vec<u8>, Score)> {
    fn from(z: ZSet) -> Self {
        z.by_member.into_iter().collect()
    }
}

impl ZSet {
    /// Members in the set (`ZCARD`).
    pub fn len(&self) -> usize {
        self.by_member.len()
    }
    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.by_member.is_empty()
    }
    /// `member`'s score, if it is in the set (`ZSCORE`).
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.by_member.get(member).map(|s| s.get())
    }

    /// Sets `member`'s score; returns the old one.
    pub fn insert(&mut self, member: Vec<u8>, score: Score) -> Option<f64> {
        let old = self.by_member.insert(member.clone(), score);
        if let Some(o) = old {
            self.by_score.remove(&(o, member.clone()));
        }
        self.by_score.insert((score, member));
        old.map(Score::get)
    }

    /// Removes `member`; returns its score if it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let old = self.by_member.remove(member)?;
        self.by_score.remove(&(old, member.to_vec()));
        Some(old.get())
    }

    /// 0-based rank of `member` (from the highest score when `rev`).
    pub fn rank(&self, member: &[u8], rev: bool) -> Option<usize> {
        let score = *self.by_member.get(member)?;
        let below = self.by_score.range(..(score, member.to_vec())).count();
        Some(if rev { self.len() - 1 - below } else { below })
    }

    /// Members in rank order (reversed when `rev`), as (member, score).
    pub fn iter(&self, rev: bool) -> Box<dyn Iterator<Item = (&[u8], f64)> + '_> {
        let it = self.by_score.iter().map(|(s, m)| (m.as_slice(), s.get()));
        if rev {
            Box::new(it.rev())
        } else {
            Box::new(it)
        }
    }

    /// Members with `min <= score <= max` (bounds may be exclusive), in order.
    pub fn range_by_score(
        &self,
        min: Bound<f64>,
        max: Bound<f64>,
        rev: bool,
    ) -> Vec<(Vec<u8>, f64)> {
        self.iter(rev)
            .filter(|(_, s)| score_in(*s, min, max))
            .map(|(m, s)| (m.to_vec(), s))
            .collect()
    }

    /// Removes and returns up to `count` members with the lowest (or highest) scores.
    pub fn pop(&mut self, count: usize, highest: bool) -> Vec<(Vec<u8>, f64)> {
        let mut out = Vec::new();
        while out.len() < count {
            let next = if highest {
                self.by_score.iter().next_back()
            } else {
                self.by_score.iter().next()
            };
            let Some((s, m)) = next.cloned() else { break };
            self.by_score.remove(&(s, m.clone()));
            self.by_member.remove(&m);
            out.push((m, s.get()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: f64) -> Score {
        Score::new(v).unwrap()
    }

    #[test]
    fn zset_orders_by_score_then_member() {
        let mut z = ZSet::default();
        z.insert(b"b".to_vec(), s(1.0));
        z.insert(b"a".to_vec(), s(1.0));
        z.insert(b"c".to_vec(), s(0.5));
        let order: Vec<&[u8]> = z.iter(false).map(|(m, _)| m).collect();
        assert_eq!(order, vec![&b"c"[..], b"a", b"b"]);
        assert_eq!(z.rank(b"b", false), Some(2));
        assert_eq!(z.rank(b"b", true), Some(0));
        assert_eq!(z.insert(b"c".to_vec(), s(5.0)), Some(0.5));
        assert_eq!(z.rank(b"c", false), Some(2));
        assert_eq!(z.pop(1, true), vec![(b"c".to_vec(), 5.0)]);
        assert_eq!(z.len(), 2);
    }

    #[test]
    fn nan_is_refused_and_negative_zero_is_zero() {
        assert!(Score::new(f64::NAN).is_none());
        assert_eq!(Score::new(-0.0).unwrap(), Score::new(0.0).unwrap());
    }

    #[test]
    fn zset_survives_serialization() {
        let mut z = ZSet::default();
        z.insert(b"x".to_vec(), s(2.0));
        z.insert(b"y".to_vec(), s(-1.0));
        let bytes = postcard::to_allocvec(&z).unwrap();
        let back: ZSet = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, z);
        assert_eq!(back.rank(b"x", false), Some(1));
    }
}
