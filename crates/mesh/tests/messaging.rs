//! Messaging on a real three-node mesh: pub/sub across nodes with receiver
//! counts and per-publisher order, direct messages with receipts and
//! mailboxes, system channels (a killed node is reported failed), bad input,
//! and a subscriber that disconnects leaving nothing behind.

use std::time::Duration;

use mesh_cli::cluster::wait_for;
use serde_json::{Value, json};

mod common;
use common::{Sse, http, members_agree, post, register_agent, three_node_mesh, url};

fn subscriptions(c: &mesh_cli::cluster::Cluster, i: usize) -> u64 {
    let (_, v) = http("GET", &url(c, i, "/v1/messaging"), None);
    v["subscriptions"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn pub_sub_direct_messages_and_system_events_across_three_nodes() {
    let exe = env!("CARGO_BIN_EXE_mesh");
    let mut c = three_node_mesh(exe, "msg");
    let addr = |c: &mesh_cli::cluster::Cluster, i: usize| c.info(i).http.to_string();

    // Subscribers on nodes 1 and 2; node 0 publishes.
    let mut s1 = Sse::open(&addr(&c, 1), "/v1/events?channels=jobs.*");
    let mut s2 = Sse::open(&addr(&c, 2), "/v1/events?channels=jobs.build,other");
    for s in [&mut s1, &mut s2] {
        assert!(
            s.wait_for(Duration::from_secs(5), "subscribed", |_| true)
                .is_some()
        );
    }
    let mut counts = Vec::new();
    for k in 0..50 {
        let (st, v) = post(
            &c,
            0,
            "/v1/publish",
            json!({"channel": "jobs.build", "message": {"k": k}, "from": "tester"}),
        );
        assert_eq!(st, 200, "{v}");
        counts.push(v["receivers"].as_u64().unwrap());
    }
    // Both subscribers, on other nodes, counted for every publish.
    assert!(counts.iter().all(|&n| n == 2), "{counts:?}");
    for s in [&mut s1, &mut s2] {
        for k in 0..50 {
            let m = s
                .wait_for(Duration::from_secs(5), "message", |_| true)
                .unwrap_or_else(|| panic!("message {k} did not arrive"));
            assert_eq!(m["data"]["k"], k, "out of publisher order: {m}");
            assert_eq!(m["from"], "tester");
            assert_eq!(m["channel"], "jobs.build");
        }
    }

    // A direct message to an agent without a listener waits in its node's mailbox.
    let (st, v) = register_agent(&c, 2, "worker-9", "test", &[], 9);
    assert_eq!(st, 201, "{v}");
    // Nodes 0 and 1 both send to it below: both must know it (a stale read
    // on one says nothing of the other; the full suite once saw node 1 answer
    // "no such agent").
    let seen = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        [0, 1]
            .iter()
            .all(|&i| http("GET", &url(&c, i, "/v1/agents/worker-9?stale=true"), None).0 == 200)
    });
    assert!(seen.is_some());
    let (st, v) = post(
        &c,
        0,
        "/v1/messages",
        json!({"to": "agent:worker-9", "message": "hello 9", "from": "boss"}),
    );
    assert_eq!(st, 201, "{v}");
    let node2 = c.info(2).node_id.clone();
    assert_eq!(v["nodes"][&node2]["status"], "queued", "{v}");
    assert_eq!(v["final"], true);
    let mut inbox = Sse::open(&addr(&c, 2), "/v1/events?channels=inbox.agent.worker-9");
    let m = inbox
        .wait_for(Duration::from_secs(5), "message", |_| true)
        .expect("the mailbox is delivered when the agent listens");
    assert_eq!(
        (m["message"].as_str(), m["from"].as_str()),
        (Some("hello 9"), Some("boss"))
    );
    // Now it listens: the next one is delivered, and the receipt says so.
    let (_, v) = post(
        &c,
        1,
        "/v1/messages",
        json!({"to": "agent:worker-9", "message": "again"}),
    );
    assert_eq!(
        v["nodes"][&node2],
        json!({"status": "delivered", "listeners": 1}),
        "{v}; node 1's messaging: {}; members {}",
        http("GET", &url(&c, 1, "/v1/messaging"), None).1,
        http("GET", &url(&c, 1, "/v1/members"), None).1
    );
    assert_eq!(v["listeners"], 1);
    let id = v["id"].as_u64().unwrap();
    let (st, r) = http("GET", &url(&c, 1, &format!("/v1/messages/{id}")), None);
    assert_eq!((st, &r["listeners"]), (200, &json!(1)), "{r}");
    // Broadcast: every node, counted per node.
    let mut all2 = Sse::open(&addr(&c, 2), "/v1/events?channels=inbox.all");
    all2.wait_for(Duration::from_secs(5), "subscribed", |_| true)
        .unwrap();
    let (_, v) = post(
        &c,
        0,
        "/v1/messages",
        json!({"to": "all", "message": "everyone"}),
    );
    assert_eq!(v["nodes"].as_object().map(|o| o.len()), Some(3), "{v}");
    assert_eq!(v["listeners"], 1, "{v}");
    assert!(
        all2.wait_for(Duration::from_secs(5), "message", |m| m["message"]
            == "everyone")
            .is_some()
    );

    // Bad input: clear errors, nothing changes.
    let subs_before = subscriptions(&c, 0);
    for (path, body, status, code) in [
        (
            "/v1/publish",
            json!({"channel": "mesh.member.joined", "message": 1}),
            400,
            "reserved_channel",
        ),
        (
            "/v1/publish",
            json!({"channel": "a b", "message": 1}),
            400,
            "bad_channel",
        ),
        (
            "/v1/publish",
            json!({"channel": "c", "message": "x".repeat(70_000)}),
            413,
            "too_large",
        ),
        (
            "/v1/publish",
            json!({"channel": "c", "message": 1, "colour": "red"}),
            400,
            "malformed_json",
        ),
        (
            "/v1/messages",
            json!({"to": "agent:nobody", "message": 1}),
            404,
            "not_found",
        ),
        (
            "/v1/messages",
            json!({"to": "someone", "message": 1}),
            400,
            "bad_recipient",
        ),
        (
            "/v1/messages",
            json!({"to": "all", "message": 1, "ttl_ms": 0}),
            400,
            "bad_ttl",
        ),
    ] {
        let (st, v) = post(&c, 0, path, body);
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {v}"
        );
    }
    let (st, v) = http("GET", &url(&c, 0, "/v1/events?channels=jobs.[ab"), None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("bad_channel")),
        "{v}"
    );
    assert_eq!(
        subscriptions(&c, 0),
        subs_before,
        "a refused subscription stays out"
    );
    let (_, m) = http("GET", &url(&c, 0, "/v1/messaging"), None);
    assert_eq!(m["dropped_system_events"], 0, "{m}");
    assert_eq!(m["dropped_slow_subscriber"], 0, "{m}");

    // The CLI: `mesh msg listen` on node 2 gets what `mesh msg publish` sends through node 0.
    let out = std::env::temp_dir().join(format!("mesh-msg-listen-{}", std::process::id()));
    let subs_on_2 = subscriptions(&c, 2);
    let mut listener = std::process::Command::new(exe)
        .args([
            "msg",
            "listen",
            "cli.*",
            "--count",
            "1",
            "--node",
            &url(&c, 2, ""),
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let subscribed = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        subscriptions(&c, 2) > subs_on_2
    });
    assert!(subscribed.is_some(), "mesh msg listen did not subscribe");
    let publish = std::process::Command::new(exe)
        .args([
            "msg",
            "publish",
            "cli.test",
            "{\"n\": 7}",
            "--json",
            "--node",
            &url(&c, 0, ""),
        ])
        .output()
        .unwrap();
    assert!(publish.status.success(), "{publish:?}");
    let printed: Value = serde_json::from_slice(&publish.stdout).unwrap();
    assert!(printed["receivers"].as_u64() >= Some(1), "{printed}");
    let done = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        listener.try_wait().ok().flatten().is_some()
    });
    if done.is_none() {
        let _ = listener.kill();
    }
    let line = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let got: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
    assert_eq!(got["data"]["n"], 7, "mesh msg listen printed: {line}");

    // A subscriber that goes away leaves nothing behind.
    let before = subscriptions(&c, 1);
    drop(s1);
    let gone = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        // Publishing makes the server notice the closed connection.
        post(
            &c,
            1,
            "/v1/publish",
            json!({"channel": "jobs.x", "message": 0}),
        );
        subscriptions(&c, 1) < before
    });
    assert!(gone.is_some(), "the subscription outlived its client");

    // A node briefly away (stopped, then resumed): the message waits and arrives.
    let mut away = Sse::open(
        &addr(&c, 2),
        &format!("/v1/events?channels=inbox.node.{node2}"),
    );
    away.wait_for(Duration::from_secs(5), "subscribed", |_| true)
        .unwrap();
    let pid = c.info(2).pid.to_string();
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let (st, v) = post(
        &c,
        0,
        "/v1/messages",
        json!({"to": format!("node:{node2}"), "message": "welcome back", "ttl_ms": 30_000}),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["nodes"][&node2]["status"], "pending", "{v}");
    let id = v["id"].as_u64().unwrap();
    // Long enough for the others to suspect it, and likely declare it dead.
    std::thread::sleep(Duration::from_millis(1500));
    signal("-CONT");
    let arrived = away.wait_for(Duration::from_secs(15), "message", |m| {
        m["message"] == "welcome back"
    });
    assert!(
        arrived.is_some(),
        "the message did not arrive after the node came back"
    );
    let receipt = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        let (_, r) = http("GET", &url(&c, 0, &format!("/v1/messages/{id}")), None);
        r["nodes"][&node2]["status"] == "delivered"
    });
    assert!(receipt.is_some(), "the receipt never said delivered");
    // It is alive again for the others (possibly renewed under a new generation).
    let back = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        members_agree(&c, 0..2, &node2, |m| m["state"] == "alive")
    });
    assert!(back.is_some(), "the stopped node did not rejoin");

    // A node killed and restarted (same name, new process): a direct message
    // sent while it was down reaches it afterwards, in its mailbox.
    let node1 = c.info(1).node_id.clone();
    c.kill_hard(1).unwrap();
    let (st, v) = post(
        &c,
        0,
        "/v1/messages",
        json!({"to": format!("node:{node1}"), "message": "after restart", "ttl_ms": 60_000}),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["nodes"][&node1]["status"], "pending", "{v}");
    let id = v["id"].as_u64().unwrap();
    let seed = c.info(0).gossip;
    c.restart(1, &[seed]).unwrap();
    let queued = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let (_, r) = http("GET", &url(&c, 0, &format!("/v1/messages/{id}")), None);
        r["nodes"][&node1]["status"] == "queued"
    });
    assert!(
        queued.is_some(),
        "the restarted node never took the message"
    );
    let mut inbox1 = Sse::open(
        &addr(&c, 1),
        &format!("/v1/events?channels=inbox.node.{node1}"),
    );
    assert!(
        inbox1
            .wait_for(Duration::from_secs(5), "message", |m| m["message"]
                == "after restart")
            .is_some(),
        "the mailbox of the restarted node did not deliver it"
    );

    // System channels: node 0 sees node 2 fail after a kill -9.
    let mut sys = Sse::open(
        &addr(&c, 0),
        "/v1/events?channels=mesh.member.*,mesh.topology.updated",
    );
    sys.wait_for(Duration::from_secs(5), "subscribed", |_| true)
        .unwrap();
    c.kill_hard(2).unwrap();
    let failed = sys.wait_for(Duration::from_secs(15), "message", |m| {
        m["channel"] == "mesh.member.failed" && m["data"]["subject"] == node2.as_str()
    });
    assert!(
        failed.is_some(),
        "no mesh.member.failed for the killed node"
    );
    // A publish now counts only what is there, and does not hang on the dead node.
    let (st, v) = post(
        &c,
        0,
        "/v1/publish",
        json!({"channel": "jobs.build", "message": 1}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["nodes"].get(&node2).is_none(), "{v}");
    c.stop_all();
}
