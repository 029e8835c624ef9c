//! A cluster of real `mesh up` child processes on loopback.
//!
//! Each child gets its own data directory under a temporary directory and binds
//! port 0; once up it writes `node.json` (its addresses and pid) into the data
//! directory, which is how we find it. Children also watch our pid and leave the
//! mesh if we die, so an interrupted demo or test leaves nothing behind. Dropping
//! the [`Cluster`] kills what is still running and removes the directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// What `mesh up` writes to `<data-dir>/node.json` once it serves.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeFile {
    /// The node's name in the mesh.
    pub node_id: String,
    /// The bound gossip/RPC address.
    pub gossip: SocketAddr,
    /// The bound HTTP address.
    pub http: SocketAddr,
    /// The Redis endpoint, if the node serves one.
    #[serde(default)]
    pub resp: Option<SocketAddr>,
    /// The `mesh up` process id (tells this start's file from a previous one's).
    pub pid: u32,
    /// The node's incarnation: its start time, Unix ms.
    pub generation: u64,
}

/// One child node.
pub struct ChildNode {
    /// The node's name (`--node-id`), also its data directory's name.
    pub name: String,
    /// Extra `mesh up` arguments.
    pub extra: Vec<String>,
    /// The node's data directory under the cluster's directory.
    pub data_dir: PathBuf,
    /// The running process; `None` once killed or stopped.
    pub child: Option<Child>,
    /// What the node wrote to `node.json` at its latest start.
    pub info: Option<NodeFile>,
}

/// A set of child nodes.
pub struct Cluster {
    exe: PathBuf,
    dir: PathBuf,
    profile: String,
    /// Every node spawned, running or not, in spawn order (the index is the node's number).
    pub nodes: Vec<ChildNode>,
}

/// An event a node reported, placed on our clock.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    /// The event's type (`joined`, `suspected`, `dead`, `left`, ...).
    pub kind: String,
    /// When it happened, on this process's clock.
    pub at: Instant,
    /// The members that reported it (who suspected or confirmed the subject).
    pub by: Vec<String>,
}

