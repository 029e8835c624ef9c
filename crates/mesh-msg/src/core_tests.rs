//! One event in, exact effects out; and small meshes of messengers wired
//! together by hand (the simulator in `mesh-sim` adds loss, delay and restarts).

use super::*;

fn peers(names: &[&str]) -> Vec<PeerInfo> {
    names
        .iter()
        .map(|n| PeerInfo {
            name: n.to_string(),
            reachable: true,
        })
        .collect()
}

/// Messengers that pass wire messages to each other at once, unless cut.
struct Mesh {
    nodes: Vec<Messenger>,
    delivered: Vec<Vec<(SubId, Arc<Message>)>>,
    published: Vec<(usize, OpId, PublishReport)>,
    directs: Vec<(usize, OpId, DirectReport)>,
    cut: BTreeSet<usize>,
    now: u64,
}

impl Mesh {
    fn new(n: usize) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let list: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut nodes = Vec::new();
        for name in &names {
            let mut m = Messenger::new(name.clone(), 1, Config::default());
            m.set_peers(0, &peers(&list));
            nodes.push(m);
        }
        Self {
            nodes,
            delivered: vec![Vec::new(); n],
            published: Vec::new(),
            directs: Vec::new(),
            cut: BTreeSet::new(),
            now: 0,
        }
    }

    fn idx(name: &str) -> usize {
        name[1..].parse().unwrap()
    }

    /// Moves messages until nothing is left in flight.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let outs: Vec<Output> = self.nodes[i].drain_outputs().collect();
                for o in outs {
                    moved = true;
                    match o {
                        Output::Send { to, wire } => {
                            let j = Self::idx(&to);
                            if self.cut.contains(&i) || self.cut.contains(&j) {
                                continue;
                            }
                            let from = self.nodes[i].name().to_string();
                            let bytes = wire.encode();
                            let wire = Wire::decode(&bytes).unwrap();
                            self.nodes[j].handle(self.now, &from, wire);
                        }
                        Output::Deliver { subs, msg } => {
                            for s in subs {
                                self.delivered[i].push((s, msg.clone()));
                            }
                        }
                        Output::Published { op, report } => self.published.push((i, op, report)),
                        Output::Direct { op, report } => self.directs.push((i, op, report)),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        for n in &mut self.nodes {
            n.tick(self.now);
        }
        self.settle();
    }
}

#[test]
fn a_publish_reaches_subscribers_on_every_node_and_counts_them() {
    let mut m = Mesh::new(3);
    m.settle();
    let s0 = m.nodes[0].subscribe(0, vec!["jobs.*".into()]).unwrap();
    let s1 = m.nodes[1].subscribe(0, vec!["jobs.build".into()]).unwrap();
    let _s1b = m.nodes[1].subscribe(0, vec!["other".into()]).unwrap();
    let s2 = m.nodes[2].subscribe(0, vec!["*".into()]).unwrap();
    let op = m.nodes[0]
        .publish(0, "agent-a", "jobs.build", b"go".to_vec(), 5)
        .unwrap();
    m.settle();
    let (_, got_op, report) = m.published.pop().unwrap();
    assert_eq!(got_op, op);
    assert_eq!(report.receivers(), 3);
    assert_eq!(report.local, 1);
    assert_eq!(report.nodes.get("n1"), Some(&1));
    assert!(report.missing.is_empty() && report.unreachable.is_empty());
    assert_eq!(m.delivered[0][0].0, s0);
    assert_eq!(m.delivered[1].len(), 1);
    assert_eq!(m.delivered[1][0].0, s1);
    assert_eq!(m.delivered[2][0].0, s2);
    assert_eq!(m.delivered[2][0].1.payload, b"go");
    assert_eq!(m.delivered[2][0].1.from, "agent-a");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut m = Messenger::new("n0", 1, Config::default());
    assert!(matches!(
        m.publish(0, "a", "mesh.member.joined", vec![], 0),
        Err(MsgError::Channel(ChannelError::Reserved { .. }))
    ));
    assert!(matches!(
        m.publish(0, "a", "c", vec![0; MAX_PAYLOAD_BYTES + 1], 0),
        Err(MsgError::TooLarge { .. })
    ));
    assert!(matches!(
        m.subscribe(0, vec!["ok".into(), "bad[".into()]),
        Err(MsgError::Channel(ChannelError::UnclosedClass { .. }))
    ));
    assert_eq!(m.subscribe(0, vec![]), Err(MsgError::NoPatterns));
    assert_eq!(
        m.subscriptions().count(),
        0,
        "a refused subscription adds nothing"
    );
    assert!(matches!(
        m.send_direct(
            0,
            "a",
            Recipient::Node("n0".into()),
            &["n0".into()],
            vec![],
            0,
            0
        ),
        Err(MsgError::BadTtl { .. })
    ));
    assert_eq!(m.unsubscribe(9), Err(MsgError::NoSuchSubscription(9)));
    assert_eq!(m.stats().published, 0);
    assert_eq!(m.drain_outputs().count(), 0);
}

