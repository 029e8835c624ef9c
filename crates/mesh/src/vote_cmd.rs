//! `mesh vote propose|cast|show`: proposals decided by signed votes.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::{Api, DEFAULT_NODE, segment};

#[derive(Args)]
pub struct VoteArgs {
    /// The node's HTTP URL
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE, global = true)]
    node: String,
    /// Where agents' secret keys are kept [default: ~/.config/agent-mesh/keys]
    #[arg(long, env = "MESH_KEYS_DIR", global = true)]
    keys_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: VoteCmd,
}

#[derive(Subcommand)]
enum VoteCmd {
    /// Open a proposal
    Propose {
        /// What is proposed, as JSON (a bare word is taken as a string)
        #[arg(long)]
        body: String,
        /// Proposal id [default: generated]
        #[arg(long)]
        id: Option<String>,
        /// Eligible voters, comma-separated [default: every registered agent]
        #[arg(long, value_delimiter = ',')]
        voters: Option<Vec<String>>,
        /// Fraction of eligible voters needed [default: 2/3]
        #[arg(long)]
        threshold: Option<f64>,
        /// Voting window [default: 5m]
        #[arg(long)]
        deadline: Option<String>,
        /// Who proposes (an agent id)
        #[arg(long)]
        proposer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Cast a vote, signed with the agent's key
    Cast {
        proposal: String,
        /// approve or reject
        #[arg(value_parser = ["approve", "reject"])]
        vote: String,
        /// The voting agent (its key must be in the key directory)
        #[arg(long)]
        agent: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a proposal (with --wait, block until it is decided)
    Show {
        proposal: String,
        /// Wait up to this long for a decision (e.g. 30s; at most 5m per request)
        #[arg(long)]
        wait: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn summary(p: &Value) -> String {
    format!(
        "proposal {}: {} ({} approve, {} reject of {} voters; {} needed){}",
        p["id"].as_str().unwrap_or("?"),
        p["status"].as_str().unwrap_or("?"),
        p["approvals"],
        p["rejections"],
        p["voters"].as_array().map(|v| v.len()).unwrap_or(0),
        p["needed"],
        match p["decision_latency_ms"].as_u64() {
            Some(ms) => format!(
                ", decided in {ms} ms, participation {:.0}%",
                p["participation"].as_f64().unwrap_or(0.0) * 100.0
            ),
            None => String::new(),
        }
    )
}

fn print(p: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(p)?);
    } else {
        println!("{}", summary(p));
    }
    Ok(())
}

pub fn run(args: VoteArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.node);
    match args.cmd {
        VoteCmd::Propose {
            body,
            id,
            voters,
            threshold,
            deadline,
            proposer,
            json,
        } => {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
            let deadline_secs = match deadline {
                Some(d) => Some(
                    crate::kv_cmd::ttl_secs(&d).map_err(|e| anyhow::anyhow!("--deadline: {e}"))?,
                ),
                None => None,
            };
            let req = json!({
                "id": id, "body": body, "voters": voters, "threshold": threshold,
                "deadline_secs": deadline_secs, "proposer": proposer,
            });
            print(&api.post_json("/v1/proposals", &req)?, json)?;
        }
        VoteCmd::Cast {
            proposal,
            vote,
            agent,
            reason,
            json,
        } => {
            let key = crate::keys::load(&crate::agent_cmd::keys_dir(args.keys_dir), &agent)?;
            // A later vote replaces an earlier one only with a higher seq: the clock gives one.
            let seq = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
            let approve = vote == "approve";
            let signature =
                crate::keys::sign_vote(&key, &proposal, &agent, approve, reason.as_deref(), seq);
            let req = json!({"agent_id": agent, "vote": vote, "reason": reason, "seq": seq, "signature": signature});
            let p = api.post_json(&format!("/v1/proposals/{}/votes", segment(&proposal)), &req)?;
            print(&p, json)?;
        }
        VoteCmd::Show {
            proposal,
            wait,
            json,
        } => {
            let path = format!("/v1/proposals/{}", segment(&proposal));
            let p = match wait {
                None => api.get(&path)?,
                Some(w) => {
                    let ms = mesh_proto::units::parse_duration_ms(&w)
                        .map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
                    crate::barrier_cmd::long_poll(&api, &path, ms, |v| v["status"] != "open")?
                }
            };
            print(&p, json)?;
        }
    }
    Ok(())
}
