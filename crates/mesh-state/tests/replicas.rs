//! Property tests: determinism, snapshots, and a model of strings with TTL.

use std::collections::BTreeMap;

use mesh_state::command::*;
use mesh_state::{StateError, StateMachine};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"c".to_vec()),
        Just(b"list".to_vec())
    ]
}
fn val() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"1".to_vec()),
        Just(b"x".to_vec()),
        Just(b"-5".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..4)
    ]
}
fn expiry() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        Just(Expiry::Never),
        Just(Expiry::Keep),
        (0u64..200).prop_map(|d| Expiry::At(1000 + d))
    ]
}

fn kv_cmd() -> impl Strategy<Value = KvCmd> {
    prop_oneof![
        (key(), val(), expiry(), 0u8..3, any::<bool>()).prop_map(|(key, value, expiry, c, get)| {
            KvCmd::Set {
                key,
                value,
                cond: [SetCond::Always, SetCond::IfAbsent, SetCond::IfPresent][c as usize],
                get,
                expiry,
            }
        }),
        (key(), -3i64..3).prop_map(|(key, by)| KvCmd::IncrBy { key, by }),
        (key(), val()).prop_map(|(key, value)| KvCmd::Append { key, value }),
        proptest::collection::vec(key(), 1..3).prop_map(|keys| KvCmd::Del { keys }),
        (key(), proptest::option::of(900u64..1300))
            .prop_map(|(key, at_ms)| KvCmd::Expire { key, at_ms }),
        (key(), proptest::collection::vec(val(), 1..3), any::<bool>()).prop_map(
            |(key, values, front)| KvCmd::Push {
                key,
                values,
                front,
                only_if_exists: false
            }
        ),
        (key(), any::<bool>(), proptest::option::of(0usize..3))
            .prop_map(|(key, front, count)| KvCmd::Pop { key, front, count }),
        (key(), proptest::collection::vec(val(), 1..4))
            .prop_map(|(key, members)| KvCmd::SAdd { key, members }),
        (key(), proptest::option::of(0usize..3))
            .prop_map(|(key, count)| KvCmd::SPop { key, count }),
        (
            key(),
            proptest::collection::vec((-5.0f64..5.0, val()), 1..3)
        )
            .prop_map(|(key, items)| KvCmd::ZAdd {
                key,
                items,
                flags: ZAddFlags::default()
            }),
        (key(), 1usize..3, any::<bool>()).prop_map(|(key, count, highest)| KvCmd::ZPop {
            key,
            count,
            highest
        }),
        (key(), val(), val()).prop_map(|(key, f, v)| KvCmd::HSet {
            key,
            pairs: vec![(f, v)]
        }),
        (key(), key(), any::<bool>(), any::<bool>()).prop_map(
            |(src, dst, from_front, to_front)| KvCmd::LMove {
                src,
                dst,
                from_front,
                to_front
            }
        ),
    ]
}

fn stamped_seq() -> impl Strategy<Value = Vec<Stamped>> {
    proptest::collection::vec((0u64..40, any::<u64>(), kv_cmd()), 1..60).prop_map(|cmds| {
        let mut now = 1000;
        cmds.into_iter()
            .map(|(dt, seed, cmd)| {
                now += dt;
                Stamped {
                    now_ms: now,
                    seed,
                    request_id: None,
                    command: Command::Kv(cmd),
                }
            })
            .collect()
    })
}

proptest! {
    /// Two replicas fed the same log agree on every reply and on the final state;
    /// a replica restored from a snapshot mid-way continues identically.
    #[test]
    fn replicas_and_snapshots_agree(log in stamped_seq(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(log.len());
        let mut a = StateMachine::new();
        let mut b = StateMachine::new();
        for (i, s) in log.iter().enumerate() {
            prop_assert_eq!(a.apply(i as u64 + 1, s), b.apply(i as u64 + 1, s));
            if i == cut {
                b = StateMachine::restore(&b.snapshot()).unwrap();
                prop_assert_eq!(&a, &b);
            }
        }
        prop_assert_eq!(a.digest(), b.digest());
    }

    /// Strings with TTL against a plain model: GET after any sequence of SET/DEL/EXPIRE.
    #[test]
    fn strings_with_ttl_match_a_model(ops in proptest::collection::vec((0u8..3, 0u8..3, 0u64..30, proptest::option::of(1u64..60)), 1..80)) {
        let mut sm = StateMachine::new();
        let mut model: BTreeMap<u8, (u8, Option<u64>)> = BTreeMap::new();
        let mut now = 1000u64;
        for (i, (op, k, dt, ttl)) in ops.into_iter().enumerate() {
            now += dt;
            model.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
            let key = vec![b'k', k];
            let cmd = match op {
                0 => {
                    let exp = ttl.map(|t| now + t);
                    model.insert(k, (i as u8, exp));
                    KvCmd::Set { key, value: vec![i as u8], cond: SetCond::Always, get: false, expiry: exp.map(Expiry::At).unwrap_or(Expiry::Never) }
                }
                1 => {
                    model.remove(&k);
                    KvCmd::Del { keys: vec![key] }
                }
                _ => {
                    let at = ttl.map(|t| now + t);
                    if let Some(e) = model.get_mut(&k) { e.1 = at; }
                    KvCmd::Expire { key, at_ms: at }
                }
            };
            let r = sm.apply(i as u64 + 1, &Stamped { now_ms: now, seed: 0, request_id: None, command: Command::Kv(cmd) });
            prop_assert!(r.is_ok());
            for k in 0u8..3 {
                let want = model.get(&k).filter(|(_, e)| e.is_none_or(|e| e > now)).map(|(v, _)| vec![*v]);
                let got = sm.keyspace.get_string(&[b'k', k], now).map_err(|e: StateError| TestCaseError::fail(e.to_string()))?.map(<[u8]>::to_vec);
                prop_assert_eq!(got, want);
            }
        }
    }

    /// Restoring garbage is an error, never a panic.
    #[test]
    fn restoring_garbage_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = StateMachine::restore(&bytes);
    }
}