impl Cluster {
    /// A cluster running `exe` (the `mesh` binary) with `profile`.
    pub fn new(exe: &Path, profile: &str, tag: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("mesh-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            exe: exe.to_path_buf(),
            dir,
            profile: profile.to_string(),
            nodes: Vec::new(),
        })
    }

    /// Creates a replica key in the data directory of each of `names` (the
    /// nodes to spawn next, in this order) and the pBFT genesis file naming
    /// them; returns the `mesh up` arguments that start a node on it.
    pub fn pbft_genesis(&self, names: &[String]) -> anyhow::Result<Vec<String>> {
        use mesh_node::pbft_setup::{Genesis, GenesisReplica, key_path, load_or_create_key};
        let mut g = Genesis {
            replicas: Vec::new(),
        };
        for name in names {
            let dir = self.dir.join(name);
            let (key, _) = load_or_create_key(&key_path(&dir)).map_err(anyhow::Error::msg)?;
            g.replicas.push(GenesisReplica {
                name: name.clone(),
                key: mesh_proto::hex::encode(&key.verifying_key().to_bytes()),
            });
        }
        let path = self.dir.join("pbft-genesis.json");
        std::fs::write(&path, serde_json::to_string_pretty(&g)?)?;
        Ok(vec![
            "--consensus".into(),
            "pbft".into(),
            "--pbft-genesis".into(),
            path.display().to_string(),
        ])
    }

    /// `nodes` `mesh up` processes ordering with pBFT (plus `extra`
    /// arguments), named `{tag}0..` (replica 0 is the first primary), once
    /// every node names the same primary and accepts writes.
    pub fn start_pbft(
        exe: &Path,
        profile: &str,
        tag: &str,
        nodes: usize,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        let mut c = Cluster::new(exe, profile, tag)?;
        let names: Vec<String> = (0..nodes).map(|i| format!("{tag}{i}")).collect();
        let mut args = c.pbft_genesis(&names)?;
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let first = c.spawn_with(&names[0], &[], &args)?;
        let seed = c.info(first).gossip;
        for name in &names[1..] {
            c.spawn_with(name, &[seed], &args)?;
        }
        wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
            c.raft_leader().is_some()
                && c.running()
                    .iter()
                    .all(|&i| c.consensus(i)["writable"] == true)
        })
        .ok_or_else(|| {
            anyhow::anyhow!("the pBFT replicas did not agree on a primary within 30 s")
        })?;
        Ok(c)
    }

    /// Starts a node named `name`, joining through `join` if given; waits until it serves.
    pub fn spawn(&mut self, name: &str, join: &[SocketAddr]) -> anyhow::Result<usize> {
        self.spawn_with(name, join, &[])
    }

    /// Like [`Cluster::spawn`], with extra `mesh up` arguments.
    pub fn spawn_with(
        &mut self,
        name: &str,
        join: &[SocketAddr],
        extra: &[&str],
    ) -> anyhow::Result<usize> {
        let data_dir = self.dir.join(name);
        std::fs::create_dir_all(&data_dir)?;
        self.nodes.push(ChildNode {
            name: name.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            data_dir,
            child: None,
            info: None,
        });
        let i = self.nodes.len() - 1;
        self.start(i, join)?;
        Ok(i)
    }

    fn start(&mut self, i: usize, join: &[SocketAddr]) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let bind = match &node.info {
            Some(info) => info.gossip.to_string(),
            None => "127.0.0.1:0".to_string(),
        };
        let _ = std::fs::remove_file(node.data_dir.join("node.json"));
        // A restart appends: the log before a kill is what a post-mortem needs.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.data_dir.join("node.log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("up")
            .args(["--node-id", &node.name])
            // A restart keeps its gossip port, as a restarted service does (memberlist,
            // the peer we compare with, refuses a known name at a new address).
            .args(["--bind", &bind, "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--profile", &self.profile])
            .args(["--parent-pid", &std::process::id().to_string()])
            .args(&node.extra)
            .env_remove("MESH_JOIN")
            .env_remove("MESH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if !join.is_empty() {
            let seeds: Vec<String> = join.iter().map(|a| a.to_string()).collect();
            cmd.args(["--join", &seeds.join(",")]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let pid = child.id();
        node.child = Some(child);
        let file = node.data_dir.join("node.json");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(info) = serde_json::from_str::<NodeFile>(&text)
                && info.pid == pid
            {
                node.info = Some(info);
                return Ok(());
            }
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log =
                    std::fs::read_to_string(node.data_dir.join("node.log")).unwrap_or_default();
                bail!("node {} exited at start ({status}):\n{log}", node.name);
            }
            if Instant::now() > deadline {
                bail!("node {} did not come up within 15 s", node.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What node `i` wrote to `node.json` at its latest start (panics if it never started).
    pub fn info(&self, i: usize) -> &NodeFile {
        self.nodes[i].info.as_ref().expect("node started")
    }

    /// Whether node `i`'s process is running (not killed or stopped here).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The numbers of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// `kill -9`: no leave, no goodbye.
    pub fn kill_hard(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM: the node leaves the mesh gracefully.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    c.kill()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            c.wait()?;
        }
        Ok(())
    }

    /// Restarts a stopped node with the same name and data directory (new generation).
    pub fn restart(&mut self, i: usize, join: &[SocketAddr]) -> anyhow::Result<()> {
        assert!(self.nodes[i].child.is_none(), "restart of a running node");
        self.start(i, join)
    }

    /// `GET /v1/status` of node `i`, with the instant it was answered.
    pub fn status(&self, i: usize) -> anyhow::Result<(Value, Instant)> {
        let url = format!("http://{}/v1/status", self.info(i).http);
        let body = ureq::get(&url).call()?.body_mut().read_to_string()?;
        Ok((serde_json::from_str(&body)?, Instant::now()))
    }

    /// Node `i`'s consensus status (`null` if it does not answer).
    pub fn consensus(&self, i: usize) -> Value {
        self.status(i)
            .map(|(s, _)| s["consensus"].clone())
            .unwrap_or_default()
    }

    /// The running node every running node names as Raft leader (pBFT:
    /// primary), if they agree.
    pub fn raft_leader(&self) -> Option<usize> {
        let running = self.running();
        let views: Vec<(usize, Value)> = running.iter().map(|&i| (i, self.consensus(i))).collect();
        let leader = views.first()?.1["leader"].as_u64()?;
        if views
            .iter()
            .any(|(_, v)| v["leader"].as_u64() != Some(leader))
        {
            return None;
        }
        views
            .iter()
            .find(|(_, v)| v["node_id"].as_u64() == Some(leader))
            .map(|(i, _)| *i)
    }

    /// True when every running node sees every running node alive (current generation).
    pub fn converged(&self) -> bool {
        let running = self.running();
        running.iter().all(|&o| {
            let Ok((s, _)) = self.status(o) else {
                return false;
            };
            running.iter().all(|&x| {
                let want = self.info(x);
                s["members"].as_array().into_iter().flatten().any(|m| {
                    m["id"] == want.node_id.as_str()
                        && m["generation"] == want.generation
                        && m["state"] == "alive"
                })
            })
        })
    }

    /// Events node `observer` reported about `subject` at `generation`, on our clock.
    pub fn events_about(
        &self,
        observer: usize,
        subject: &str,
        generation: u64,
    ) -> anyhow::Result<Vec<SeenEvent>> {
        let (s, answered) = self.status(observer)?;
        let uptime = s["uptime_ms"].as_u64().unwrap_or(0);
        let mut out = Vec::new();
        for e in s["events"].as_array().into_iter().flatten() {
            if e["subject"] != subject || e["generation"] != generation {
                continue;
            }
            let at_ms = e["at_ms"].as_u64().unwrap_or(0);
            let ago = Duration::from_millis(uptime.saturating_sub(at_ms));
            out.push(SeenEvent {
                kind: e["type"].as_str().unwrap_or("").to_string(),
                at: answered.checked_sub(ago).unwrap_or(answered),
                by: e["by"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
            });
        }
        Ok(out)
    }

    /// CPU time (user + system) node `i` has used, read from `/proc/<pid>/stat`
    /// in clock ticks (100 per second on Linux); `None` if not running or not Linux.
    pub fn cpu_ticks(&self, i: usize) -> Option<u64> {
        let pid = self.nodes[i].child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// Resident memory of node `i`, read from `/proc/<pid>/status` (so it is the
    /// same measurement for any implementation the harness runs).
    pub fn resident_bytes(&self, i: usize) -> Option<u64> {
        resident_bytes_of(self.nodes[i].child.as_ref()?.id())
    }

    /// Stops every node gracefully.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.stop(i);
        }
    }
}

/// Resident memory of process `pid`, from /proc.
pub fn resident_bytes_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Polls `cond` every `every` until it holds or `within` passes; returns the time it took.
pub fn wait_for(
    within: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= within {
            return None;
        }
        std::thread::sleep(every);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // MESH_KEEP_CLUSTER=1 keeps the nodes' data and logs for a post-mortem.
        if std::env::var_os("MESH_KEEP_CLUSTER").is_some() {
            eprintln!("cluster files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
