//! Keyspace reads (`mesh_state::read`), transactions with `WATCH`
//! (`Command::Exec`), `PopFirst` (what a blocking pop does) and `SCAN`'s
//! numeric cursors, against Redis's documented semantics.

use std::collections::BTreeSet;
use std::ops::Bound;

use mesh_state::command::*;
use mesh_state::read::{ReadCmd, ZRangeBy};
use mesh_state::{StateError, StateMachine, ValueType};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(b(s))
}

fn arr(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|s| bulk(s)).collect())
}

struct M {
    sm: StateMachine,
    index: u64,
    now: u64,
}

impl M {
    fn new() -> Self {
        M {
            sm: StateMachine::new(),
            index: 0,
            now: 1_000_000,
        }
    }
    fn apply(&mut self, command: Command) -> Result<Reply, StateError> {
        self.index += 1;
        let s = Stamped {
            now_ms: self.now,
            seed: self.index,
            request_id: None,
            command,
        };
        self.sm.apply(self.index, &s)
    }
    fn w(&mut self, cmd: KvCmd) -> Reply {
        self.apply(Command::Kv(cmd)).expect("write succeeds")
    }
    fn r(&self, cmd: ReadCmd) -> Result<Reply, StateError> {
        cmd.eval(&self.sm.keyspace, self.now, 7)
    }
    fn ok(&self, cmd: ReadCmd) -> Reply {
        self.r(cmd).expect("read succeeds")
    }
}

fn set(key: &str, v: &str) -> KvCmd {
    KvCmd::Set {
        key: b(key),
        value: b(v),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::Never,
    }
}

fn rpush(key: &str, vals: &[&str]) -> KvCmd {
    KvCmd::Push {
        key: b(key),
        values: vals.iter().map(|v| b(v)).collect(),
        front: false,
        only_if_exists: false,
    }
}

#[test]
fn string_and_key_reads() {
    let mut m = M::new();
    m.w(set("a", "1"));
    m.w(rpush("l", &["x"]));
    m.w(KvCmd::Set {
        key: b("t"),
        value: b("v"),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::In(1_499),
    });
    assert_eq!(m.ok(ReadCmd::Get { key: b("a") }), bulk("1"));
    assert_eq!(m.ok(ReadCmd::Get { key: b("zz") }), Reply::Nil);
    assert_eq!(
        m.r(ReadCmd::Get { key: b("l") }),
        Err(StateError::WrongType)
    );
    // MGET: nil for missing keys and for keys of another type.
    assert_eq!(
        m.ok(ReadCmd::MGet {
            keys: vec![b("a"), b("l"), b("zz")]
        }),
        Reply::Array(vec![bulk("1"), Reply::Nil, Reply::Nil])
    );
    assert_eq!(m.ok(ReadCmd::StrLen { key: b("a") }), Reply::Int(1));
    // EXISTS counts repeats.
    assert_eq!(
        m.ok(ReadCmd::Exists {
            keys: vec![b("a"), b("a"), b("zz")]
        }),
        Reply::Int(2)
    );
    let ttl = |key: &str, millis| ReadCmd::Ttl {
        key: b(key),
        millis,
    };
    assert_eq!(m.ok(ttl("zz", false)), Reply::Int(-2));
    assert_eq!(m.ok(ttl("a", false)), Reply::Int(-1));
    assert_eq!(m.ok(ttl("t", true)), Reply::Int(1_499));
    assert_eq!(
        m.ok(ttl("t", false)),
        Reply::Int(1),
        "rounded to the nearest second"
    );
    assert_eq!(m.ok(ReadCmd::Type { key: b("l") }), bulk("list"));
    assert_eq!(m.ok(ReadCmd::Type { key: b("zz") }), bulk("none"));
    assert_eq!(m.ok(ReadCmd::DbSize), Reply::Int(3));
    m.now += 1_499;
    assert_eq!(
        m.ok(ReadCmd::DbSize),
        Reply::Int(2),
        "expired keys are gone"
    );
    assert_eq!(m.ok(ReadCmd::Keys { pattern: b("*") }), arr(&["a", "l"]));
}

