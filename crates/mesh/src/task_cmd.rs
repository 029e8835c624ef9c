//! `mesh task submit|list|show|wait|cancel|claim|complete|fail`: tasks from the
//! command line and from scripts (`claim`, `complete` and `fail` let a script or
//! an LLM session act as an agent without running `mesh worker`).

use std::io::Read;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::{Api, DEFAULT_NODE, segment};

#[derive(Args)]
pub struct TaskArgs {
    /// The node's HTTP URL (any node)
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE, global = true)]
    node: String,
    #[command(subcommand)]
    cmd: TaskCmd,
}

#[derive(Subcommand)]
enum TaskCmd {
    /// Submit a task; prints its id
    Submit {
        /// The payload: JSON if it parses as JSON, else text; "-" reads stdin
        #[arg(default_value = "")]
        payload: String,
        /// Task id [default: made up]
        #[arg(long)]
        id: Option<String>,
        /// Required capabilities, comma-separated (name or name=weight)
        #[arg(long, value_delimiter = ',')]
        caps: Vec<String>,
        /// low, medium, high or critical
        #[arg(long, default_value = "medium")]
        priority: String,
        /// Tasks that must complete first, comma-separated
        #[arg(long, value_delimiter = ',')]
        deps: Vec<String>,
        /// Per-attempt timeout (30s, 5m) [default: 300s]
        #[arg(long)]
        timeout: Option<String>,
        /// Retry budget [default: 3]
        #[arg(long)]
        retries: Option<u32>,
        /// capability, hash, auction or steal [default: the mesh's]
        #[arg(long)]
        strategy: Option<String>,
        /// Only agents in this zone
        #[arg(long)]
        zone: Option<String>,
        /// For steal: the agent or node whose queue gets it
        #[arg(long)]
        queue: Option<String>,
        /// A second submit with the same key returns the first task
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait until it ended and print it
        #[arg(long)]
        wait: bool,
    },
    /// List tasks
    List {
        /// Only tasks in this state (pending, ready, assigned, running, completed, failed, dead_letter, cancelled)
        #[arg(long)]
        state: Option<String>,
        /// Only tasks held (or last run) by this agent
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Show a task as JSON
    Show { id: String },
    /// Wait until a task ended; exits 0 if it completed, 1 otherwise
    Wait {
        id: String,
        /// Give up after this long
        #[arg(long, default_value = "300s")]
        timeout: String,
    },
    /// Cancel a task (and what depends on it)
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Claim tasks for an agent; prints them as JSON lines
    Claim {
        /// The agent (registered with `mesh agent register`)
        #[arg(long)]
        agent: String,
        #[arg(long, default_value_t = 1)]
        max: u32,
        /// Wait up to this long for work
        #[arg(long, default_value = "0s")]
        wait: String,
        /// Lease length; renew it by claiming again or completing in time
        #[arg(long, default_value = "5s")]
        lease: String,
    },
    /// Report a task completed
    Complete {
        id: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        attempt: u32,
        /// The result: JSON if it parses, else text; "-" reads stdin
        #[arg(default_value = "")]
        result: String,
    },
    /// Show or change the mesh's task settings
    Settings {
        /// The default routing strategy: capability, hash, auction or steal
        #[arg(long)]
        strategy: Option<String>,
        /// Ring replicas that may run a hash task (1 to 7)
        #[arg(long)]
        hash_replicas: Option<u32>,
    },
    /// Report a task failed
    Fail {
        id: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        attempt: u32,
        #[arg(long)]
        reason: String,
        /// Retrying will not help: fail it for good
        #[arg(long)]
        no_retry: bool,
    },
}

fn text_or_stdin(s: String) -> anyhow::Result<String> {
    if s == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        return Ok(buf);
    }
    Ok(s)
}

fn duration_secs(s: &str, what: &str) -> anyhow::Result<f64> {
    let ms = mesh_proto::units::parse_duration_ms(s).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(ms as f64 / 1000.0)
}

fn data_field(key: &str, s: String) -> (String, Value) {
    match serde_json::from_str::<Value>(&s) {
        Ok(v) if !s.trim().is_empty() => (key.to_string(), v),
        _ => (format!("{key}_text"), Value::String(s)),
    }
}

