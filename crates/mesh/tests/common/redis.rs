//! Redis helpers for the end-to-end tests: a plain RESP connection (our
//! client side of `mesh_proto::resp`), Debian's `redis-server`,
//! `redis-cli` and `redis-benchmark` (installed when missing; a failure in
//! CI). The `redis-server` to compare against is `mesh_cli::redis_server`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_cli::cluster::{Cluster, wait_for};
use mesh_proto::resp::{Reply, encode_request, parse_reply};

/// Three `mesh up` processes named `{tag}0..2` serving Redis (`--resp` on a
/// free port, plus `extra`), joined, with three Raft voters and a leader.
pub fn resp_mesh(tag: &str, extra: &[&str]) -> Cluster {
    let exe = env!("CARGO_BIN_EXE_mesh");
    let mut c = Cluster::new(Path::new(exe), "local", tag).unwrap();
    let mut args = vec!["--resp", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let n0 = c.spawn_with(&format!("{tag}0"), &[], &args).unwrap();
    let seed = c.info(n0).gossip;
    for i in 1..3 {
        c.spawn_with(&format!("{tag}{i}"), &[seed], &args).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
            mesh_ready(&c)
        })
        .is_some(),
        "no three-voter mesh"
    );
    c
}

/// Every node sees three voters, a leader and every node alive.
pub fn mesh_ready(c: &Cluster) -> bool {
    (0..3).all(|i| c.consensus(i)["voters"].as_array().map(Vec::len) == Some(3))
        && c.raft_leader().is_some()
        && c.converged()
}

/// A RESP connection.
pub struct Resp {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    pub fn connect(addr: &str) -> Resp {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(addr) {
                Ok(sock) => {
                    sock.set_nodelay(true).unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(15)))
                        .unwrap();
                    return Resp {
                        sock,
                        buf: Vec::new(),
                    };
                }
                Err(e) if Instant::now() > deadline => panic!("connect {addr}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.sock.write_all(&encode_request(args)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    /// The next reply; `None` when the connection closed or timed out.
    pub fn read(&mut self) -> Option<Reply> {
        loop {
            if let Ok(Some((r, used))) = parse_reply(&self.buf) {
                self.buf.drain(..used);
                return Some(r);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.sock.set_read_timeout(Some(t)).unwrap();
    }

    /// One command, its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send(&a);
        self.read()
            .unwrap_or_else(|| panic!("no reply to {args:?}"))
    }

    /// Several commands in one write, their replies.
    pub fn pipeline(&mut self, cmds: &[Vec<String>]) -> Vec<Reply> {
        let mut out = Vec::new();
        for c in cmds {
            let a: Vec<&[u8]> = c.iter().map(|s| s.as_bytes()).collect();
            out.extend_from_slice(&encode_request(&a));
        }
        self.send_raw(&out);
        cmds.iter()
            .map(|c| self.read().unwrap_or_else(|| panic!("no reply to {c:?}")))
            .collect()
    }
}

pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

fn find(tool: &str) -> Option<String> {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|d| format!("{d}/{tool}"))
        .find(|p| Path::new(p).exists())
}

/// Paths of `redis-server`, `redis-cli` and `redis-benchmark`, installed from
/// Debian when missing. In CI (`CI=true`) missing tools fail the test;
/// elsewhere `None` (the caller says it skipped).
pub fn redis_tools() -> Option<(String, String, String)> {
    let found = || {
        Some((
            find("redis-server")?,
            find("redis-cli")?,
            find("redis-benchmark")?,
        ))
    };
    if let Some(t) = found() {
        return Some(t);
    }
    eprintln!("installing Debian's redis-server and redis-tools");
    let sudo = if std::env::var("USER").as_deref() == Ok("root") || is_root() {
        ""
    } else {
        "sudo "
    };
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!(
                "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq redis-server redis-tools"
            ),
        ])
        .stdout(Stdio::null())
        .status();
    let t = found();
    if t.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server and redis-tools are missing (apt-get install redis-server redis-tools)"
        );
        eprintln!("SKIPPED: Debian's redis-server and redis-tools are not installed here");
    }
    t
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}
