//! End-to-end: the replicated state over three real `mesh up` processes —
//! shared memory, agents, signed votes, barriers through the CLI and HTTP; bad
//! input refused with codes and nothing changed; the leader killed with -9, a
//! new one elected, nothing acknowledged lost, the dead node's agents marked,
//! and the restarted node caught up.
//!
//! Waits are conditions with deadlines, never fixed sleeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mesh_cli::cluster::{Cluster, wait_for};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_mesh");

mod common;
use common::{http, url};

fn cli(c: &Cluster, i: usize, keys: &Path, args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .env("MESH_NODE", format!("http://{}", c.info(i).http))
        .env("MESH_KEYS_DIR", keys)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn replicated_state_survives_a_leader_kill() {
    let mut c = Cluster::new(Path::new(EXE), "local", "repl").unwrap();
    let keys: PathBuf = std::env::temp_dir().join(format!("mesh-repl-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&keys);
    let n0 = c.spawn("r0", &[]).unwrap();
    let seed = c.info(n0).gossip;
    let n1 = c.spawn("r1", &[seed]).unwrap();
    let n2 = c.spawn("r2", &[seed]).unwrap();
    let all = [n0, n1, n2];
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
            all.iter().all(|i| {
                let s = c.consensus(*i);
                s["voters"].as_array().map(Vec::len) == Some(3) && s["writable"] == true
            }) && c.raft_leader().is_some()
        })
        .is_some(),
        "three voters and a leader: {:?}",
        all.map(|i| c.consensus(i))
    );

    // Shared memory: written through one node, read (linearizably) through another.
    ok(&cli(
        &c,
        n1,
        &keys,
        &["kv", "set", "team", "plan/v1", "ship it", "--ttl", "1h"],
    ));
    assert_eq!(
        ok(&cli(&c, n2, &keys, &["kv", "get", "team", "plan/v1"])),
        "ship it\n"
    );
    let (s, item) = http("GET", &url(&c, n0, "/v1/kv/team/plan%2Fv1"), None);
    assert_eq!(s, 200);
    assert_eq!(item["type"], "string");
    let ttl = item["ttl_ms"].as_u64().unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "ttl {ttl}");
    // Compare-and-set and if-absent conditions.
    let (s, _) = http(
        "PUT",
        &url(&c, n2, "/v1/kv/team/plan%2Fv1?if_absent=true"),
        Some(b"x"),
    );
    assert_eq!(s, 412);
    let (s, _) = http(
        "PUT",
        &url(&c, n2, "/v1/kv/team/plan%2Fv1?if_value=ship%20it"),
        Some(b"shipped"),
    );
    assert_eq!(s, 200);
    assert_eq!(
        ok(&cli(
            &c,
            n0,
            &keys,
            &["kv", "list", "team", "--prefix", "plan/"]
        )),
        "plan/v1\n"
    );

    // Raft figures and write outcomes on /metrics.
    let (s, text) = http("GET", &url(&c, n1, "/metrics"), None);
    let text = text.as_str().unwrap_or_default().to_string();
    assert_eq!(s, 200);
    assert!(text.contains("mesh_raft_voters 3"), "{text}");
    assert!(text.contains("mesh_writes_total{result=\"ok\"}"), "{text}");

    // A bulk write: all keys in one replicated command.
    let bulk = json!({"items": {"b1": "one", "b2": "two"}, "ttl": 60});
    let (s, v) = http(
        "POST",
        &url(&c, n2, "/v1/kv/bulk"),
        Some(bulk.to_string().as_bytes()),
    );
    assert_eq!((s, v["written"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(
        ok(&cli(&c, n0, &keys, &["kv", "get", "bulk", "b2"])),
        "two\n"
    );
    let bad = json!({"items": {"b3": "ok", "b4": 4}});
    let (s, v) = http(
        "POST",
        &url(&c, n2, "/v1/kv/bulk"),
        Some(bad.to_string().as_bytes()),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_items")));
    assert_eq!(
        ok(&cli(&c, n0, &keys, &["kv", "list", "bulk"])),
        "b1\nb2\n",
        "a refused bulk write writes nothing"
    );

    // Bad input: a clear code, and nothing changes.
    let before = http("GET", &url(&c, n0, "/v1/kv/team"), None).1;
    for (method, path, body, status, code) in [
        ("PUT", "/v1/kv/bad%20ns/k", &b"v"[..], 400, "bad_namespace"),
        ("PUT", "/v1/kv/team/k?ttl=0", b"v", 400, "bad_ttl"),
        (
            "PUT",
            "/v1/kv/team/k?ttl=999999999999",
            b"v",
            400,
            "bad_ttl",
        ),
        ("PUT", "/v1/kv/team/k?colour=red", b"v", 400, "bad_query"),
        (
            "POST",
            "/v1/proposals",
            b"{\"body\": ",
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/v1/agents",
            b"{\"id\":\"x\",\"type\":\"t\",\"public_key\":\"zz\"}",
            400,
            "bad_public_key",
        ),
    ] {
        let (s, v) = http(method, &url(&c, n1, path), Some(body));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {v}"
        );
    }
    let big = vec![b'x'; mesh_state::limits::MAX_VALUE_BYTES + 1];
    let (s, v) = http("PUT", &url(&c, n1, "/v1/kv/team/big"), Some(&big));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    assert_eq!(http("GET", &url(&c, n0, "/v1/kv/team"), None).1, before);

    // Agents on different nodes, a proposal, votes signed with their keys.
    for (i, id) in [(n0, "a0"), (n1, "a1"), (n2, "a2")] {
        ok(&cli(
            &c,
            i,
            &keys,
            &["agent", "register", id, "--type", "coder", "--caps", "rust"],
        ));
    }
    let agents = http("GET", &url(&c, n2, "/v1/agents"), None).1;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 3);
    ok(&cli(
        &c,
        n0,
        &keys,
        &[
            "vote",
            "propose",
            "--id",
            "rel-1",
            "--body",
            "{\"release\":\"1.0\"}",
        ],
    ));
    ok(&cli(
        &c,
        n1,
        &keys,
        &[
            "vote", "cast", "rel-1", "approve", "--agent", "a1", "--reason", "green",
        ],
    ));
    // A forged vote (a0's name, a1's key) is refused and not counted.
    let forged = {
        let a1 = std::fs::read_to_string(keys.join("a1.key")).unwrap();
        let k = ed25519_dalek::SigningKey::from_bytes(
            &mesh_proto::hex::decode(&a1).unwrap().try_into().unwrap(),
        );
        use ed25519_dalek::Signer;
        let msg = mesh_state::proposals::vote_signing_bytes("rel-1", "a0", true, None, 1);
        mesh_proto::hex::encode(&k.sign(&msg).to_bytes())
    };
    let body = json!({"agent_id": "a0", "vote": "approve", "seq": 1, "signature": forged});
    let (s, v) = http(
        "POST",
        &url(&c, n0, "/v1/proposals/rel-1/votes"),
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_signature")),
        "{v}"
    );
    let p = http("GET", &url(&c, n0, "/v1/proposals/rel-1"), None).1;
    assert_eq!(
        (p["approvals"].as_u64(), p["status"].as_str()),
        (Some(1), Some("open"))
    );
    // A waiter is woken by the deciding vote (pushed, not polled).
    let waiter = {
        let u = url(&c, n2, "/v1/proposals/rel-1?wait=30");
        std::thread::spawn(move || http("GET", &u, None).1)
    };
    ok(&cli(
        &c,
        n2,
        &keys,
        &["vote", "cast", "rel-1", "approve", "--agent", "a2"],
    ));
    let decided = waiter.join().unwrap();
    assert_eq!(decided["status"], "approved", "{decided}");
    assert!(decided["decision_latency_ms"].as_u64().is_some());
    assert!((decided["participation"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // A vote after the decision is refused.
    let late = cli(
        &c,
        n0,
        &keys,
        &["vote", "cast", "rel-1", "reject", "--agent", "a0"],
    );
    assert!(!late.status.success());
    assert!(String::from_utf8_lossy(&late.stderr).contains("already approved"));

    // A barrier released when both agents complete.
    let barrier = {
        let exe = EXE.to_string();
        let node = format!("http://{}", c.info(n1).http);
        std::thread::spawn(move || {
            Command::new(exe)
                .args([
                    "barrier",
                    "wait",
                    "done",
                    "--agents",
                    "a0,a1",
                    "--timeout",
                    "30s",
                    "--node",
                    &node,
                ])
                .output()
                .unwrap()
        })
    };
    wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        http("GET", &url(&c, n0, "/v1/barriers/done"), None).0 == 200
    })
    .expect("barrier created");
    ok(&cli(&c, n0, &keys, &["agent", "state", "a0", "COMPLETE"]));
    ok(&cli(&c, n2, &keys, &["agent", "state", "a1", "COMPLETE"]));
    assert!(ok(&barrier.join().unwrap()).contains("released"));

    // Kill the leader hard; writes through a survivor succeed again, nothing is lost.
    let l = c.raft_leader().unwrap();
    let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != l).collect();
    let acked: Vec<String> = (0..20)
        .map(|i| {
            let k = format!("k{i}");
            let (s, _) = http(
                "PUT",
                &url(&c, survivors[0], &format!("/v1/kv/load/{k}")),
                Some(k.as_bytes()),
            );
            assert_eq!(s, 200);
            k
        })
        .collect();
    let dead_name = c.nodes[l].name.clone();
    c.kill_hard(l).unwrap();
    let recovered = wait_for(Duration::from_secs(15), Duration::from_millis(5), || {
        http(
            "PUT",
            &url(&c, survivors[1], "/v1/kv/load/after"),
            Some(b"1"),
        )
        .0 == 200
    });
    assert!(
        recovered.is_some(),
        "no write accepted after the leader kill"
    );
    for k in &acked {
        let (s, v) = http(
            "GET",
            &url(&c, survivors[1], &format!("/v1/kv/load/{k}")),
            None,
        );
        assert_eq!(
            (s, v["value"].as_str()),
            (200, Some(k.as_str())),
            "lost {k}"
        );
    }
    // The dead node's agent is marked by a replicated command.
    let dead_agent = ["a0", "a1", "a2"][l];
    assert!(
        wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
            let a = http(
                "GET",
                &url(&c, survivors[0], &format!("/v1/agents/{dead_agent}")),
                None,
            )
            .1;
            a["node"] == dead_name.as_str() && a["node_dead_at_ms"].is_u64()
        })
        .is_some(),
        "agent {dead_agent} of the dead node {dead_name} not marked"
    );

    // The restarted node catches up from its disk and the leader.
    c.restart(l, &[c.info(survivors[0]).gossip]).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
            http("GET", &url(&c, l, "/v1/kv/load/after?stale=true"), None).0 == 200
        })
        .is_some(),
        "restarted node did not catch up"
    );
    let _ = std::fs::remove_dir_all(&keys);
}