#[test]
fn list_set_zset_and_hash_reads() {
    let mut m = M::new();
    m.w(rpush("l", &["a", "b", "c"]));
    assert_eq!(m.ok(ReadCmd::LLen { key: b("l") }), Reply::Int(3));
    assert_eq!(
        m.ok(ReadCmd::LRange {
            key: b("l"),
            start: -2,
            stop: 100
        }),
        arr(&["b", "c"])
    );
    assert_eq!(
        m.ok(ReadCmd::LIndex {
            key: b("l"),
            index: -1
        }),
        bulk("c")
    );
    m.w(KvCmd::SAdd {
        key: b("s"),
        members: vec![b("y"), b("x")],
    });
    assert_eq!(m.ok(ReadCmd::SMembers { key: b("s") }), arr(&["x", "y"]));
    assert_eq!(
        m.ok(ReadCmd::SIsMember {
            key: b("s"),
            member: b("x")
        }),
        Reply::Int(1)
    );
    assert_eq!(m.ok(ReadCmd::SCard { key: b("s") }), Reply::Int(2));
    let rand = |count| ReadCmd::SRandMember { key: b("s"), count };
    assert!(matches!(m.ok(rand(None)), Reply::Bulk(_)));
    let Reply::Array(distinct) = m.ok(rand(Some(5))) else {
        panic!()
    };
    assert_eq!(distinct.len(), 2, "a positive count gives distinct members");
    let Reply::Array(repeats) = m.ok(rand(Some(-5))) else {
        panic!()
    };
    assert_eq!(repeats.len(), 5, "a negative count may repeat");
    m.w(KvCmd::ZAdd {
        key: b("z"),
        items: vec![(1.0, b("a")), (2.5, b("b")), (3.0, b("c")), (3.0, b("d"))],
        flags: ZAddFlags::default(),
    });
    assert_eq!(
        m.ok(ReadCmd::ZScore {
            key: b("z"),
            member: b("b")
        }),
        bulk("2.5")
    );
    let range = |by, rev, limit, with_scores| ReadCmd::ZRange {
        key: b("z"),
        by,
        rev,
        limit,
        with_scores,
    };
    assert_eq!(
        m.ok(range(
            ZRangeBy::Rank { start: 0, stop: 1 },
            false,
            None,
            true
        )),
        arr(&["a", "1", "b", "2.5"])
    );
    assert_eq!(
        m.ok(range(
            ZRangeBy::Rank { start: 0, stop: 0 },
            true,
            None,
            false
        )),
        arr(&["d"])
    );
    let by_score = ZRangeBy::Score {
        min: Bound::Excluded(1.0),
        max: Bound::Unbounded,
    };
    assert_eq!(
        m.ok(range(by_score.clone(), false, Some((1, 1)), false)),
        arr(&["c"])
    );
    assert_eq!(
        m.ok(range(by_score.clone(), true, Some((0, -1)), false)),
        arr(&["d", "c", "b"])
    );
    assert_eq!(
        m.ok(ReadCmd::ZCount {
            key: b("z"),
            min: Bound::Included(2.5),
            max: Bound::Included(3.0)
        }),
        Reply::Int(3)
    );
    assert_eq!(
        m.ok(ReadCmd::ZRank {
            key: b("z"),
            member: b("a"),
            rev: true
        }),
        Reply::Int(3)
    );
    m.w(KvCmd::HSet {
        key: b("h"),
        pairs: vec![(b("f"), b("1")), (b("g"), b("2"))],
    });
    assert_eq!(
        m.ok(ReadCmd::HGetAll { key: b("h") }),
        arr(&["f", "1", "g", "2"])
    );
    assert_eq!(
        m.ok(ReadCmd::HMGet {
            key: b("h"),
            fields: vec![b("g"), b("nope")]
        }),
        Reply::Array(vec![bulk("2"), Reply::Nil])
    );
    assert_eq!(m.ok(ReadCmd::HKeys { key: b("h") }), arr(&["f", "g"]));
    assert_eq!(m.ok(ReadCmd::HVals { key: b("h") }), arr(&["1", "2"]));
    assert_eq!(m.ok(ReadCmd::HLen { key: b("h") }), Reply::Int(2));
    assert_eq!(
        m.r(ReadCmd::HLen { key: b("z") }),
        Err(StateError::WrongType)
    );
}

