//! `mesh mcp [--node URL]`: the MCP server on stdio, attached to a node.
//!
//! The tools live in `mesh_api::mcp`; here they get their backend: this node's
//! HTTP API through the CLI's client (blocking, so each call runs on tokio's
//! blocking pool). Logs go to stderr; stdout carries only MCP messages.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use clap::Args;
use mesh_api::mcp::{Backend, Host, Request};

use crate::api::{Api, DEFAULT_NODE};

#[derive(Args)]
pub struct McpArgs {
    /// The node's HTTP URL (any node of the mesh)
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE)]
    node: String,
    /// Where agents' secret keys are kept [default: ~/.config/agent-mesh/keys]
    #[arg(long, env = "MESH_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
}

/// Keys in the key directory; workers as `mesh worker` child processes of
/// this server, attached to the same node, with no stdio of their own.
struct LocalHost {
    node: String,
    keys: PathBuf,
}

impl Host for LocalHost {
    fn agent_key(&self, agent: &str) -> Result<String, String> {
        let (key, _) =
            crate::keys::load_or_create(&self.keys, agent).map_err(|e| format!("{e:#}"))?;
        Ok(mesh_proto::hex::encode(key.verifying_key().as_bytes()))
    }

    fn sign_vote(
        &self,
        proposal: &str,
        agent: &str,
        approve: bool,
        reason: Option<&str>,
        seq: u64,
    ) -> Result<String, String> {
        let key = crate::keys::load(&self.keys, agent).map_err(|e| format!("{e:#}"))?;
        Ok(crate::keys::sign_vote(
            &key, proposal, agent, approve, reason, seq,
        ))
    }

    fn spawn_worker(
        &self,
        agent: &str,
        kind: &str,
        caps: &[String],
        command: &str,
        slots: u32,
    ) -> Result<u32, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the mesh binary: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "worker", "--node", &self.node, "--id", agent, "--type", kind,
        ])
        .args(["--slots", &slots.to_string(), "--exec", command])
        .arg("--keys-dir")
        .arg(&self.keys)
        // Detached from this server's stdio: stdout carries MCP, and a
        // worker that outlives the server must not hold its client's pipes.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if !caps.is_empty() {
            cmd.args(["--caps", &caps.join(",")]);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))?;
        let pid = child.id();
        // Reaped when it ends; it outlives this server (the agent's work goes on).
        std::thread::spawn(move || child.wait());
        Ok(pid)
    }
}

pub fn run(args: McpArgs) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&args.node));
    let host: Arc<dyn Host> = Arc::new(LocalHost {
        node: args.node.clone(),
        keys: crate::agent_cmd::keys_dir(args.keys_dir.clone()),
    });
    let backend: Backend = Arc::new(move |req: Request| {
        let api = api.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let r = match (req.method, req.body) {
                    ("GET", _) => api.get(&req.path),
                    (m, body) => {
                        let ct = if req.raw {
                            "application/octet-stream"
                        } else {
                            "application/json"
                        };
                        api.send(m, &req.path, body.as_deref().unwrap_or_default(), ct, None)
                    }
                };
                r.map_err(|e| format!("{e:#}"))
            })
            .await
            .map_err(|e| format!("the call did not finish: {e}"))?
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(mesh_api::mcp::serve_stdio(backend, host))
}
