//! The state machine, one command at a time, against Redis's documented semantics.

use mesh_state::command::*;
use mesh_state::{StateError, StateMachine, ValueType};

struct M {
    sm: StateMachine,
    index: u64,
    now: u64,
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

impl M {
    fn new() -> Self {
        M {
            sm: StateMachine::new(),
            index: 0,
            now: 1_000_000,
        }
    }
    fn at(&mut self, now: u64) -> &mut Self {
        self.now = now;
        self
    }
    fn run(&mut self, cmd: KvCmd) -> Result<Reply, StateError> {
        self.index += 1;
        let s = Stamped {
            now_ms: self.now,
            seed: self.index,
            request_id: None,
            command: Command::Kv(cmd),
        };
        self.sm.apply(self.index, &s)
    }
    fn ok(&mut self, cmd: KvCmd) -> Reply {
        self.run(cmd).expect("command succeeds")
    }
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.sm
            .keyspace
            .get_string(key.as_bytes(), self.now)
            .unwrap()
            .map(<[u8]>::to_vec)
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

#[test]
fn set_conditions_get_and_keepttl() {
    let mut m = M::new();
    assert_eq!(m.ok(set("k", "1")), Reply::Ok);
    let nx = KvCmd::Set {
        key: b("k"),
        value: b("2"),
        cond: SetCond::IfAbsent,
        get: false,
        expiry: Expiry::Never,
    };
    assert_eq!(m.ok(nx), Reply::Nil);
    let xx_get = KvCmd::Set {
        key: b("k"),
        value: b("3"),
        cond: SetCond::IfPresent,
        get: true,
        expiry: Expiry::At(1_005_000),
    };
    assert_eq!(m.ok(xx_get), Reply::Bulk(b("1")));
    let keep = KvCmd::Set {
        key: b("k"),
        value: b("4"),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::Keep,
    };
    m.ok(keep);
    assert_eq!(m.sm.keyspace.ttl_ms(b"k", m.now), Some(Some(5_000)));
    m.ok(set("k", "5"));
    assert_eq!(
        m.sm.keyspace.ttl_ms(b"k", m.now),
        Some(None),
        "a plain SET clears the TTL"
    );
    let xx_missing = KvCmd::Set {
        key: b("nope"),
        value: b("x"),
        cond: SetCond::IfPresent,
        get: false,
        expiry: Expiry::Never,
    };
    assert_eq!(m.ok(xx_missing), Reply::Nil);
    assert_eq!(m.get("nope"), None);
}

#[test]
fn ttl_expires_at_the_same_log_position_everywhere() {
    let mut m = M::new();
    let ex = KvCmd::Set {
        key: b("lease"),
        value: b("a"),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::At(1_010_000),
    };
    m.ok(ex);
    // A read before the stamp sees it; a read after does not, even before any write.
    assert!(m.sm.keyspace.exists(b"lease", 1_009_999));
    assert!(!m.sm.keyspace.exists(b"lease", 1_010_000));
    // The key is physically removed by the first command stamped at or after the expiry.
    m.at(1_010_000);
    m.ok(set("other", "x"));
    assert_eq!(
        m.sm.keyspace.len(0),
        1,
        "only 'other' is left, whatever the reader's clock"
    );
    // A stamp from a leader with a slower clock does not bring it back.
    m.at(1_000_000);
    m.ok(set("third", "y"));
    assert!(!m.sm.keyspace.exists(b"lease", 0));
    assert_eq!(m.sm.clock_ms, 1_010_000);
}

#[test]
fn expire_persist_and_expiry_in_the_past() {
    let mut m = M::new();
    m.ok(set("k", "v"));
    assert_eq!(
        m.ok(KvCmd::Expire {
            key: b("k"),
            at_ms: Some(1_000_500)
        }),
        Reply::Int(1)
    );
    assert_eq!(
        m.ok(KvCmd::Expire {
            key: b("k"),
            at_ms: None
        }),
        Reply::Int(1)
    );
    assert_eq!(
        m.ok(KvCmd::Expire {
            key: b("k"),
            at_ms: None
        }),
        Reply::Int(0),
        "nothing to persist"
    );
    assert_eq!(
        m.ok(KvCmd::Expire {
            key: b("k"),
            at_ms: Some(999)
        }),
        Reply::Int(1)
    );
    assert_eq!(m.get("k"), None, "an expiry in the past deletes");
    assert_eq!(
        m.ok(KvCmd::Expire {
            key: b("k"),
            at_ms: Some(2_000_000)
        }),
        Reply::Int(0)
    );
    assert_eq!(
        m.run(KvCmd::Expire {
            key: b("k"),
            at_ms: Some(u64::MAX)
        }),
        Err(StateError::BadExpiry)
    );
}

#[test]
fn counters_and_their_errors() {
    let mut m = M::new();
    assert_eq!(m.ok(KvCmd::IncrBy { key: b("n"), by: 5 }), Reply::Int(5));
    assert_eq!(
        m.ok(KvCmd::IncrBy {
            key: b("n"),
            by: -7
        }),
        Reply::Int(-2)
    );
    m.ok(set("s", "abc"));
    assert_eq!(
        m.run(KvCmd::IncrBy { key: b("s"), by: 1 }),
        Err(StateError::NotInteger)
    );
    m.ok(set("big", &i64::MAX.to_string()));
    assert_eq!(
        m.run(KvCmd::IncrBy {
            key: b("big"),
            by: 1
        }),
        Err(StateError::Overflow)
    );
    assert_eq!(
        m.get("big"),
        Some(i64::MAX.to_string().into_bytes()),
        "an error changes nothing"
    );
    m.ok(set("sp", " 1"));
    assert_eq!(
        m.run(KvCmd::IncrBy {
            key: b("sp"),
            by: 1
        }),
        Err(StateError::NotInteger)
    );
    assert_eq!(
        m.ok(KvCmd::Append {
            key: b("s"),
            value: b("def")
        }),
        Reply::Int(6)
    );
    assert_eq!(
        m.ok(KvCmd::GetDel { key: b("s") }),
        Reply::Bulk(b("abcdef"))
    );
    assert_eq!(m.ok(KvCmd::GetDel { key: b("s") }), Reply::Nil);
}

#[test]
fn compare_and_set() {
    let mut m = M::new();
    let cas = |exp: Option<&str>, new: &str| KvCmd::Cas {
        key: b("c"),
        expected: exp.map(b),
        new: b(new),
        expiry: Expiry::Never,
    };
    assert_eq!(
        m.ok(cas(Some("x"), "1")),
        Reply::Int(0),
        "absent is not 'x'"
    );
    assert_eq!(m.ok(cas(None, "1")), Reply::Int(1), "create if absent");
    assert_eq!(m.ok(cas(None, "2")), Reply::Int(0));
    assert_eq!(m.ok(cas(Some("1"), "2")), Reply::Int(1));
    assert_eq!(m.get("c"), Some(b("2")));
    m.ok(KvCmd::SAdd {
        key: b("set"),
        members: vec![b("a")],
    });
    let wrong = KvCmd::Cas {
        key: b("set"),
        expected: None,
        new: b("x"),
        expiry: Expiry::Never,
    };
    assert_eq!(m.run(wrong), Err(StateError::WrongType));
}

#[test]
fn wrong_type_everywhere() {
    let mut m = M::new();
    m.ok(set("s", "v"));
    for cmd in [
        KvCmd::Push {
            key: b("s"),
            values: vec![b("x")],
            front: true,
            only_if_exists: false,
        },
        KvCmd::SAdd {
            key: b("s"),
            members: vec![b("x")],
        },
        KvCmd::ZAdd {
            key: b("s"),
            items: vec![(1.0, b("x"))],
            flags: ZAddFlags::default(),
        },
        KvCmd::HSet {
            key: b("s"),
            pairs: vec![(b("f"), b("v"))],
        },
        KvCmd::Pop {
            key: b("s"),
            front: true,
            count: None,
        },
    ] {
        assert_eq!(m.run(cmd), Err(StateError::WrongType));
    }
    assert_eq!(
        m.sm.keyspace.value_type(b"s", m.now),
        Some(ValueType::String)
    );
    assert_eq!(m.get("s"), Some(b("v")));
}

#[test]
fn lists_as_queues() {
    let mut m = M::new();
    let push = |k: &str, vs: &[&str], front: bool| KvCmd::Push {
        key: b(k),
        values: vs.iter().map(|v| b(v)).collect(),
        front,
        only_if_exists: false,
    };
    assert_eq!(m.ok(push("q", &["a", "b", "c"], true)), Reply::Int(3));
    assert_eq!(
        m.sm.keyspace.list_range(b"q", 0, -1, m.now).unwrap(),
        vec![b("c"), b("b"), b("a")]
    );
    assert_eq!(
        m.ok(KvCmd::Pop {
            key: b("q"),
            front: false,
            count: None
        }),
        Reply::Bulk(b("a"))
    );
    assert_eq!(
        m.ok(KvCmd::Pop {
            key: b("q"),
            front: true,
            count: Some(5)
        }),
        Reply::Array(vec![Reply::Bulk(b("c")), Reply::Bulk(b("b"))])
    );
    assert!(
        !m.sm.keyspace.exists(b"q", m.now),
        "an emptied list is deleted"
    );
    let pushx = KvCmd::Push {
        key: b("q"),
        values: vec![b("x")],
        front: true,
        only_if_exists: true,
    };
    assert_eq!(m.ok(pushx), Reply::Int(0));
    m.ok(push("l", &["x", "y", "x", "z", "x"], false));
    assert_eq!(
        m.ok(KvCmd::LRem {
            key: b("l"),
            count: -2,
            value: b("x")
        }),
        Reply::Int(2)
    );
    assert_eq!(
        m.sm.keyspace.list_range(b"l", 0, -1, m.now).unwrap(),
        vec![b("x"), b("y"), b("z")]
    );
    assert_eq!(
        m.sm.keyspace.list_index(b"l", -1, m.now).unwrap(),
        Some(b("z"))
    );
    let mv = KvCmd::LMove {
        src: b("l"),
        dst: b("done"),
        from_front: true,
        to_front: false,
    };
    assert_eq!(m.ok(mv), Reply::Bulk(b("x")));
    assert_eq!(
        m.sm.keyspace.list_range(b"done", 0, -1, m.now).unwrap(),
        vec![b("x")]
    );
    m.ok(set("str", "v"));
    let bad = KvCmd::LMove {
        src: b("l"),
        dst: b("str"),
        from_front: true,
        to_front: true,
    };
    assert_eq!(m.run(bad), Err(StateError::WrongType));
    assert_eq!(
        m.sm.keyspace.list_range(b"l", 0, -1, m.now).unwrap(),
        vec![b("y"), b("z")],
        "nothing popped"
    );
}

#[test]
fn sets_and_a_deterministic_spop() {
    let run = |seed_base: u64| {
        let mut m = M::new();
        m.index = seed_base;
        m.ok(KvCmd::SAdd {
            key: b("peers"),
            members: (0..20).map(|i| b(&format!("n{i}"))).collect(),
        });
        let popped = m.ok(KvCmd::SPop {
            key: b("peers"),
            count: Some(3),
        });
        (popped, m.sm.digest())
    };
    assert_eq!(run(0), run(0), "same stamps, same choice on every replica");
    let mut m = M::new();
    assert_eq!(
        m.ok(KvCmd::SAdd {
            key: b("s"),
            members: vec![b("a"), b("b"), b("a")]
        }),
        Reply::Int(2)
    );
    assert_eq!(
        m.ok(KvCmd::SRem {
            key: b("s"),
            members: vec![b("a"), b("zz")]
        }),
        Reply::Int(1)
    );
    assert!(
        m.sm.keyspace
            .set(b"s", m.now)
            .unwrap()
            .unwrap()
            .contains(&b("b"))
    );
}

#[test]
fn sorted_set_flags() {
    let mut m = M::new();
    let zadd = |items: &[(f64, &str)], flags: ZAddFlags| KvCmd::ZAdd {
        key: b("z"),
        items: items.iter().map(|(s, k)| (*s, b(k))).collect(),
        flags,
    };
    assert_eq!(
        m.ok(zadd(&[(1.0, "a"), (2.0, "b")], ZAddFlags::default())),
        Reply::Int(2)
    );
    assert_eq!(
        m.ok(zadd(
            &[(5.0, "a"), (3.0, "c")],
            ZAddFlags {
                nx: true,
                ..Default::default()
            }
        )),
        Reply::Int(1)
    );
    assert_eq!(
        m.sm.keyspace
            .zset(b"z", m.now)
            .unwrap()
            .unwrap()
            .score(b"a"),
        Some(1.0)
    );
    assert_eq!(
        m.ok(zadd(
            &[(0.5, "a"), (9.0, "d")],
            ZAddFlags {
                xx: true,
                ch: true,
                ..Default::default()
            }
        )),
        Reply::Int(1)
    );
    assert_eq!(
        m.ok(zadd(
            &[(0.1, "a")],
            ZAddFlags {
                gt: true,
                ch: true,
                ..Default::default()
            }
        )),
        Reply::Int(0),
        "GT refuses a lower score"
    );
    assert_eq!(
        m.ok(zadd(
            &[(2.5, "a")],
            ZAddFlags {
                incr: true,
                ..Default::default()
            }
        )),
        Reply::Bulk(b("3"))
    );
    assert_eq!(
        m.ok(KvCmd::ZIncrBy {
            key: b("z"),
            by: -1.5,
            member: b("b")
        }),
        Reply::Bulk(b("0.5"))
    );
    assert!(
        m.run(zadd(
            &[(1.0, "a")],
            ZAddFlags {
                nx: true,
                xx: true,
                ..Default::default()
            }
        ))
        .is_err()
    );
    assert_eq!(
        m.run(zadd(&[(f64::NAN, "a")], ZAddFlags::default())),
        Err(StateError::NotFloat)
    );
    let z = m.sm.keyspace.zset(b"z", m.now).unwrap().unwrap();
    let order: Vec<Vec<u8>> = z.iter(false).map(|(m, _)| m.to_vec()).collect();
    assert_eq!(order, vec![b("b"), b("a"), b("c")]);
    // a and c tie at 3: the highest in Redis's order is the greater member, c.
    assert_eq!(
        m.ok(KvCmd::ZPop {
            key: b("z"),
            count: 1,
            highest: true
        }),
        Reply::Array(vec![Reply::Bulk(b("c")), Reply::Bulk(b("3"))])
    );
    // inf + -inf is NaN: refused, nothing changes.
    m.ok(zadd(&[(f64::INFINITY, "inf")], ZAddFlags::default()));
    let before = m.sm.keyspace.clone();
    assert_eq!(
        m.run(KvCmd::ZIncrBy {
            key: b("z"),
            by: f64::NEG_INFINITY,
            member: b("inf")
        }),
        Err(StateError::NanScore)
    );
    assert_eq!(m.sm.keyspace, before);
}

#[test]
fn hashes() {
    let mut m = M::new();
    let hset = KvCmd::HSet {
        key: b("h"),
        pairs: vec![(b("a"), b("1")), (b("b"), b("x"))],
    };
    assert_eq!(m.ok(hset), Reply::Int(2));
    assert_eq!(
        m.ok(KvCmd::HIncrBy {
            key: b("h"),
            field: b("a"),
            by: 41
        }),
        Reply::Int(42)
    );
    assert_eq!(
        m.run(KvCmd::HIncrBy {
            key: b("h"),
            field: b("b"),
            by: 1
        }),
        Err(StateError::HashNotInteger)
    );
    assert_eq!(
        m.ok(KvCmd::HDel {
            key: b("h"),
            fields: vec![b("a"), b("b"), b("c")]
        }),
        Reply::Int(2)
    );
    assert!(!m.sm.keyspace.exists(b"h", m.now));
}

#[test]
fn limits_refuse_and_change_nothing() {
    let mut m = M::new();
    m.ok(set("k", "v"));
    let before = m.sm.keyspace.clone();
    let long_key = "k".repeat(mesh_state::limits::MAX_KEY_BYTES + 1);
    assert!(matches!(
        m.run(set(&long_key, "v")),
        Err(StateError::TooLarge { .. })
    ));
    let big = vec![0u8; mesh_state::limits::MAX_VALUE_BYTES + 1];
    let big_set = KvCmd::Set {
        key: b("k"),
        value: big,
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::Never,
    };
    assert!(matches!(m.run(big_set), Err(StateError::TooLarge { .. })));
    let bad_ttl = KvCmd::Set {
        key: b("k"),
        value: b("v2"),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::At(u64::MAX),
    };
    assert_eq!(m.run(bad_ttl), Err(StateError::BadExpiry));
    assert_eq!(
        m.sm.keyspace, before,
        "the keyspace is untouched (the log index still advances)"
    );
    assert_eq!(StateError::BadExpiry.code(), "bad_expiry");
}

#[test]
fn a_retried_request_applies_once() {
    let mut sm = StateMachine::new();
    let stamped = |i: u64| Stamped {
        now_ms: 1000 + i,
        seed: i,
        request_id: Some(RequestId("client-7:42".into())),
        command: Command::Kv(KvCmd::IncrBy { key: b("n"), by: 1 }),
    };
    assert_eq!(sm.apply(1, &stamped(1)), Ok(Reply::Int(1)));
    assert_eq!(
        sm.apply(2, &stamped(2)),
        Ok(Reply::Int(1)),
        "same id, first reply, no second increment"
    );
    assert_eq!(sm.keyspace.get_string(b"n", 0).unwrap(), Some(&b"1"[..]));
    // After the dedup window the id is forgotten.
    let late = Stamped {
        now_ms: 1000 + mesh_state::limits::DEDUP_WINDOW_MS + 10,
        ..stamped(3)
    };
    assert_eq!(sm.apply(3, &late), Ok(Reply::Int(2)));
}

#[test]
fn request_ids_past_the_cap_are_forgotten_oldest_first() {
    use mesh_state::limits::DEDUP_MAX_ENTRIES;
    let mut sm = StateMachine::new();
    let incr = |i: usize, id: &str| Stamped {
        now_ms: 1000,
        seed: i as u64,
        request_id: Some(RequestId(id.into())),
        command: Command::Kv(KvCmd::IncrBy { key: b("n"), by: 1 }),
    };
    for i in 0..=DEDUP_MAX_ENTRIES {
        sm.apply(i as u64 + 1, &incr(i, &format!("r{i}"))).unwrap();
    }
    let n = DEDUP_MAX_ENTRIES as u64 + 1;
    // The newest is still remembered: its retry changes nothing.
    let last = format!("r{DEDUP_MAX_ENTRIES}");
    assert_eq!(sm.apply(n + 1, &incr(0, &last)), Ok(Reply::Int(n as i64)));
    // The oldest was forgotten when the cap was passed: its retry applies again.
    assert_eq!(
        sm.apply(n + 2, &incr(0, "r0")),
        Ok(Reply::Int(n as i64 + 1))
    );
}

#[test]
fn multi_applies_in_order_with_per_command_errors() {
    let mut sm = StateMachine::new();
    let cmds = vec![
        set("a", "1"),
        KvCmd::IncrBy { key: b("a"), by: 1 },
        KvCmd::SAdd {
            key: b("a"),
            members: vec![b("x")],
        },
        set("b", "2"),
    ];
    let s = Stamped {
        now_ms: 5,
        seed: 0,
        request_id: None,
        command: Command::Multi(cmds),
    };
    assert_eq!(
        sm.apply(1, &s),
        Ok(Reply::Array(vec![
            Reply::Ok,
            Reply::Int(2),
            Reply::Error(StateError::WrongType),
            Reply::Ok
        ]))
    );
    assert_eq!(sm.keyspace.get_string(b"b", 5).unwrap(), Some(&b"2"[..]));
}

#[test]
fn keys_and_scan() {
    let mut m = M::new();
    for k in ["task:1", "task:2", "agent:1", "task:3"] {
        m.ok(set(k, "v"));
    }
    m.ok(KvCmd::SAdd {
        key: b("task:set"),
        members: vec![b("x")],
    });
    assert_eq!(
        m.sm.keyspace.keys(b"task:?", m.now),
        vec![b("task:1"), b("task:2"), b("task:3")]
    );
    let mut cursor = Vec::new();
    let mut seen = Vec::new();
    loop {
        let (keys, next) =
            m.sm.keyspace
                .scan(&cursor, 2, Some(b"task:*"), Some(ValueType::String), m.now);
        seen.extend(keys);
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    assert_eq!(seen, vec![b("task:1"), b("task:2"), b("task:3")]);
    // A prefix listing visits only its range, matches the glob, stops at the limit.
    let ks = &m.sm.keyspace;
    assert_eq!(
        ks.keys_with_prefix(b"task:", b"task:*", 10, m.now),
        (
            vec![b("task:1"), b("task:2"), b("task:3"), b("task:set")],
            false
        )
    );
    assert_eq!(
        ks.keys_with_prefix(b"task:", b"task:?", 2, m.now),
        (vec![b("task:1"), b("task:2")], true)
    );
    assert_eq!(
        ks.keys_with_prefix(b"agent:", b"*", 10, m.now),
        (vec![b("agent:1")], false)
    );
    assert_eq!(
        ks.keys_with_prefix(b"zzz", b"*", 10, m.now),
        (vec![], false)
    );
}

#[test]
fn a_relative_expiry_counts_from_the_leaders_stamp() {
    let mut sm = StateMachine::new();
    let s = Stamped {
        now_ms: 5_000,
        seed: 0,
        request_id: None,
        command: Command::Kv(KvCmd::Set {
            key: b("k"),
            value: b("v"),
            cond: SetCond::Always,
            get: false,
            expiry: Expiry::In(1_000),
        }),
    };
    assert_eq!(sm.apply(1, &s), Ok(Reply::Ok));
    assert_eq!(sm.keyspace.ttl_ms(b"k", 5_000), Some(Some(1_000)));
    assert!(
        sm.keyspace.get(b"k", 6_000).is_none(),
        "gone at stamp + ttl"
    );
}
