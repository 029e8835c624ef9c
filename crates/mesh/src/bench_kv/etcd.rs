//! The peer for `mesh bench kv --peer etcd`: a three-member etcd cluster from
//! Debian's `etcd-server` package (installed on first use), on loopback, with
//! stock settings (its WAL fsyncs every batch, as our log does). Clients use its
//! JSON gateway (`/v3/kv/put`), so both systems are driven over HTTP/JSON by the
//! same load generator.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_cli::cluster::wait_for;

/// A running etcd cluster; dropping it kills the members and removes their data.
pub struct Etcd {
    dir: PathBuf,
    members: Vec<Member>,
}

struct Member {
    client_addr: String,
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Installs etcd-server from Debian if missing.
pub fn ensure_installed() -> anyhow::Result<()> {
    if Command::new("etcd").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("installing etcd-server from Debian (apt-get) for the side-by-side run…");
    let ok = Command::new("sh")
        .args([
            "-c",
            "(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok || Command::new("etcd").arg("--version").output().is_err() {
        anyhow::bail!(
            "etcd is not installed and `apt-get install etcd-server` failed (run as root, or install it)"
        );
    }
    Ok(())
}

fn post(addr: &str, path: &str, body: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut r = agent
        .post(format!("http://{addr}{path}"))
        .send(body.as_bytes())
        .ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

impl Etcd {
    /// Starts `n` members and waits until they agree on a leader.
    pub fn start(n: usize) -> anyhow::Result<Self> {
        ensure_installed()?;
        let dir = std::env::temp_dir().join(format!("mesh-bench-etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("e{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &cluster.join(",")])
                .args([
                    "--initial-cluster-token",
                    "mesh-bench",
                    "--initial-cluster-state",
                    "new",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start etcd: {e}"))?;
            members.push(Member {
                client_addr: format!("127.0.0.1:{client}"),
                child: Some(child),
            });
        }
        let etcd = Etcd { dir, members };
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            etcd.leader().is_some()
        })
        .ok_or_else(|| anyhow::anyhow!("etcd did not elect a leader within 30 s"))?;
        Ok(etcd)
    }

    /// (index, HOST:PORT) of the running members.
    pub fn addrs(&self) -> Vec<(usize, String)> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.child.is_some())
            .map(|(i, m)| (i, m.client_addr.clone()))
            .collect()
    }

    /// The member every running member names as leader.
    pub fn leader(&self) -> Option<usize> {
        let mut leader = None;
        let mut ids = Vec::new();
        for (i, addr) in self.addrs() {
            let s = post(&addr, "/v3/maintenance/status", "{}")?;
            let l = s["leader"].as_str()?.to_string();
            if leader.get_or_insert(l.clone()) != &l {
                return None;
            }
            ids.push((i, s["header"]["member_id"].as_str()?.to_string()));
        }
        let leader = leader?;
        ids.into_iter()
            .find(|(_, id)| *id == leader)
            .map(|(i, _)| i)
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Reaps a member killed from outside.
    pub fn reap(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.reap(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
