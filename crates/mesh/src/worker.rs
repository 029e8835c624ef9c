//! `mesh worker --exec CMD --caps a,b --slots N`: an agent that runs tasks.
//!
//! It registers an agent (its key kept like any agent's), then loops: claim as
//! many tasks as it has free slots (a long-poll: a task submitted while it
//! waits starts for it at once), run each as `sh -c CMD` in its own process
//! group with the payload on stdin and `MESH_TASK_ID`, `MESH_TASK_ATTEMPT`,
//! `MESH_TASK_PAYLOAD` (when it is text of at most 128 KiB) in the environment,
//! keep at most `--max-output` bytes of stdout as the result, and report exit
//! status 0 as completed, anything else as failed (retryable). A heartbeat thread
//! renews the leases of running tasks; a task whose lease is lost or that was
//! cancelled is killed (the whole process group), as is one that outlives its
//! timeout. Tasks a previous run of the same agent left running are reported
//! failed at start, so they are retried at once instead of after their lease.
//! A bidder thread follows the task event stream and, while a slot is free,
//! bids in every auction the mesh announces, with the machine's measured free
//! CPU share as its resources figure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use base64::Engine as _;
use clap::Args;
use serde_json::json;

use crate::api::{Api, DEFAULT_NODE, segment};

#[derive(Args, Clone)]
pub struct WorkerArgs {
    /// The node's HTTP URL
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE)]
    pub node: String,
    /// The command each task runs (through `sh -c`)
    #[arg(long)]
    pub exec: String,
    /// Capabilities, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub caps: Vec<String>,
    /// Tasks run at once
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Agent id [default: worker-<hostname>-<pid>]
    #[arg(long)]
    pub id: Option<String>,
    /// Agent type
    #[arg(long = "type", default_value = "worker")]
    pub kind: String,
    /// Lease length (renewed three times per lease while a task runs)
    #[arg(long, default_value = "5s")]
    pub lease: String,
    /// Most bytes of stdout kept as a task's result
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_output: usize,
    /// Where agents' secret keys are kept [default: ~/.config/agent-mesh/keys]
    #[arg(long, env = "MESH_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Stop after this many tasks (for tests and demos) [default: never]
    #[arg(long)]
    pub max_tasks: Option<u64>,
    /// The node's HTTP bearer token, if it has one
    #[arg(long, env = "MESH_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
}

/// Longest payload also passed in `MESH_TASK_PAYLOAD`.
const MAX_ENV_PAYLOAD: usize = 128 * 1024;
/// How long a claim waits for work before asking again.
const CLAIM_WAIT_SECS: f64 = 2.0;

struct Running {
    attempt: u32,
    /// The process group to kill (its leader's pid), once started.
    pgid: Option<i32>,
    /// Set when the lease was lost or the task cancelled: do not report.
    abandoned: bool,
}

type Table = Arc<Mutex<BTreeMap<String, Running>>>;

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("worker-{host}-{}", std::process::id())
}

