//! `mesh agent register|list|state`: agents and their keys.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::api::{Api, DEFAULT_NODE, segment};

#[derive(Args)]
pub struct AgentArgs {
    /// The node's HTTP URL
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE, global = true)]
    node: String,
    /// Where agents' secret keys are kept [default: ~/.config/agent-mesh/keys]
    #[arg(long, env = "MESH_KEYS_DIR", global = true)]
    keys_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: AgentCmd,
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Register an agent (creates its ed25519 key here unless it exists)
    Register {
        id: String,
        /// The agent's type (coder, reviewer, ...)
        #[arg(long = "type")]
        kind: String,
        /// Capabilities, comma-separated
        #[arg(long, value_delimiter = ',')]
        caps: Vec<String>,
        /// The node that hosts it [default: the node you talk to]
        #[arg(long)]
        host: Option<String>,
    },
    /// List agents
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set an agent's state: ACTIVE, WAITING or COMPLETE
    State { id: String, state: String },
}

pub fn keys_dir(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(crate::keys::default_dir)
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.node);
    match args.cmd {
        AgentCmd::Register {
            id,
            kind,
            caps,
            host,
        } => {
            let dir = keys_dir(args.keys_dir);
            let (key, created) = crate::keys::load_or_create(&dir, &id)?;
            let body = json!({
                "id": id, "type": kind, "caps": caps, "node": host,
                "public_key": mesh_proto::hex::encode(key.verifying_key().as_bytes()),
            });
            let a = api.post_json("/v1/agents", &body)?;
            println!(
                "agent {} registered on node {} ({} key in {})",
                a["id"].as_str().unwrap_or("?"),
                a["node"].as_str().unwrap_or("?"),
                if created { "new" } else { "existing" },
                dir.display()
            );
        }
        AgentCmd::List { json } => {
            let r = api.get("/v1/agents")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<12} {:<10} {:<16} {:<24} NODE DEAD",
                "ID", "TYPE", "STATE", "NODE", "CAPS"
            );
            for a in r["agents"].as_array().into_iter().flatten() {
                let caps: Vec<&str> = a["caps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str())
                    .collect();
                println!(
                    "{:<20} {:<12} {:<10} {:<16} {:<24} {}",
                    a["id"].as_str().unwrap_or("?"),
                    a["type"].as_str().unwrap_or("?"),
                    a["state"].as_str().unwrap_or("?"),
                    a["node"].as_str().unwrap_or("?"),
                    if caps.is_empty() {
                        "-".to_string()
                    } else {
                        caps.join(",")
                    },
                    if a["node_dead_at_ms"].is_null() {
                        "no"
                    } else {
                        "yes"
                    },
                );
            }
        }
        AgentCmd::State { id, state } => {
            let a = api.put_json(
                &format!("/v1/agents/{}/state", segment(&id)),
                &json!({"state": state}),
            )?;
            println!(
                "agent {} is {}",
                a["id"].as_str().unwrap_or("?"),
                a["state"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}
