//! End-to-end: real `mesh` processes on loopback, over real UDP and TCP.
//!
//! Waits are conditions with deadlines, never fixed sleeps.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mesh_cli::cluster::{Cluster, wait_for};

const EXE: &str = env!("CARGO_BIN_EXE_mesh");

fn members_state(c: &Cluster, observer: usize, subject: &str) -> Option<String> {
    let (s, _) = c.status(observer).ok()?;
    s["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == subject)
        .and_then(|m| m["state"].as_str().map(String::from))
}

#[test]
fn three_processes_converge_detect_a_kill_and_see_a_leave() {
    let mut c = Cluster::new(Path::new(EXE), "lan", "e2e3").unwrap();
    let a = c.spawn("a", &[]).unwrap();
    let seed = c.info(a).gossip;
    let b = c.spawn("b", &[seed]).unwrap();
    let d = c.spawn("d", &[seed]).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), Duration::from_millis(20), || c
            .converged())
        .is_some(),
        "no convergence"
    );

    // Status over HTTP and through the CLI.
    let (s, _) = c.status(b).unwrap();
    assert_eq!(s["mode"], "read-write");
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    for m in s["members"].as_array().unwrap() {
        for field in [
            "id",
            "addr",
            "state",
            "incarnation",
            "zone",
            "caps",
            "rtt_ms",
            "last_change_ms",
        ] {
            assert!(m.get(field).is_some(), "member lacks {field}: {m}");
        }
    }
    let out = Command::new(EXE)
        .args(["status", "--node", &format!("http://{}", c.info(a).http)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("read-write") && text.lines().any(|l| l.starts_with("b ")),
        "{text}"
    );

    // kill -9 d: a and b declare it dead, with who confirmed it.
    c.kill_hard(d).unwrap();
    let seen = wait_for(Duration::from_secs(10), Duration::from_millis(25), || {
        members_state(&c, a, "d").as_deref() == Some("dead")
            && members_state(&c, b, "d").as_deref() == Some("dead")
    });
    assert!(seen.is_some(), "kill -9 not detected within 10 s");
    let (s, _) = c.status(a).unwrap();
    let dm = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "d")
        .unwrap()
        .clone();
    assert!(!dm["confirmed_by"].as_array().unwrap().is_empty(), "{dm}");

    // SIGTERM b: a sees it as left, not dead.
    c.stop(b).unwrap();
    let left = wait_for(Duration::from_secs(10), Duration::from_millis(25), || {
        members_state(&c, a, "b").as_deref() == Some("left")
    });
    assert!(
        left.is_some(),
        "graceful leave not seen as left: {:?}",
        members_state(&c, a, "b")
    );

    // a now reaches 1 of 2 known (d dead, b left and not counted): read-only.
    let (s, _) = c.status(a).unwrap();
    assert_eq!(
        (s["reachable"].as_u64(), s["known"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(s["mode"], "read-only");
    c.stop_all();
}

#[test]
fn garbage_packets_are_counted_and_harmless() {
    let mut c = Cluster::new(Path::new(EXE), "lan", "e2egarbage").unwrap();
    let a = c.spawn("a", &[]).unwrap();
    let target = c.info(a).gossip;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"hello?", target).unwrap();
    sock.send_to(&[b'M', 1, 1, 0xff, 0xff], target).unwrap();
    sock.send_to(&vec![0u8; 9000], target).unwrap();
    // A membership TCP frame claiming 4 GiB, and a frame no protocol owns.
    {
        use std::io::Write;
        let mut t = std::net::TcpStream::connect(target).unwrap();
        t.write_all(&[0xff, 0xff, 0xff, 0xff, b'M', 2, 3]).unwrap();
        let mut t = std::net::TcpStream::connect(target).unwrap();
        t.write_all(&[0, 0, 0, 3, b'?', 1, 2]).unwrap();
    }
    let counted = wait_for(Duration::from_secs(10), Duration::from_millis(25), || {
        c.status(a)
            .is_ok_and(|(s, _)| s["health"]["packets_dropped_total"].as_u64().unwrap_or(0) >= 5)
    });
    assert!(
        counted.is_some(),
        "drops not counted: {:?}",
        c.status(a).map(|s| s.0["health"].clone()).ok()
    );
    let metrics = ureq::get(&format!("http://{}/metrics", c.info(a).http))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("mesh_packets_dropped_total{reason=\"bad_magic\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"oversized_frame\""), "{metrics}");
    assert!(metrics.contains("reason=\"unknown_stream\""), "{metrics}");
    // Still alive and well.
    assert_eq!(c.status(a).unwrap().0["mode"], "read-write");
    c.stop_all();
}

