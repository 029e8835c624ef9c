//! Real Redis clients we did not write against a three-node mesh: Debian's
//! `redis-cli` (scripted, with `--pass` and `--no-auth-warning`, pub/sub
//! across nodes, blocking pops served by the node the client is on) and the
//! `redis` Python package (`tests/redis/client.py`); bad input (protocol
//! garbage, huge bulk lengths, the connection cap); and the same keys through
//! Redis and HTTP.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::redis::{Resp, bulk, redis_tools, resp_mesh};
use common::{http, url};
use mesh_cli::cluster::{Cluster, wait_for};
use mesh_proto::resp::Reply;

const PASSWORD: &str = "correct horse battery";

/// Three nodes serving Redis with a password; the extra arguments go to all.
fn mesh(tag: &str, extra: &[&str]) -> Cluster {
    let mut args = vec!["--resp-password", PASSWORD];
    args.extend_from_slice(extra);
    resp_mesh(tag, &args)
}

fn port(c: &Cluster, i: usize) -> String {
    c.info(i).resp.expect("serves RESP").port().to_string()
}

/// `redis-cli` against node `i` with the password; its stdout.
fn cli(tool: &str, c: &Cluster, i: usize, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &port(c, i)])
        .args(["--pass", PASSWORD, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A long-running `redis-cli` (subscribe, blocking pop), killed when dropped.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn authed(c: &Cluster, i: usize) -> Resp {
    let mut r = Resp::connect(&c.info(i).resp.unwrap().to_string());
    assert_eq!(r.cmd(&["AUTH", PASSWORD]), Reply::Simple("OK".into()));
    r
}

fn info_field(r: &mut Resp, section: &str, field: &str) -> Option<String> {
    let Reply::Bulk(text) = r.cmd(&["INFO", section]) else {
        return None;
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
}

#[test]
fn redis_cli_scripts_run_unchanged_against_any_node() {
    let Some((_, tool, _)) = redis_tools() else {
        return;
    };
    let c = mesh("rcli", &[]);

    // Auth: nothing without the password, a wrong one is refused and counted.
    let out = Command::new(&tool)
        .args(["-h", "127.0.0.1", "-p", &port(&c, 0), "ping"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NOAUTH Authentication required."),
        "{out:?}"
    );
    let out = Command::new(&tool)
        .args(["-h", "127.0.0.1", "-p", &port(&c, 0)])
        .args(["--pass", "wrong", "--no-auth-warning", "ping"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("WRONGPASS"), "{text}");
    let mut admin = authed(&c, 0);
    assert_eq!(
        info_field(&mut admin, "stats", "acl_access_denied_auth").as_deref(),
        Some("1")
    );
    assert_eq!(cli(&tool, &c, 0, &["ping"]).trim(), "PONG");

    // A coordination script, as agent setups run it, written to node 0 ...
    let script = "SETEX heartbeat:w1 30 alive\nLPUSH jobs j1 j2 j3\nSADD peers w1 w2\nZADD bids 5 w1 7 w2\nHSET agent:w1 state busy task j0\nINCR epoch\nSET team:plan ship-it\n";
    let mut child = Command::new(&tool)
        .args(["-h", "127.0.0.1", "-p", &port(&c, 0)])
        .args(["--pass", PASSWORD, "--no-auth-warning"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "OK\n3\n2\n2\n2\n1\nOK\n"
    );
    // ... is there on node 2, through Redis and through HTTP (one keyspace).
    assert_eq!(
        cli(&tool, &c, 2, &["lrange", "jobs", "0", "-1"]),
        "j3\nj2\nj1\n"
    );
    assert_eq!(cli(&tool, &c, 2, &["zrevrange", "bids", "0", "0"]), "w2\n");
    assert_eq!(cli(&tool, &c, 2, &["hget", "agent:w1", "state"]), "busy\n");
    let ttl: i64 = cli(&tool, &c, 2, &["ttl", "heartbeat:w1"])
        .trim()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&ttl), "{ttl}");
    let (status, v) = http("GET", &url(&c, 1, "/v1/kv/team/plan"), None);
    assert_eq!((status, v["value"].as_str()), (200, Some("ship-it")), "{v}");
    let (status, _) = http("PUT", &url(&c, 1, "/v1/kv/team/owner"), Some(b"agent-7"));
    assert_eq!(status, 200);
    assert_eq!(cli(&tool, &c, 0, &["get", "team:owner"]), "agent-7\n");

    // Pub/sub across nodes: a subscriber on node 0, a publisher on node 2.
    let mut sub = Running(
        Command::new(&tool)
            .args(["-h", "127.0.0.1", "-p", &port(&c, 0)])
            .args(["--pass", PASSWORD, "--no-auth-warning", "subscribe", "news"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(sub.0.stdout.take().unwrap()).lines();
    let mut next = move || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(
        (next(), next(), next()),
        ("subscribe".into(), "news".into(), "1".into())
    );
    // PUBSUB counts the subscriber from any node.
    assert_eq!(
        cli(&tool, &c, 1, &["pubsub", "numsub", "news"]),
        "news\n1\n"
    );
    assert_eq!(cli(&tool, &c, 2, &["publish", "news", "hello"]).trim(), "1");
    assert_eq!(
        (next(), next(), next()),
        ("message".into(), "news".into(), "hello".into())
    );
    drop(sub);

    // A blocking pop on node 1 is served when node 2 pushes.
    let waiter = Command::new(&tool)
        .args(["-h", "127.0.0.1", "-p", &port(&c, 1)])
        .args([
            "--pass",
            PASSWORD,
            "--no-auth-warning",
            "blpop",
            "work",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut n1 = authed(&c, 1);
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            info_field(&mut n1, "clients", "blocked_clients").as_deref() == Some("1")
        })
        .is_some(),
        "the pop never blocked"
    );
    assert_eq!(cli(&tool, &c, 2, &["rpush", "work", "task-9"]).trim(), "1");
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "work\ntask-9\n");
    assert_eq!(
        info_field(&mut n1, "clients", "blocked_clients").as_deref(),
        Some("0")
    );
    // And a timeout answers nil.
    assert_eq!(cli(&tool, &c, 1, &["blpop", "work", "0.2"]), "\n");
    assert!(info_field(&mut n1, "mesh", "leader").is_some_and(|l| l.starts_with("rcli")));
}

#[test]
fn bad_input_gets_redis_errors_and_leaves_nothing_behind() {
    let c = mesh("rbad", &["--resp-max-clients", "4"]);
    let addr = c.info(0).resp.unwrap().to_string();
    let mut admin = authed(&c, 0);
    let connected = |r: &mut Resp| info_field(r, "clients", "connected_clients");
    assert_eq!(connected(&mut admin).as_deref(), Some("1"));

    // Garbage: the protocol error, then the connection closes (as Redis does).
    for (garbage, error) in [
        (
            &b"*1\r\n$x\r\n"[..],
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$999999999\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (b"*a\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"*2\r\n$3\r\nGET\r\n+x\r\n",
            "ERR Protocol error: expected '$', got '+'",
        ),
        (
            b"SET \"unbalanced\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ] {
        let mut r = Resp::connect(&addr);
        r.send_raw(garbage);
        assert_eq!(r.read(), Some(Reply::Error(error.into())), "{garbage:?}");
        assert_eq!(r.read(), None, "closed after {garbage:?}");
    }
    // Garbage then a hang-up mid-command.
    {
        let mut r = Resp::connect(&addr);
        r.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nhalf");
    }
    // Errors that keep the connection, and change nothing.
    let mut r = Resp::connect(&addr);
    assert_eq!(
        r.cmd(&["GET", "x"]),
        Reply::err("NOAUTH Authentication required.")
    );
    assert_eq!(r.cmd(&["AUTH", PASSWORD]), Reply::ok());
    assert_eq!(r.cmd(&["SET", "k", "v"]), Reply::ok());
    for (cmd, error) in [
        (
            &["LPUSH", "k", "x"][..],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        (
            &["INCR", "k"],
            "ERR value is not an integer or out of range",
        ),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (
            &["NOPE", "a"],
            "ERR unknown command 'NOPE', with args beginning with: 'a' ",
        ),
        (
            &["EXPIRE", "k", "soon"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["FLUSHDB"],
            "ERR FLUSHDB is disabled on this node: it removes every key of the whole mesh; start the node with --resp-allow-flush to serve it",
        ),
    ] {
        assert_eq!(r.cmd(cmd), Reply::err(error), "{cmd:?}");
    }
    assert_eq!(r.cmd(&["GET", "k"]), bulk("v"), "nothing changed");
    // A value over the keyspace's limit is refused (4 MiB), the connection stays.
    let big = vec![b'x'; 4 * 1024 * 1024 + 1];
    r.send(&[b"SET", b"big", &big]);
    assert_eq!(
        r.read(),
        Some(Reply::err(
            "ERR value of 4194305 bytes is over the limit of 4194304 bytes"
        ))
    );
    assert_eq!(r.cmd(&["EXISTS", "big"]), Reply::Int(0));
    // The cap: admin and r are two; two more fit, the fifth is turned away.
    let _a = Resp::connect(&addr);
    let _b = Resp::connect(&addr);
    let mut fifth = Resp::connect(&addr);
    assert_eq!(
        fifth.read(),
        Some(Reply::err("ERR max number of clients reached"))
    );
    assert_eq!(
        info_field(&mut admin, "clients", "maxclients").as_deref(),
        Some("4")
    );
    drop((_a, _b, fifth, r));
    // Every connection that went away is gone from the count.
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            connected(&mut admin).as_deref() == Some("1")
        })
        .is_some(),
        "connections left behind: {:?}",
        connected(&mut admin)
    );
    assert_eq!(
        info_field(&mut admin, "stats", "rejected_connections").as_deref(),
        Some("1")
    );
}

/// `tests/redis/client.py` with the `redis` package from PyPI (installed
/// when missing; a failure in CI).
#[test]
fn the_python_redis_client_works_against_the_mesh() {
    let python_has_redis = || {
        Command::new("python3")
            .args(["-c", "import redis"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !python_has_redis() {
        eprintln!("installing the redis package from PyPI");
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "redis"])
            .status();
    }
    if !python_has_redis() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3's redis package is missing (pip install redis)"
        );
        eprintln!("SKIPPED: python3 -m pip install redis failed");
        return;
    }
    let c = mesh("rpy", &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/redis/client.py");
    let ports: Vec<String> = (0..3).map(|i| port(&c, i)).collect();
    let out = Command::new("python3")
        .arg(&script)
        .args(&ports)
        .env("REDIS_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client.py failed:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");
}