#[test]
fn a_direct_message_waits_in_the_mailbox_until_its_agent_listens() {
    let mut m = Mesh::new(2);
    let op = m.nodes[0]
        .send_direct(
            0,
            "boss",
            Recipient::Agent("a1".into()),
            &["n1".into()],
            b"hi".to_vec(),
            60_000,
            0,
        )
        .unwrap();
    m.settle();
    let (_, got, report) = m.directs.pop().unwrap();
    assert_eq!(got, op);
    assert_eq!(report.nodes.get("n1"), Some(&DirectStatus::Queued));
    assert!(report.is_final());
    // A wildcard subscriber does not drain an agent's mailbox ...
    m.nodes[1].subscribe(1, vec!["inbox.*".into()]).unwrap();
    m.settle();
    assert!(m.delivered[1].is_empty());
    // ... the agent's own inbox subscription does.
    let s = m.nodes[1]
        .subscribe(1, vec!["inbox.agent.a1".into()])
        .unwrap();
    m.settle();
    assert_eq!(m.delivered[1].len(), 1);
    assert_eq!(m.delivered[1][0].0, s);
    assert_eq!(m.delivered[1][0].1.payload, b"hi");
    // A second message is delivered at once, to both subscriptions.
    m.nodes[0]
        .send_direct(
            2,
            "boss",
            Recipient::Agent("a1".into()),
            &["n1".into()],
            b"again".to_vec(),
            60_000,
            0,
        )
        .unwrap();
    m.settle();
    let (_, _, report) = m.directs.pop().unwrap();
    assert_eq!(report.nodes.get("n1"), Some(&DirectStatus::Delivered(2)));
}

#[test]
fn a_briefly_unreachable_node_gets_its_message_when_back_and_an_expired_one_never() {
    let mut m = Mesh::new(2);
    m.nodes[1]
        .subscribe(0, vec!["inbox.node.n1".into()])
        .unwrap();
    m.cut.insert(1);
    let mut away = peers(&["n0", "n1"]);
    away[1].reachable = false;
    m.nodes[0].set_peers(0, &away);
    let short = m.nodes[0]
        .send_direct(
            0,
            "x",
            Recipient::Node("n1".into()),
            &["n1".into()],
            b"short".to_vec(),
            1_000,
            0,
        )
        .unwrap();
    let long = m.nodes[0]
        .send_direct(
            0,
            "x",
            Recipient::Node("n1".into()),
            &["n1".into()],
            b"long".to_vec(),
            60_000,
            0,
        )
        .unwrap();
    m.settle();
    // Nobody to wait for: both report pending at once.
    assert_eq!(m.directs.len(), 2);
    assert!(
        m.directs
            .iter()
            .all(|(_, _, r)| r.nodes["n1"] == DirectStatus::Pending)
    );
    m.tick(1_500);
    assert_eq!(
        m.nodes[0].direct_report(short).unwrap().nodes["n1"],
        DirectStatus::Expired
    );
    m.cut.clear();
    m.nodes[0].set_peers(m.now, &peers(&["n0", "n1"]));
    m.settle();
    assert_eq!(
        m.nodes[0].direct_report(long).unwrap().nodes["n1"],
        DirectStatus::Delivered(1)
    );
    let got: Vec<&[u8]> = m.delivered[1]
        .iter()
        .map(|(_, msg)| &msg.payload[..])
        .collect();
    assert_eq!(
        got,
        vec![&b"long"[..]],
        "the expired one is skipped, never delivered"
    );
}

#[test]
fn lost_messages_are_resent_in_order_and_a_restarted_receiver_gets_a_fresh_stream() {
    let mut m = Mesh::new(2);
    m.nodes[1].subscribe(0, vec!["c".into()]).unwrap();
    m.cut.insert(1); // everything lost, but membership still says reachable
    for k in 0..5u8 {
        m.nodes[0].publish(0, "p", "c", vec![k], 0).unwrap();
    }
    m.settle();
    m.cut.clear();
    m.tick(600); // past the retransmission timeout
    let got: Vec<u8> = m.delivered[1]
        .iter()
        .map(|(_, msg)| msg.payload[0])
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    // n1 restarts (epoch 2): n0's stream to epoch 1 is answered with a reset,
    // and what was on it moves to the new incarnation (it may have been
    // published after the restart: n0 could not know).
    m.nodes[1] = Messenger::new("n1", 2, Config::default());
    m.nodes[1].set_peers(m.now, &peers(&["n0", "n1"]));
    m.nodes[1].subscribe(m.now, vec!["c".into()]).unwrap();
    m.delivered[1].clear();
    m.nodes[0].publish(m.now, "p", "c", vec![9], 0).unwrap();
    m.nodes[0].publish(m.now, "p", "c", vec![10], 0).unwrap();
    m.settle();
    let got: Vec<u8> = m.delivered[1]
        .iter()
        .map(|(_, msg)| msg.payload[0])
        .collect();
    assert_eq!(got, vec![9, 10]);
    assert!(
        m.published
            .iter()
            .rev()
            .take(2)
            .all(|(_, _, r)| r.receivers() == 1)
    );
}

