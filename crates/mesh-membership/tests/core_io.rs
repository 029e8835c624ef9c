//! One input to the membership core, exact outputs out.

use std::net::SocketAddr;

use mesh_membership::wire::Envelope;
use mesh_membership::{
    Channel, CoreTimer, EventKind, Membership, MembershipConfig, Output, PeerId,
};
use mesh_proto::{Profile, SoftState};

fn peer(name: &str, port: u16) -> PeerId {
    PeerId {
        name: name.into(),
        addr: addr(port),
        generation: 1,
    }
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn core(name: &str, port: u16, seeds: Vec<SocketAddr>) -> Membership<PeerId> {
    Membership::new(
        peer(name, port),
        MembershipConfig::new(Profile::Lan.timings(), seeds),
        42,
        0,
        SoftState::default(),
    )
}

fn outputs(c: &mut Membership<PeerId>) -> Vec<Output<PeerId>> {
    c.drain_outputs().collect()
}

#[test]
fn start_contacts_every_seed_and_schedules_a_retry() {
    let mut c = core("a", 1, vec![addr(2), addr(3)]);
    c.start(0);
    let out = outputs(&mut c);
    let joins: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                channel: Channel::Datagram,
                bytes,
            } => Some((*to, Envelope::<PeerId>::decode(bytes).unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(
        joins,
        vec![
            (addr(2), Envelope::Join { from: peer("a", 1) }),
            (addr(3), Envelope::Join { from: peer("a", 1) })
        ]
    );
    let retry = out.iter().find_map(|o| match o {
        Output::Timer {
            after_ms,
            timer: CoreTimer::JoinRetry { attempt, .. },
        } => Some((*after_ms, *attempt)),
        _ => None,
    });
    assert_eq!(
        retry,
        Some((Profile::Lan.timings().join_retry_initial_ms, 1))
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Timer {
            timer: CoreTimer::AntiEntropy,
            ..
        }
    )));
}

#[test]
fn unanswered_join_backs_off_and_says_so() {
    let mut c = core("a", 1, vec![addr(2)]);
    c.start(0);
    outputs(&mut c);
    c.handle_timer(
        250_000,
        CoreTimer::JoinRetry {
            epoch: 1,
            attempt: 1,
        },
    );
    let out = outputs(&mut c);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { to, .. } if *to == addr(2)))
    );
    let ev = out.iter().find_map(|o| match o {
        Output::Event(e) => Some(e.kind.clone()),
        _ => None,
    });
    assert_eq!(
        ev,
        Some(EventKind::JoinRetry {
            attempt: 1,
            next_in_ms: 500
        })
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Timer {
            after_ms: 500,
            timer: CoreTimer::JoinRetry { attempt: 2, .. }
        }
    )));
    // A retry timer from an older epoch does nothing.
    c.handle_timer(
        300_000,
        CoreTimer::JoinRetry {
            epoch: 0,
            attempt: 5,
        },
    );
    assert!(outputs(&mut c).is_empty());
}

#[test]
fn a_join_is_welcomed_and_the_joiner_becomes_a_member() {
    let mut seed = core("s", 2, vec![]);
    seed.start(0);
    outputs(&mut seed);
    let join = Envelope::Join { from: peer("j", 9) }.encode();
    seed.handle_datagram(1_000, &join).unwrap();
    let out = outputs(&mut seed);
    let welcome = out.iter().find_map(|o| match o {
        Output::Send { to, bytes, .. } if *to == addr(9) => Envelope::<PeerId>::decode(bytes).ok(),
        _ => None,
    });
    assert_eq!(welcome, Some(Envelope::Welcome { from: peer("s", 2) }));
    let kinds: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::Event(e) = o {
                Some((e.subject.clone(), e.kind.clone()))
            } else {
                None
            }
        })
        .collect();
    assert!(
        kinds.contains(&("j".into(), EventKind::Joined)),
        "{kinds:?}"
    );
    assert!(seed.is_connected());
    assert_eq!(seed.reachability(), (2, 2));
}