/// A soft state too large to piggyback on SWIM datagrams (64 long
/// capability names) reaches the other nodes by the anti-entropy exchange
/// over TCP, and nothing of it is dropped on the way.
#[test]
fn a_soft_state_too_large_for_gossip_arrives_by_anti_entropy() {
    let mut c = Cluster::new(Path::new(EXE), "local", "e2eae").unwrap();
    let a = c.spawn("a", &[]).unwrap();
    let seed = c.info(a).gossip;
    let caps: Vec<String> = (0..64)
        .map(|i| format!("cap-{i:02}-{}", "x".repeat(100)))
        .collect();
    let caps_arg = caps.join(",");
    let b = c.spawn_with("b", &[seed], &["--caps", &caps_arg]).unwrap();
    let caps_seen = |c: &Cluster| -> usize {
        c.status(a)
            .ok()
            .and_then(|(s, _)| {
                s["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["id"] == "b")
                    .and_then(|m| m["caps"].as_array().map(Vec::len))
            })
            .unwrap_or(0)
    };
    // Anti-entropy runs every 5 s (local profile), with jitter.
    let arrived = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        caps_seen(&c) == caps.len()
    });
    let dropped = |i: usize| {
        ureq::get(&format!("http://{}/metrics", c.info(i).http))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("mesh_packets_dropped_total{"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(
        arrived.is_some(),
        "node a sees {} of b's {} capabilities after 30 s; drops at a: {:?}, at b: {:?}",
        caps_seen(&c),
        caps.len(),
        dropped(a),
        dropped(b)
    );
    assert_eq!(dropped(a), Vec::<String>::new(), "frames dropped at a");
    assert_eq!(dropped(b), Vec::<String>::new(), "frames dropped at b");
    c.stop_all();
}

#[test]
fn a_join_nobody_answers_keeps_retrying_and_the_node_serves_alone() {
    let mut c = Cluster::new(Path::new(EXE), "lan", "e2elonely").unwrap();
    // A port nobody listens on (bound and released).
    let dead = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let a = c.spawn("a", &[dead]).unwrap();
    let retried = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        std::fs::read_to_string(c.nodes[a].data_dir.join("node.log"))
            .is_ok_and(|l| l.contains("retrying with backoff"))
    });
    assert!(retried.is_some(), "no retry logged");
    let (s, _) = c.status(a).unwrap();
    assert_eq!(s["members"].as_array().unwrap().len(), 1);
    c.stop_all();
}

#[test]
fn bad_command_lines_fail_clearly() {
    let run = |args: &[&str]| {
        let out = Command::new(EXE)
            .args(args)
            .env_remove("MESH_JOIN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(&["up", "--frobnicate"]);
    assert!(!ok && err.contains("--frobnicate"), "{err}");
    let (ok, err) = run(&[
        "up",
        "--bind",
        "localhost",
        "--data-dir",
        "/tmp/mesh-bad-cli",
    ]);
    assert!(!ok && err.contains("missing ':PORT'"), "{err}");
    let (ok, err) = run(&[
        "up",
        "--join",
        "127.0.0.1:notaport",
        "--data-dir",
        "/tmp/mesh-bad-cli",
    ]);
    assert!(!ok && err.contains("not a port number"), "{err}");
    let (ok, err) = run(&[
        "up",
        "--profile",
        "turbo",
        "--data-dir",
        "/tmp/mesh-bad-cli",
    ]);
    assert!(!ok && err.contains("local, lan, wan"), "{err}");
    let (ok, err) = run(&["sim", "membership", "--nodes", "2"]);
    assert!(!ok && err.contains("between 3 and 20000"), "{err}");
    let (ok, err) = run(&["status", "--node", "http://127.0.0.1:1"]);
    assert!(!ok && err.contains("cannot reach a mesh node"), "{err}");
}

#[test]
fn config_file_and_environment_are_applied_with_flags_winning() {
    let dir = std::env::temp_dir().join(format!("mesh-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mesh.toml");
    std::fs::write(
        &cfg,
        "zone = \"from-file\"\ncaps = [\"file-cap\"]\nnode_id = \"file-id\"\n",
    )
    .unwrap();
    let mut child = Command::new(EXE)
        .args([
            "up",
            "--bind",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--node-id",
            "flag-id",
            "--config",
        ])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&dir)
        .env("MESH_CAPS", "env-cap")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let node_file = dir.join("node.json");
    let up = wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
        node_file.exists()
    });
    assert!(up.is_some());
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&node_file).unwrap()).unwrap();
    let url = format!("http://{}/v1/status", info["http"].as_str().unwrap());
    let s: serde_json::Value = serde_json::from_str(
        &ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let me = &s["members"][0];
    assert_eq!(s["node_id"], "flag-id");
    assert_eq!(me["zone"], "from-file");
    assert_eq!(me["caps"], serde_json::json!(["env-cap"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mdns_finds_peers_without_a_join() {
    let mut c = Cluster::new(Path::new(EXE), "lan", "e2emdns").unwrap();
    c.spawn_with("mdns-a", &[], &["--mdns"]).unwrap();
    c.spawn_with("mdns-b", &[], &["--mdns"]).unwrap();
    let found = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        c.converged()
    });
    assert!(found.is_some(), "two --mdns nodes did not find each other");
    c.stop_all();
}
