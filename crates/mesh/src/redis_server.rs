//! A Debian `redis-server` to compare against, for `mesh bench pubsub`,
//! `mesh bench resp` and the Redis end-to-end tests: no persistence, on a
//! free loopback port, killed when dropped.
//!
//! Why the start is careful: the port comes from the kernel (bind to 0, then
//! released) and redis-server binds it a moment later, so another process
//! started in between (a test's mesh node on port 0, another redis-server)
//! can take it. A server is only returned once `INFO server` on its port
//! names the child's own process id; a child that exited (it could not bind)
//! or a port that answers for someone else means a new port and a new child.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_proto::resp::{Reply, encode_request, parse_reply};

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

const ATTEMPTS: usize = 10;

impl RedisServer {
    /// Starts `server` (a path or a name on `PATH`) and waits until it answers
    /// on its own port.
    pub fn start(server: &str) -> anyhow::Result<RedisServer> {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let child = Command::new(server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot start {server} ({e}): install it (apt-get install redis-server)"
                    )
                })?;
            let mut s = RedisServer {
                child,
                addr: format!("127.0.0.1:{port}"),
            };
            match s.wait_own_port(Duration::from_secs(10)) {
                Ok(()) => return Ok(s),
                Err(e) => last = e,
            }
        }
        anyhow::bail!("{server} did not start in {ATTEMPTS} attempts: {last}")
    }

    /// Ok once the server on `addr` is this child; Err when the child exited
    /// or the deadline passed.
    fn wait_own_port(&mut self, within: Duration) -> Result<(), String> {
        let pid = format!("process_id:{}", self.child.id());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited ({status}) on {}", self.addr));
            }
            if let Some(info) = info_server(&self.addr)
                && info.lines().any(|l| l.trim() == pid)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no answer on {} within {within:?}", self.addr))
    }
}

/// `INFO server`'s text from whatever answers on `addr`, if it speaks RESP.
fn info_server(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(&encode_request(&[b"INFO", b"server"])).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Ok(Some((reply, _))) = parse_reply(&buf) {
            return match reply {
                Reply::Bulk(b) => String::from_utf8(b).ok(),
                _ => None,
            };
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