fn kill_group(pgid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    if args.slots == 0 {
        anyhow::bail!("--slots must be at least 1");
    }
    if args.exec.trim().is_empty() {
        anyhow::bail!("--exec must name a command");
    }
    let lease_ms = mesh_proto::units::parse_duration_ms(&args.lease)
        .map_err(|e| anyhow::anyhow!("--lease: {e}"))?;
    let api = Arc::new(Api::with_token(&args.node, args.http_token.clone()));
    let id = args.id.clone().unwrap_or_else(default_id);
    let dir = crate::agent_cmd::keys_dir(args.keys_dir.clone());
    let (key, _) = crate::keys::load_or_create(&dir, &id)?;
    api.post_json(
        "/v1/agents",
        &json!({"id": id, "type": args.kind, "caps": args.caps,
                "public_key": mesh_proto::hex::encode(key.verifying_key().as_bytes())}),
    )?;
    eprintln!(
        "worker {id}: {} slot(s), caps [{}], running `{}` for each task (node {})",
        args.slots,
        args.caps.join(","),
        args.exec,
        args.node
    );

    // Tasks a previous run of this agent left running are not running here.
    let left = api.post_json(
        "/v1/tasks/claim",
        &json!({"agent": id, "max": 0, "lease_ms": lease_ms, "since": 0}),
    )?;
    for t in left["tasks"].as_array().into_iter().flatten() {
        let tid = t["id"].as_str().unwrap_or_default();
        let _ = api.post_json(
            &format!("/v1/tasks/{}/fail", segment(tid)),
            &json!({"agent": id, "attempt": t["attempt"], "reason": "the worker restarted"}),
        );
    }
    let mut cursor = left["cursor"].as_u64().unwrap_or(0);

    let table: Table = Arc::default();
    spawn_heartbeat(api.clone(), id.clone(), table.clone(), lease_ms);
    spawn_bidder(api.clone(), id.clone(), table.clone(), args.slots);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut started: u64 = 0;
    loop {
        if args.max_tasks.is_some_and(|m| started >= m) {
            // Let the last ones finish.
            while !table.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                let _ = done_rx.recv_timeout(Duration::from_millis(500));
            }
            return Ok(());
        }
        let busy = table.lock().unwrap_or_else(|e| e.into_inner()).len() as u32;
        let mut free = args.slots.saturating_sub(busy);
        if let Some(m) = args.max_tasks {
            free = free.min((m - started) as u32);
        }
        if free == 0 {
            let _ = done_rx.recv_timeout(Duration::from_secs(1));
            continue;
        }
        let r = match api.post_json(
            "/v1/tasks/claim",
            &json!({"agent": id, "max": free, "lease_ms": lease_ms, "wait": CLAIM_WAIT_SECS, "since": cursor}),
        ) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("worker {id}: claim failed: {e:#}; retrying");
                let _ = done_rx.recv_timeout(Duration::from_secs(1));
                continue;
            }
        };
        cursor = r["cursor"].as_u64().unwrap_or(cursor).max(cursor);
        for t in r["tasks"].as_array().into_iter().flatten() {
            let tid = t["id"].as_str().unwrap_or_default().to_string();
            let attempt = t["attempt"].as_u64().unwrap_or(0) as u32;
            {
                let mut tab = table.lock().unwrap_or_else(|e| e.into_inner());
                if tab.get(&tid).is_some_and(|r| r.attempt == attempt) {
                    continue;
                }
                tab.insert(
                    tid.clone(),
                    Running {
                        attempt,
                        pgid: None,
                        abandoned: false,
                    },
                );
            }
            started += 1;
            let job = Job {
                api: api.clone(),
                agent: id.clone(),
                exec: args.exec.clone(),
                id: tid,
                attempt,
                timeout: Duration::from_millis(t["timeout_ms"].as_u64().unwrap_or(300_000)),
                payload: base64::engine::general_purpose::STANDARD
                    .decode(t["payload_base64"].as_str().unwrap_or_default())
                    .unwrap_or_default(),
                max_output: args.max_output,
                table: table.clone(),
                done: done_tx.clone(),
            };
            std::thread::spawn(move || job.run());
        }
    }
}

/// The share of this machine's CPUs not in use, from the load average over the
/// last minute; `None` where the system does not report it.
fn free_cpu_share() -> Option<f64> {
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let cpus = std::thread::available_parallelism().ok()?.get() as f64;
    Some(((cpus - load) / cpus).clamp(0.0, 1.0))
}

/// Bids in the auctions the mesh announces (`auction` tasks), while a slot is
/// free. The bid's resources figure is measured: the machine's free CPU share,
/// or, where that is not reported, the share of this worker's slots that are
/// free. The mesh refuses bids for tasks this agent cannot do; those are
/// ignored. Reconnects when the event stream breaks.
fn spawn_bidder(api: Arc<Api>, agent: String, table: Table, slots: u32) {
    std::thread::spawn(move || {
        loop {
            let events = match api.events("/v1/tasks/events?state=ready") {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("worker {agent}: the task event stream failed: {e:#}; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            for e in events {
                if e["auction_closes_ms"].is_null() {
                    continue;
                }
                let busy = table.lock().unwrap_or_else(|e| e.into_inner()).len() as u32;
                if busy >= slots {
                    continue;
                }
                let resources =
                    free_cpu_share().unwrap_or_else(|| f64::from(slots - busy) / f64::from(slots));
                let tid = e["id"].as_str().unwrap_or_default();
                // Refused when this agent does not fit or the auction closed: fine.
                let _ = api.post_json(
                    &format!("/v1/tasks/{}/bids", segment(tid)),
                    &json!({"agent": agent, "resources": resources}),
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Renews the leases of running tasks; kills those it lost.
fn spawn_heartbeat(api: Arc<Api>, agent: String, table: Table, lease_ms: u64) {
    let every = Duration::from_millis((lease_ms / 3).max(100));
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(every);
            let ids: Vec<String> = table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, r)| !r.abandoned)
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let r = match api.post_json("/v1/tasks/renew", &json!({"agent": agent, "tasks": ids})) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("worker {agent}: renewing leases failed: {e:#}");
                    continue;
                }
            };
            for l in r["leases"].as_array().into_iter().flatten() {
                if l["error"].is_null() {
                    continue;
                }
                let tid = l["id"].as_str().unwrap_or_default();
                eprintln!(
                    "worker {agent}: stopping task {tid}: {}",
                    l["error"]["message"].as_str().unwrap_or("lease lost")
                );
                let mut tab = table.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(run) = tab.get_mut(tid) {
                    run.abandoned = true;
                    if let Some(pg) = run.pgid {
                        kill_group(pg);
                    }
                }
            }
        }
    });
}