#[test]
fn garbage_is_dropped_with_a_reason_and_changes_nothing() {
    let mut c = core("a", 1, vec![]);
    c.start(0);
    outputs(&mut c);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "truncated"),
        (b"GET / HTTP/1.1\r\n".to_vec(), "bad_magic"),
        (vec![b'M', 7, 1, 0], "bad_version"),
        (vec![b'M', 1, 200, 0], "unknown_kind"),
        (vec![b'M', 1, 2, 0xff, 0xff, 0xff], "bad_body"),
        (vec![b'M', 1, 1, 0xde, 0xad, 0xbe, 0xef], "bad_swim"),
        (vec![b'M'; 5000], "oversized"),
    ];
    for (bytes, reason) in cases {
        let err = c.handle_datagram(10, &bytes).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
        assert!(outputs(&mut c).is_empty(), "{reason} produced outputs");
    }
    assert_eq!(c.members().len(), 1);
}

#[test]
fn a_suspicion_notice_is_refuted_at_once() {
    let mut c = core("a", 1, vec![]);
    c.start(0);
    c.bootstrap(0, vec![peer("b", 2)]);
    outputs(&mut c);
    let inc_before = c.members()[0].incarnation;
    let notice = Envelope::SuspectNotice {
        from: peer("b", 2),
        incarnation: inc_before,
    }
    .encode();
    c.handle_datagram(5_000, &notice).unwrap();
    assert_eq!(c.members()[0].incarnation, inc_before + 1);
    // The answer goes straight back to the suspecter.
    let out = outputs(&mut c);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { to, .. } if *to == addr(2)))
    );
    // A stale notice (old incarnation) is still answered, but changes nothing.
    let stale = Envelope::SuspectNotice {
        from: peer("b", 2),
        incarnation: inc_before,
    }
    .encode();
    c.handle_datagram(6_000, &stale).unwrap();
    assert_eq!(c.members()[0].incarnation, inc_before + 1);
    assert!(
        outputs(&mut c)
            .iter()
            .any(|o| matches!(o, Output::Send { to, .. } if *to == addr(2)))
    );
}

#[test]
fn soft_state_changes_bump_the_version_and_small_load_jitter_does_not() {
    let mut c = core("a", 1, vec![]);
    let v0 = c.local_soft().version;
    c.set_soft_state(
        0,
        SoftState {
            caps: vec!["gpu".into()],
            ..Default::default()
        },
    );
    assert_eq!(c.local_soft().version, v0 + 1);
    let load = |cpu| mesh_proto::Load {
        cpu_percent: Some(cpu),
        running: 0,
        queued: 0,
        slots: 0,
    };
    c.update_load(1, load(10.0));
    assert_eq!(c.local_soft().version, v0 + 2);
    c.update_load(2, load(12.0));
    assert_eq!(
        c.local_soft().version,
        v0 + 2,
        "a 2-point CPU move is not gossiped"
    );
    c.update_load(3, load(16.0));
    assert_eq!(c.local_soft().version, v0 + 3);
    assert_eq!(c.local_soft().caps, vec!["gpu".to_string()]);
    // Free slots appearing (an agent waiting for work) are gossiped: the
    // leader's rebalancing needs them.
    c.update_load(
        4,
        mesh_proto::Load {
            slots: 4,
            ..load(16.0)
        },
    );
    assert_eq!(c.local_soft().version, v0 + 4);
    assert_eq!(c.local_soft().load.slots, 4);
}

#[test]
fn leaving_marks_self_left_and_says_goodbye() {
    let mut c = core("a", 1, vec![]);
    c.start(0);
    c.bootstrap(0, vec![peer("b", 2), peer("c", 3)]);
    outputs(&mut c);
    c.leave(1_000);
    assert!(c.has_left());
    assert_eq!(c.members()[0].state, mesh_membership::MemberState::Left);
    let sends = outputs(&mut c)
        .iter()
        .filter(|o| matches!(o, Output::Send { .. }))
        .count();
    assert!(sends >= 1, "the leave is gossiped");
}