#[test]
fn a_failed_node_is_reported_gone_and_publishes_do_not_wait_for_it() {
    let mut m = Mesh::new(3);
    m.cut.insert(2);
    let op = m.nodes[0]
        .send_direct(
            0,
            "x",
            Recipient::All,
            &["n0".into(), "n1".into(), "n2".into()],
            vec![1],
            60_000,
            0,
        )
        .unwrap();
    m.settle();
    m.nodes[0].set_peers(0, &peers(&["n0", "n1"]));
    m.settle();
    let r = m.nodes[0].direct_report(op).unwrap();
    assert_eq!(r.nodes["n2"], DirectStatus::Gone);
    assert_eq!(r.nodes["n1"], DirectStatus::Delivered(0));
    assert!(r.is_final());
    m.nodes[0].publish(0, "x", "c", vec![], 0).unwrap();
    m.settle();
    let (_, _, report) = m.published.pop().unwrap();
    assert_eq!(report.nodes.len(), 1, "{report:?}");
}

#[test]
fn a_peer_of_unknown_incarnation_is_learned_from_its_reset_and_nothing_is_lost() {
    // Incarnations are learned from the peers themselves, not from membership.
    let mut m = Mesh::new(2);
    let unknown = ["n0", "n1"];
    for k in 0..2 {
        m.nodes[k] = Messenger::new(format!("n{k}"), 10 + k as u64, Config::default());
        m.nodes[k].set_peers(0, &peers(&unknown));
    }
    m.nodes[1].subscribe(0, vec!["c".into()]).unwrap();
    for k in 0..3u8 {
        m.nodes[0].publish(0, "p", "c", vec![k], 0).unwrap();
    }
    m.settle();
    let got: Vec<u8> = m.delivered[1]
        .iter()
        .map(|(_, msg)| msg.payload[0])
        .collect();
    assert_eq!(
        got,
        vec![0, 1, 2],
        "moved to the learned incarnation, in order"
    );
    assert!(
        m.published.iter().all(|(_, _, r)| r.receivers() == 1),
        "{:?}",
        m.published
    );
    // n1 restarts as incarnation 20; n0 learns it from the next reset.
    m.nodes[1] = Messenger::new("n1", 20, Config::default());
    m.nodes[1].set_peers(0, &peers(&unknown));
    m.nodes[1]
        .subscribe(0, vec!["c".into(), "inbox.node.n1".into()])
        .unwrap();
    m.delivered[1].clear();
    m.nodes[0]
        .send_direct(
            0,
            "x",
            Recipient::Node("n1".into()),
            &["n1".into()],
            vec![9],
            60_000,
            0,
        )
        .unwrap();
    m.settle();
    let got: Vec<u8> = m.delivered[1]
        .iter()
        .map(|(_, msg)| msg.payload[0])
        .collect();
    assert_eq!(
        got,
        vec![9],
        "the direct message moved to the new incarnation"
    );
}

#[test]
fn a_peer_queue_is_bounded_in_bytes_too() {
    let cfg = Config {
        outbox_max_bytes: 500,
        ..Config::default()
    };
    let mut m = Messenger::new("n0", 1, cfg);
    let mut away = peers(&["n0", "n1"]);
    away[1].reachable = false;
    m.set_peers(0, &away);
    for _ in 0..3 {
        m.publish(0, "p", "c", vec![0; 200], 0).unwrap();
    }
    let reports: Vec<PublishReport> = m
        .drain_outputs()
        .filter_map(|o| match o {
            Output::Published { report, .. } => Some(report),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 3);
    assert_eq!(m.stats().dropped_full, 1, "the third did not fit");
    assert_eq!(m.peer_queues()[0].queued, 2);
    // Once the peer answers, the queue empties and its byte count with it.
    m.set_peers(0, &peers(&["n0", "n1"]));
    let mut n1 = Messenger::new("n1", 1, Config::default());
    n1.set_peers(0, &peers(&["n0", "n1"]));
    for _ in 0..3 {
        let outs: Vec<Output> = m.drain_outputs().collect();
        for o in outs {
            if let Output::Send { wire, .. } = o {
                n1.handle(0, "n0", wire);
            }
        }
        let back: Vec<Output> = n1.drain_outputs().collect();
        for o in back {
            if let Output::Send { wire, .. } = o {
                m.handle(0, "n1", wire);
            }
        }
    }
    assert_eq!(m.peer_queues()[0].queued, 0);
    for _ in 0..2 {
        m.publish(1, "p", "c", vec![0; 200], 0).unwrap();
    }
    assert_eq!(m.stats().dropped_full, 1, "the bytes were given back");
}
