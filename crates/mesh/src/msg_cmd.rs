//! `mesh msg publish|send|listen|receipt`: pub/sub and direct messages from
//! the command line, through a node's HTTP API.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::{Api, DEFAULT_NODE};

#[derive(Args)]
pub struct MsgArgs {
    /// The node's HTTP URL (any node: messages reach the whole mesh)
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE, global = true)]
    node: String,
    #[command(subcommand)]
    cmd: MsgCmd,
}

#[derive(Subcommand)]
enum MsgCmd {
    /// Publish on a channel to subscribers on every node; prints how many got it
    Publish {
        channel: String,
        /// The message (text; with --json, a JSON value)
        message: String,
        #[arg(long)]
        json: bool,
        /// Sender name subscribers see (default: cli)
        #[arg(long, default_value = "cli")]
        from: String,
    },
    /// Send a direct message to agent:<id>, node:<name> or all; prints the receipt
    Send {
        to: String,
        message: String,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cli")]
        from: String,
        /// How long it may wait for an absent recipient (30s, 10m; default 60s)
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Subscribe and print each message as a JSON line (patterns: jobs.*,
    /// mesh.* for the mesh's own events, inbox.agent.<id> for an agent's mail)
    Listen {
        #[arg(required = true)]
        patterns: Vec<String>,
        /// Stop after this many messages
        #[arg(long)]
        count: Option<usize>,
    },
    /// The current receipt of a direct message sent through this node
    Receipt { id: u64 },
}

fn message(text: String, json: bool) -> anyhow::Result<Value> {
    if json {
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--json: the message is not JSON: {e}"))
    } else {
        Ok(Value::String(text))
    }
}

pub fn run(args: MsgArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.node);
    let out = match args.cmd {
        MsgCmd::Publish {
            channel,
            message: m,
            json,
            from,
        } => api.post_json(
            "/v1/publish",
            &json!({"channel": channel, "message": message(m, json)?, "from": from}),
        )?,
        MsgCmd::Send {
            to,
            message: m,
            json,
            from,
            ttl,
        } => {
            let mut body = json!({"to": to, "message": message(m, json)?, "from": from});
            if let Some(t) = ttl {
                let ms = mesh_proto::units::parse_duration_ms(&t)
                    .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
                body["ttl_ms"] = json!(ms);
            }
            api.post_json("/v1/messages", &body)?
        }
        MsgCmd::Listen { patterns, count } => {
            for p in &patterns {
                if p.contains(',') {
                    anyhow::bail!("pattern '{p}' has a comma; give patterns as separate arguments");
                }
            }
            let path = format!(
                "/v1/events?channels={}",
                mesh_proto::url::segment(&patterns.join(","))
            );
            let mut seen = 0;
            for ev in api.events(&path)? {
                if ev.get("channel").is_none() {
                    continue; // the "subscribed" greeting
                }
                println!("{ev}");
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
            return Ok(());
        }
        MsgCmd::Receipt { id } => api.get(&format!("/v1/messages/{id}"))?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