fn stream_to(out: &[Output<PeerId>], port: u16) -> Vec<u8> {
    out.iter()
        .find_map(|o| match o {
            Output::Send {
                to,
                channel: Channel::Stream,
                bytes,
            } if *to == addr(port) => Some(bytes.clone()),
            _ => None,
        })
        .expect("a stream message to that peer")
}

#[test]
fn anti_entropy_push_pull_repairs_what_gossip_missed() {
    let mut a = core("a", 1, vec![]);
    let mut b = core("b", 2, vec![]);
    a.bootstrap(0, vec![peer("b", 2)]);
    b.bootstrap(0, vec![peer("a", 1)]);
    // a holds c's soft state (version 5); b never heard of it.
    let c_soft = SoftState {
        version: 5,
        caps: vec!["gpu".into()],
        ..Default::default()
    };
    let push = Envelope::SyncPush {
        from: peer("x", 7),
        entries: vec![(peer("c", 3), c_soft.clone())],
    }
    .encode();
    a.handle_stream(1, &push).unwrap();
    assert_eq!(a.soft_version(&"c".to_string()), Some(5));
    outputs(&mut a);
    outputs(&mut b);

    // 1. a's timer: its digest goes to its only member, b, over a stream.
    a.handle_timer(10, CoreTimer::AntiEntropy);
    let digest = stream_to(&outputs(&mut a), 2);
    assert!(matches!(
        Envelope::<PeerId>::decode(&digest).unwrap(),
        Envelope::SyncDigest { .. }
    ));
    // 2. b answers with what a lacks (b's own state) and asks for c.
    b.handle_stream(11, &digest).unwrap();
    let reply = stream_to(&outputs(&mut b), 1);
    match Envelope::<PeerId>::decode(&reply).unwrap() {
        Envelope::SyncReply { entries, want, .. } => {
            assert_eq!(want, vec!["a".to_string(), "c".to_string()], "b lacks both");
            assert_eq!(
                entries
                    .iter()
                    .map(|(i, _)| i.name.clone())
                    .collect::<Vec<_>>(),
                vec!["b"]
            );
        }
        other => panic!("expected a reply, got {other:?}"),
    }
    // 3. a applies b's state and pushes c's.
    a.handle_stream(12, &reply).unwrap();
    assert!(a.soft_version(&"b".to_string()).is_some());
    let push = stream_to(&outputs(&mut a), 2);
    b.handle_stream(13, &push).unwrap();
    assert_eq!(b.soft_version(&"c".to_string()), Some(5));
    assert_eq!(
        b.members().len(),
        2,
        "soft state alone does not make c a member"
    );
}

#[test]
fn anti_entropy_messages_on_the_datagram_path_are_refused() {
    let mut a = core("a", 1, vec![]);
    let digest = Envelope::SyncDigest {
        from: peer("b", 2),
        digest: vec![],
    }
    .encode();
    assert_eq!(
        a.handle_datagram(1, &digest).unwrap_err().reason(),
        "wrong_channel"
    );
    let join = Envelope::Join { from: peer("b", 2) }.encode();
    assert_eq!(
        a.handle_stream(1, &join).unwrap_err().reason(),
        "wrong_channel"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes, on either path, with or without a valid header: an error or
        /// nothing, never a panic.
        #[test]
        fn arbitrary_input_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..1500), kind in 0u8..9, framed in any::<bool>(), stream in any::<bool>()) {
            let mut c = core("a", 1, vec![]);
            c.start(0);
            c.bootstrap(0, vec![peer("b", 2)]);
            if framed && bytes.len() >= 3 {
                bytes[0] = b'M';
                bytes[1] = 1;
                bytes[2] = kind;
            }
            let _ = if stream { c.handle_stream(5, &bytes) } else { c.handle_datagram(5, &bytes) };
            let _ = c.members();
        }
    }
}