#[test]
fn scan_cursors_visit_every_key_once_across_changes() {
    let mut m = M::new();
    for i in 0..500 {
        m.w(set(&format!("k{i}"), "v"));
    }
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (keys, next) = m.sm.keyspace.scan_hashed(cursor, 10, None, None, m.now);
        seen.extend(keys);
        calls += 1;
        // Keys come and go during the scan: the ones present throughout
        // must all be returned, exactly once.
        m.w(set(&format!("new{calls}"), "v"));
        m.w(KvCmd::Del {
            keys: vec![b(&format!("k{}", 499 - calls))],
        });
        if next == 0 {
            break;
        }
        assert!(next > cursor, "the cursor moves forward");
        cursor = next;
    }
    assert!(calls >= 50, "count bounds each call: {calls} calls");
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no key twice");
    for i in 0..(499 - calls) {
        assert!(unique.contains(&b(&format!("k{i}"))), "k{i} missing");
    }
    // MATCH and TYPE filter what a call returns.
    m.w(rpush("list", &["x"]));
    let (mut all, mut cursor) = (Vec::new(), 0);
    loop {
        let (keys, next) =
            m.sm.keyspace
                .scan_hashed(cursor, 1000, Some(b"l*"), Some(ValueType::List), m.now);
        all.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(all, vec![b("list")]);
}

#[test]
fn transactions_read_and_write_as_one_unless_a_watched_key_changed() {
    let mut m = M::new();
    m.w(set("n", "1"));
    let digest = m.sm.keyspace.watch_digest(b"n", m.now);
    let absent = m.sm.keyspace.watch_digest(b"other", m.now);
    let tx = |watch: Vec<(Vec<u8>, u64)>| Command::Exec {
        watch,
        ops: vec![
            TxOp::Read(ReadCmd::Get { key: b("n") }),
            TxOp::Write(KvCmd::IncrBy { key: b("n"), by: 1 }),
            TxOp::Write(rpush("n", &["x"])),
            TxOp::Read(ReadCmd::Get { key: b("n") }),
        ],
    };
    let reply = m
        .apply(tx(vec![(b("n"), digest), (b("other"), absent)]))
        .unwrap();
    assert_eq!(
        reply,
        Reply::Array(vec![
            bulk("1"),
            Reply::Int(2),
            Reply::Error(StateError::WrongType),
            bulk("2"),
        ]),
        "each reply in its slot, an error does not stop the rest (as in Redis)"
    );
    // n changed since the digest was taken: nothing runs.
    assert_eq!(m.apply(tx(vec![(b("n"), digest)])).unwrap(), Reply::Nil);
    assert_eq!(
        m.sm.keyspace.get_string(b"n", m.now).unwrap(),
        Some(&b"2"[..])
    );
    // A watched key that appeared, or expired, also aborts.
    m.w(set("other", "x"));
    assert_eq!(m.apply(tx(vec![(b("other"), absent)])).unwrap(), Reply::Nil);
    m.w(KvCmd::Set {
        key: b("e"),
        value: b("v"),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::In(10),
    });
    let before = m.sm.keyspace.watch_digest(b"e", m.now);
    m.now += 10;
    assert_eq!(m.apply(tx(vec![(b("e"), before)])).unwrap(), Reply::Nil);
}

#[test]
fn pop_first_takes_from_the_first_non_empty_list() {
    let mut m = M::new();
    m.w(rpush("b", &["1", "2"]));
    m.w(set("s", "x"));
    let pop = |keys: &[&str], front| KvCmd::PopFirst {
        keys: keys.iter().map(|k| b(k)).collect(),
        front,
    };
    assert_eq!(m.w(pop(&["a", "b"], false)), arr(&["b", "2"]));
    assert_eq!(m.w(pop(&["a", "b"], true)), arr(&["b", "1"]));
    assert_eq!(m.w(pop(&["a", "b"], true)), Reply::Nil, "both empty");
    assert!(
        !m.sm.keyspace.exists(b"b", m.now),
        "an emptied list is deleted"
    );
    assert_eq!(
        m.apply(Command::Kv(pop(&["s"], true))),
        Err(StateError::WrongType)
    );
}

#[test]
fn a_relative_expire_counts_from_the_stamp() {
    let mut m = M::new();
    m.w(set("k", "v"));
    let exp = |ms| KvCmd::ExpireIn { key: b("k"), ms };
    assert_eq!(m.w(exp(2_000)), Reply::Int(1));
    assert_eq!(m.sm.keyspace.ttl_ms(b"k", m.now), Some(Some(2_000)));
    assert_eq!(
        m.apply(Command::Kv(exp(i64::MAX))),
        Err(StateError::BadExpiry)
    );
    assert_eq!(
        m.sm.keyspace.ttl_ms(b"k", m.now),
        Some(Some(2_000)),
        "unchanged"
    );
    assert_eq!(m.w(exp(0)), Reply::Int(1), "zero deletes");
    assert!(!m.sm.keyspace.exists(b"k", m.now));
    assert_eq!(m.w(exp(1_000)), Reply::Int(0), "no such key");
}
