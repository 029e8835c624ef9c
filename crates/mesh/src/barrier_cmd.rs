//! `mesh barrier wait`: block until agents are COMPLETE (pushed by the node, not polled).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::{Api, DEFAULT_NODE, segment};

#[derive(Args)]
pub struct BarrierArgs {
    /// The node's HTTP URL
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE, global = true)]
    node: String,
    #[command(subcommand)]
    cmd: BarrierCmd,
}

#[derive(Subcommand)]
enum BarrierCmd {
    /// Wait until the barrier is released (creating it first if a spec is given and it does not exist)
    Wait {
        id: String,
        /// Agents that must all be COMPLETE, comma-separated
        #[arg(long, value_delimiter = ',', conflicts_with = "group")]
        agents: Option<Vec<String>>,
        /// TYPE:COUNT: at least COUNT agents of TYPE COMPLETE
        #[arg(long)]
        group: Option<String>,
        /// Give up after this long (exit status 2)
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Show a barrier
    Show { id: String },
}

/// GETs `path` with `wait=` in chunks of at most 5 minutes until `done` or
/// `total_ms` passed. Each request blocks on the node until something happens.
pub fn long_poll(
    api: &Api,
    path: &str,
    total_ms: u64,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let until = Instant::now() + Duration::from_millis(total_ms);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let chunk = left.min(Duration::from_secs(300)).as_secs_f64();
        let v = api.get(&format!("{path}?wait={chunk:.3}"))?;
        if done(&v) || Instant::now() >= until {
            return Ok(v);
        }
    }
}

pub fn run(args: BarrierArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.node);
    match args.cmd {
        BarrierCmd::Wait {
            id,
            agents,
            group,
            timeout,
        } => {
            let timeout_ms = mesh_proto::units::parse_duration_ms(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
            let spec = match (agents, group) {
                (Some(a), None) => Some(json!({"id": id, "agents": a})),
                (None, Some(g)) => {
                    let (kind, count) = g
                        .rsplit_once(':')
                        .ok_or_else(|| anyhow::anyhow!("--group {g}: expected TYPE:COUNT"))?;
                    let count: usize = count
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--group {g}: COUNT must be a number"))?;
                    Some(json!({"id": id, "group": {"type": kind, "count": count}}))
                }
                _ => None,
            };
            if let Some(spec) = spec
                && let Err(e) = api.post_json("/v1/barriers", &spec)
            {
                // An existing barrier is fine: wait on it.
                match e.downcast_ref::<crate::api::ApiError>() {
                    Some(a) if a.status == 409 => {}
                    _ => return Err(e),
                }
            }
            let started = Instant::now();
            let b = long_poll(
                &api,
                &format!("/v1/barriers/{}", segment(&id)),
                timeout_ms,
                |v| v["released"] == true,
            )?;
            if b["released"] == true {
                println!(
                    "barrier {id} released after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                eprintln!(
                    "barrier {id} not released within {timeout}; waiting for {}",
                    b["waiting_for"]
                );
                std::process::exit(2);
            }
        }
        BarrierCmd::Show { id } => {
            let b = api.get(&format!("/v1/barriers/{}", segment(&id)))?;
            println!("{}", serde_json::to_string_pretty(&b)?);
        }
    }
    Ok(())
}