pub fn run(args: TaskArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.node);
    match args.cmd {
        TaskCmd::Submit {
            payload,
            id,
            caps,
            priority,
            deps,
            timeout,
            retries,
            strategy,
            zone,
            queue,
            idempotency_key,
            wait,
        } => {
            let payload = text_or_stdin(payload)?;
            let mut body = json!({
                "id": id, "caps": caps, "priority": priority, "deps": deps, "retries": retries,
                "strategy": strategy, "zone": zone, "queue": queue, "idempotency_key": idempotency_key,
            });
            if let Some(t) = timeout {
                body["timeout_secs"] = json!(duration_secs(&t, "--timeout")?);
            }
            if !payload.is_empty() {
                let (k, v) = data_field("payload", payload);
                body[k] = v;
            }
            let r = api.post_json("/v1/tasks", &body)?;
            let id = r["tasks"][0]["id"].as_str().unwrap_or("?").to_string();
            if !wait {
                println!("{id}");
                return Ok(());
            }
            wait_for(&api, &id, 300.0)
        }
        TaskCmd::List {
            state,
            agent,
            limit,
            json,
        } => {
            let mut q = vec![];
            if let Some(s) = state {
                q.push(format!("state={}", segment(&s)));
            }
            if let Some(a) = agent {
                q.push(format!("agent={}", segment(&a)));
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            let r = api.get(&format!("/v1/tasks?{}", q.join("&")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "{:<22} {:<12} {:<9} {:<11} {:<16} {:>7}",
                "id", "state", "priority", "strategy", "agent", "attempt"
            );
            for t in r["tasks"].as_array().into_iter().flatten() {
                println!(
                    "{:<22} {:<12} {:<9} {:<11} {:<16} {:>7}{}",
                    t["id"].as_str().unwrap_or("?"),
                    t["state"].as_str().unwrap_or("?"),
                    t["priority"].as_str().unwrap_or("?"),
                    t["strategy"].as_str().unwrap_or("?"),
                    t["agent"].as_str().unwrap_or("-"),
                    t["attempt"],
                    t["unroutable"]
                        .as_str()
                        .map(|u| format!("  unroutable: {u}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        TaskCmd::Show { id } => {
            let r = api.get(&format!("/v1/tasks/{}", segment(&id)))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        TaskCmd::Wait { id, timeout } => wait_for(&api, &id, duration_secs(&timeout, "--timeout")?),
        TaskCmd::Cancel { id, reason } => {
            let r = api.post_json(
                &format!("/v1/tasks/{}/cancel", segment(&id)),
                &json!({ "reason": reason }),
            )?;
            for c in r["cancelled"].as_array().into_iter().flatten() {
                println!("cancelled {}", c.as_str().unwrap_or("?"));
            }
            Ok(())
        }
        TaskCmd::Claim {
            agent,
            max,
            wait,
            lease,
        } => {
            let lease_ms = mesh_proto::units::parse_duration_ms(&lease)
                .map_err(|e| anyhow::anyhow!("--lease: {e}"))?;
            let r = api.post_json(
                "/v1/tasks/claim",
                &json!({"agent": agent, "max": max, "wait": duration_secs(&wait, "--wait")?, "lease_ms": lease_ms}),
            )?;
            for t in r["tasks"].as_array().into_iter().flatten() {
                println!("{t}");
            }
            Ok(())
        }
        TaskCmd::Complete {
            id,
            agent,
            attempt,
            result,
        } => {
            let result = text_or_stdin(result)?;
            let mut body = json!({"agent": agent, "attempt": attempt});
            if !result.is_empty() {
                let (k, v) = data_field("result", result);
                body[k] = v;
            }
            api.post_json(&format!("/v1/tasks/{}/complete", segment(&id)), &body)?;
            println!("completed {id}");
            Ok(())
        }
        TaskCmd::Settings {
            strategy,
            hash_replicas,
        } => {
            let r = if strategy.is_none() && hash_replicas.is_none() {
                api.get("/v1/tasks/settings")?
            } else {
                api.put_json(
                    "/v1/tasks/settings",
                    &json!({"strategy": strategy, "hash_replicas": hash_replicas}),
                )?
            };
            println!(
                "default strategy {}; hash replicas {}",
                r["strategy"].as_str().unwrap_or("?"),
                r["hash_replicas"]
            );
            Ok(())
        }
        TaskCmd::Fail {
            id,
            agent,
            attempt,
            reason,
            no_retry,
        } => {
            let r = api.post_json(
                &format!("/v1/tasks/{}/fail", segment(&id)),
                &json!({"agent": agent, "attempt": attempt, "reason": reason, "retryable": !no_retry}),
            )?;
            println!("{id} is now {}", r["state"].as_str().unwrap_or("?"));
            Ok(())
        }
    }
}

/// Long-polls until the task ended; prints it; exit status 1 unless it completed.
fn wait_for(api: &Api, id: &str, timeout_secs: f64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(timeout_secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let wait = left.as_secs_f64().min(30.0);
        let r = api.get(&format!("/v1/tasks/{}?wait={wait:.3}", segment(id)))?;
        let state = r["state"].as_str().unwrap_or("?").to_string();
        let ended = matches!(
            state.as_str(),
            "completed" | "failed" | "dead_letter" | "cancelled"
        );
        if ended || left.is_zero() {
            println!("{}", serde_json::to_string_pretty(&r)?);
            if state != "completed" {
                anyhow::bail!("task {id} is {state}");
            }
            return Ok(());
        }
    }
}