struct Job {
    api: Arc<Api>,
    agent: String,
    exec: String,
    id: String,
    attempt: u32,
    timeout: Duration,
    payload: Vec<u8>,
    max_output: usize,
    table: Table,
    done: mpsc::Sender<()>,
}

impl Job {
    fn run(self) {
        let outcome = self.execute();
        let abandoned = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.id)
            .is_some_and(|r| r.abandoned);
        if !abandoned {
            let path = format!("/v1/tasks/{}/", segment(&self.id));
            let r = match outcome {
                Ok(out) => self.api.post_json(
                    &format!("{path}complete"),
                    &json!({"agent": self.agent, "attempt": self.attempt,
                            "result_base64": base64::engine::general_purpose::STANDARD.encode(out)}),
                ),
                Err(reason) => self.api.post_json(
                    &format!("{path}fail"),
                    &json!({"agent": self.agent, "attempt": self.attempt, "reason": reason}),
                ),
            };
            if let Err(e) = r {
                eprintln!(
                    "worker {}: reporting task {} failed: {e:#}",
                    self.agent, self.id
                );
            }
        }
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        let _ = self.done.send(());
    }

    /// Runs the command; `Ok(stdout)` on exit status 0, else why not.
    fn execute(&self) -> Result<Vec<u8>, String> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.exec)
            .env("MESH_TASK_ID", &self.id)
            .env("MESH_TASK_ATTEMPT", self.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if self.payload.len() <= MAX_ENV_PAYLOAD
            && let Ok(text) = std::str::from_utf8(&self.payload)
            && !text.contains('\0')
        {
            cmd.env("MESH_TASK_PAYLOAD", text);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", self.exec))?;
        let pgid = child.id() as i32;
        {
            let mut tab = self.table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = tab.get_mut(&self.id) {
                r.pgid = Some(pgid);
                if r.abandoned {
                    kill_group(pgid);
                }
            }
        }
        let mut stdin = child.stdin.take().expect("piped");
        let payload = self.payload.clone();
        let writer = std::thread::spawn(move || {
            // A command that does not read its stdin is fine.
            let _ = stdin.write_all(&payload);
        });
        let max = self.max_output;
        let mut stdout = child.stdout.take().expect("piped");
        let out_reader = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut stdout).take(max as u64).read_to_end(&mut kept);
            // Drain the rest so the command never blocks on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            kept
        });
        let mut stderr = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            let tail = all.len().saturating_sub(2048);
            String::from_utf8_lossy(&all[tail..]).trim().to_string()
        });
        // Wait for the exit without reaping it: while the leader is an unreaped
        // zombie its process group id cannot be reused, so killing the group
        // (children the command left behind) cannot hit anything else.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use nix::sys::wait::{Id, WaitPidFlag, waitid};
            let pid = nix::unistd::Pid::from_raw(pgid);
            let _ = tx.send(waitid(
                Id::Pid(pid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ));
        });
        let timed_out = rx.recv_timeout(self.timeout).is_err();
        kill_group(pgid);
        let status = child.wait().map_err(|e| e.to_string())?;
        let _ = writer.join();
        if timed_out {
            return Err(format!(
                "timed out after {} ms; killed",
                self.timeout.as_millis()
            ));
        }
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        if status.success() {
            return Ok(out);
        }
        let code = match status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        Err(if err.is_empty() {
            code
        } else {
            format!("{code}: {err}")
        })
    }
}
