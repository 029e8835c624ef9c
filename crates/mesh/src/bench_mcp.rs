//! `mesh bench mcp`: the round trip of MCP tool calls through `mesh mcp` over
//! stdio, as an LLM client makes them, against a mesh of real node processes;
//! beside it, the HTTP call each tool makes, so the MCP layer's own share shows.
//!
//! The client here speaks newline-delimited JSON-RPC 2.0 (the stdio transport
//! of the MCP specification) itself: `initialize`, `notifications/initialized`,
//! then `tools/call` one at a time, each timed from writing the request to
//! reading its response.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use mesh_cli::cluster::{Cluster, wait_for};

#[derive(Args)]
pub struct McpBench {
    /// Nodes of the mesh
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Calls per tool
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct CallStats {
    what: String,
    calls: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

fn stats(what: &str, mut v: Vec<f64>) -> CallStats {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize]);
    CallStats {
        what: what.to_string(),
        calls: v.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

struct Client {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    next_id: u64,
}

impl Client {
    fn start(exe: &Path, node: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args(["mcp", "--node", node])
            .env("MESH_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let mut c = Client {
            child,
            out,
            next_id: 0,
        };
        c.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "mesh-bench", "version": "1"}}),
        )?;
        c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(c)
    }

    fn send(&mut self, v: &Value) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{v}")?;
        stdin.flush()?;
        Ok(())
    }

    fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line)? == 0 {
                anyhow::bail!("mesh mcp closed its output");
            }
            let v: Value = serde_json::from_str(&line)?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    anyhow::bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    fn tool(&mut self, name: &str, args: Value) -> anyhow::Result<f64> {
        let t = Instant::now();
        let r = self.request("tools/call", json!({"name": name, "arguments": args}))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if r["isError"] == true {
            anyhow::bail!("{name} failed: {r}");
        }
        Ok(ms)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(exe: &Path, args: McpBench) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 || args.calls == 0 {
        anyhow::bail!("--nodes must be 1 to 9 and --calls at least 1");
    }
    let mut c = Cluster::new(exe, "lan", "bench-mcp")?;
    let first = c.spawn("c0", &[])?;
    let seed = c.info(first).gossip;
    for i in 1..args.nodes {
        c.spawn(&format!("c{i}"), &[seed])?;
    }
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        c.converged() && c.raft_leader().is_some()
    })
    .ok_or_else(|| anyhow::anyhow!("the mesh did not form within 30 s"))?;
    let node = format!("http://{}", c.info(0).http);
    let mut client = Client::start(exe, &node)?;
    // Warm up both paths.
    for i in 0..20 {
        client.tool("swarm_status", json!({}))?;
        client.tool(
            "memory_usage",
            json!({"action": "store", "namespace": "bench", "key": format!("w{i}"), "value": "v"}),
        )?;
    }
    let mut status = Vec::new();
    let mut store = Vec::new();
    for i in 0..args.calls {
        status.push(client.tool("swarm_status", json!({}))?);
        store.push(client.tool(
            "memory_usage",
            json!({"action": "store", "namespace": "bench", "key": format!("k{i}"), "value": "measured"}),
        )?);
    }
    // The HTTP calls those tools make, from this process.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut http_status = Vec::new();
    let mut http_store = Vec::new();
    for i in 0..args.calls {
        let t = Instant::now();
        agent
            .get(format!("{node}/v1/status"))
            .call()?
            .body_mut()
            .read_to_string()?;
        http_status.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        agent
            .put(format!("{node}/v1/kv/bench/h{i}"))
            .send("measured")?
            .body_mut()
            .read_to_string()?;
        http_store.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(client);
    c.stop_all();
    let rows = [
        stats("MCP swarm_status", status),
        stats("HTTP GET /v1/status", http_status),
        stats("MCP memory_usage store", store),
        stats("HTTP PUT /v1/kv (same write)", http_store),
    ];
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "MCP tool calls over stdio through `mesh mcp`, {} nodes, {} calls each (one at a time)",
        args.nodes, args.calls
    );
    let f = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.3}"));
    println!("{:<32} {:>10} {:>10}", "", "p50 ms", "p99 ms");
    for r in &rows {
        println!("{:<32} {:>10} {:>10}", r.what, f(r.p50_ms), f(r.p99_ms));
    }
    for (mcp, http) in [(&rows[0], &rows[1]), (&rows[2], &rows[3])] {
        if let (Some(a), Some(b)) = (mcp.p50_ms, http.p50_ms) {
            println!(
                "{}: MCP adds {:.3} ms at p50 ({:.2}x the HTTP call)",
                mcp.what,
                a - b,
                a / b
            );
        }
    }
    Ok(())
}
