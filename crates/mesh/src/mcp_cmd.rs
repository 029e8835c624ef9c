//! `mesh mcp [--node URL]`: the MCP server on stdio, attached to a node.
//!
//! The tools live in `mesh_api::mcp`; here they get their backend: this node's
//! HTTP API through the CLI's client (blocking, so each call runs on tokio's
//! blocking pool). Logs go to stderr; stdout carries only MCP messages.

use std::sync::Arc;

use clap::Args;
use mesh_api::mcp::{Backend, Request};

use crate::api::{Api, DEFAULT_NODE};

#[derive(Args)]
pub struct McpArgs {
    /// The node's HTTP URL (any node of the mesh)
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE)]
    node: String,
}

pub fn run(args: McpArgs) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&args.node));
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
    rt.block_on(mesh_api::mcp::serve_stdio(backend))
}
