//! The MCP server (`mesh mcp`): the tools mesh-coordinator agents call, doing
//! the real thing on a live mesh and returning measured values only.
//!
//! It runs beside a node, not inside it: every tool is a call on that node's
//! HTTP API (the [`Backend`]), so the MCP server decides nothing the HTTP API
//! does not. Tool names and argument names are the ones those agents already
//! use (`swarm_init`, `memory_usage`, `maxAgents`, ...). A failure the caller
//! can act on (a bad argument, a missing key, a node that refuses) is an MCP
//! tool error with the node's readable message; only a broken server is a
//! protocol error. rmcp churns: all of it stays in this module.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::url::segment;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData as McpError, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

/// One call on the node's HTTP API.
pub struct Request {
    /// The HTTP method: `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// Path and query, e.g. `/v1/kv/notes/a?ttl=60`.
    pub path: String,
    /// A JSON body, or raw bytes (`raw`) for a value to store.
    pub body: Option<Vec<u8>>,
    /// Whether `body` is raw bytes (sent as `application/octet-stream`)
    /// rather than JSON.
    pub raw: bool,
}

/// The node's HTTP API: the reply's JSON (a raw read returns its text as a
/// JSON string), or the node's error message.
pub type Backend = Arc<
    dyn Fn(Request) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send>> + Send + Sync,
>;

/// What the MCP server needs from the machine it runs on: agents' secret keys
/// (kept there, never sent to a node) and starting worker processes.
pub trait Host: Send + Sync + 'static {
    /// The agent's public key (hex), creating its key pair if it has none.
    fn agent_key(&self, agent: &str) -> Result<String, String>;
    /// A vote signed with the agent's key: the signature (hex).
    fn sign_vote(
        &self,
        proposal: &str,
        agent: &str,
        approve: bool,
        reason: Option<&str>,
        seq: u64,
    ) -> Result<String, String>;
    /// Starts a `mesh worker` for the agent (it registers itself); its pid.
    fn spawn_worker(
        &self,
        agent: &str,
        kind: &str,
        caps: &[String],
        command: &str,
        slots: u32,
    ) -> Result<u32, String>;
}

fn ok(v: Value) -> Result<CallToolResult, McpError> {
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn tool_error(message: impl Into<String>) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(message)]))
}

/// The node's reply as the tool's result, or its refusal as a tool error.
fn reply(r: Result<Value, String>) -> Result<CallToolResult, McpError> {
    match r {
        Ok(v) => ok(v),
        Err(e) => tool_error(e),
    }
}

/// The server: a backend and the tools.
#[derive(Clone)]
pub struct MeshMcp {
    backend: Backend,
    host: Arc<dyn Host>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwarmInit {
    /// The topology: only `mesh` (every node is client and server) exists here.
    pub topology: String,
    /// Most agents expected (reported back; the mesh does not cap registrations by it).
    #[serde(rename = "maxAgents")]
    pub max_agents: Option<u32>,
    /// The mesh's default task routing strategy: capability, hash, auction or steal.
    pub strategy: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwarmMonitor {
    /// Seconds between samples (0.1 to 10, default 1).
    pub interval: Option<f64>,
    /// Seconds to sample for (at most 60, default 5).
    pub duration: Option<f64>,
    /// Which figures to keep per sample (default all): members, health, consensus, tasks.
    pub metrics: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskOrchestrate {
    /// What to do: the task's payload (text, or any JSON value).
    pub task: Value,
    /// Task id (default: made up by the mesh).
    pub id: Option<String>,
    /// Routing: capability, hash, auction or steal (default: the mesh's).
    pub strategy: Option<String>,
    /// low, medium, high or critical.
    pub priority: Option<String>,
    /// Ids of tasks that must complete first.
    pub dependencies: Option<Vec<String>>,
    /// Capabilities the agent must offer (`rust`, or weighted `gpu=3`).
    pub capabilities: Option<Vec<String>>,
    /// Seconds before an attempt is given up (default 300).
    pub timeout_secs: Option<u64>,
    /// A second submit with the same key returns the first task.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskStatus {
    /// The task's id; without it, the most recent tasks (optionally by state).
    #[serde(rename = "taskId")]
    pub task_id: Option<String>,
    /// For a list: pending, ready, assigned, running, completed, failed, dead_letter, cancelled.
    pub state: Option<String>,
    /// For a list: how many (default 100).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskResults {
    /// The task's id.
    #[serde(rename = "taskId")]
    pub task_id: String,
    /// Seconds to wait for the task to end (at most 60, default 0).
    pub wait: Option<f64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemoryUsage {
    /// store, retrieve, list, delete or search.
    pub action: String,
    /// The key (store, retrieve, delete).
    pub key: Option<String>,
    /// The value to store (text; other JSON is stored as its JSON text).
    pub value: Option<Value>,
    /// The namespace (default `default`); the key is `namespace:key` in the Redis keyspace.
    pub namespace: Option<String>,
    /// Seconds to keep a stored value.
    pub ttl: Option<u64>,
    /// For search: a glob over keys (`agent-*`); for list: a prefix.
    pub pattern: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArgs {}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentSpawn {
    /// The agent's type (coder, reviewer, tester, ...).
    #[serde(rename = "type")]
    pub r#type: String,
    /// Its id (default: the type and a unique suffix).
    pub name: Option<String>,
    /// Capabilities it offers (`rust`, `gpu`, ...).
    pub capabilities: Option<Vec<String>>,
    /// A shell command to run for each task: starts a `mesh worker` process for the agent.
    pub command: Option<String>,
    /// Tasks the worker runs at once (default 1).
    pub slots: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DaaConsensus {
    /// propose, vote or status.
    pub action: String,
    /// propose: what is decided (text or any JSON).
    pub proposal: Option<Value>,
    /// propose: the voting agents (default: every registered agent).
    pub agents: Option<Vec<String>>,
    /// propose: share of voters needed, 0 to 1 (default: two thirds).
    pub threshold: Option<f64>,
    /// propose: seconds until it expires undecided.
    pub deadline: Option<u64>,
    /// The proposal (vote, status; optional id for propose).
    pub proposal_id: Option<String>,
    /// vote: the voting agent (its key must be on this machine).
    pub agent: Option<String>,
    /// vote: approve or reject.
    pub vote: Option<String>,
    /// vote: why.
    pub reason: Option<String>,
    /// status: seconds to wait for the decision (at most 60).
    pub wait: Option<f64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DaaCommunication {
    /// Who sends it (an agent id, or any name subscribers will see).
    pub from: String,
    /// The recipient: an agent id (or `agent:<id>`), `node:<name>`, or `all`.
    pub to: String,
    /// The message: text, or any JSON value.
    pub message: Value,
    /// Seconds it may wait for an absent recipient (default 60).
    pub ttl: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DaaFaultTolerance {
    /// The agent.
    #[serde(rename = "agentId")]
    pub agent_id: String,
    /// heartbeat_monitor: its liveness as the mesh sees it; failover_recovery:
    /// move its running and queued tasks to other agents now.
    pub strategy: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PerformanceReport {
    /// How far back: `5m`, `1h`, `24h` or seconds (default `1h`; 24 h are kept).
    pub timeframe: Option<String>,
    /// summary (text), detailed (text with every sample) or json.
    pub format: Option<String>,
}

/// Seconds in a timeframe like `90s`, `5m`, `1h`, `24h`, `1d` or `300`.
fn timeframe_secs(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("timeframe '{t}': a number with s, m, h or d (5m, 1h, 24h)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("timeframe '{t}': the unit is s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(s) if s > 0 => Ok(s),
        _ => Err(format!("timeframe '{t}' is not a positive duration")),
    }
}

/// Per figure of the history: samples that measured it, min, mean, max,
/// latest; `null` (and `"not measured"`) for a figure no sample measured.
fn summarize(samples: &[Value]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Some(first) = samples.first().and_then(Value::as_object) else {
        return out;
    };
    for key in first
        .keys()
        .filter(|k| !["at_unix_ms", "current"].contains(&k.as_str()))
    {
        let vals: Vec<f64> = samples
            .iter()
            .filter_map(|s| match &s[key] {
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                v => v.as_f64(),
            })
            .collect();
        let entry = if vals.is_empty() {
            json!({"measured": 0, "min": null, "mean": null, "max": null, "latest": null, "note": "not measured"})
        } else {
            let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            json!({"measured": vals.len(), "min": min, "mean": mean, "max": max, "latest": vals.last()})
        };
        out.insert(key.clone(), entry);
    }
    out
}

fn report_text(
    node: &Value,
    secs: u64,
    samples: &[Value],
    figures: &serde_json::Map<String, Value>,
) -> String {
    let mut t = format!(
        "Performance of node {} over the last {secs} s: {} samples (one every 5 s).\n",
        node.as_str().unwrap_or("?"),
        samples.len()
    );
    for (k, v) in figures {
        if v["measured"] == 0 {
            t.push_str(&format!("  {k}: null (not measured)\n"));
        } else {
            let f = |x: &Value| x.as_f64().map_or("null".into(), |x| format!("{x:.3}"));
            t.push_str(&format!(
                "  {k}: min {} mean {} max {} latest {} ({} samples)\n",
                f(&v["min"]),
                f(&v["mean"]),
                f(&v["max"]),
                f(&v["latest"]),
                v["measured"]
            ));
        }
    }
    t
}

impl MeshMcp {
    async fn call(
        &self,
        method: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<Value, String> {
        (self.backend)(Request {
            method,
            path,
            body: body.map(|b| b.to_string().into_bytes()),
            raw: false,
        })
        .await
    }
}

#[tool_router]
impl MeshMcp {
    /// A server whose tools call the node through `backend` and use `host`
    /// for keys and worker processes.
    pub fn new(backend: Backend, host: Arc<dyn Host>) -> Self {
        MeshMcp { backend, host }
    }

    #[tool(
        description = "Registers an agent (type, capabilities; its ed25519 key is created and kept on this machine). With `command`, also starts a real `mesh worker` process for it that runs that shell command for each task it claims."
    )]
    async fn agent_spawn(
        &self,
        Parameters(p): Parameters<AgentSpawn>,
    ) -> Result<CallToolResult, McpError> {
        let id = p.name.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            format!("{}-{t:x}", p.r#type)
        });
        let caps = p.capabilities.clone().unwrap_or_default();
        if let Some(cmd) = &p.command {
            let slots = p.slots.unwrap_or(1);
            if slots == 0 || slots > 64 {
                return tool_error(format!("slots {slots} is outside 1 to 64"));
            }
            let pid = match self.host.spawn_worker(&id, &p.r#type, &caps, cmd, slots) {
                Ok(pid) => pid,
                Err(e) => return tool_error(e),
            };
            // The worker registers itself: wait until the mesh knows it.
            let path = format!("/v1/agents/{}?stale=true", segment(&id));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(a) = self.call("GET", path.clone(), None).await {
                    return ok(
                        json!({"agent": a, "worker_pid": pid, "command": cmd, "slots": slots}),
                    );
                }
                if Instant::now() > deadline {
                    return tool_error(format!(
                        "started worker process {pid} for '{id}', but it did not register within 10 s"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let key = match self.host.agent_key(&id) {
            Ok(k) => k,
            Err(e) => return tool_error(e),
        };
        let body = json!({"id": id, "type": p.r#type, "caps": caps, "public_key": key});
        reply(
            self.call("POST", "/v1/agents".into(), Some(body))
                .await
                .map(|a| json!({"agent": a, "worker_pid": null})),
        )
    }

    #[tool(
        description = "Decisions on the replicated log: `propose` (proposal, agents = voters, threshold 0-1, deadline seconds), `vote` (proposal_id, agent, vote approve|reject, reason; signed with the agent's key on this machine), `status` (proposal_id, wait seconds)."
    )]
    async fn daa_consensus(
        &self,
        Parameters(p): Parameters<DaaConsensus>,
    ) -> Result<CallToolResult, McpError> {
        let r = match p.action.as_str() {
            "propose" => {
                let Some(body) = p.proposal.clone() else {
                    return tool_error("action 'propose' needs a proposal");
                };
                let req = json!({
                    "id": p.proposal_id, "body": body, "voters": p.agents,
                    "threshold": p.threshold, "deadline_secs": p.deadline,
                });
                self.call("POST", "/v1/proposals".into(), Some(req)).await
            }
            "vote" => {
                let (Some(pid), Some(agent), Some(vote)) = (&p.proposal_id, &p.agent, &p.vote)
                else {
                    return tool_error("action 'vote' needs proposal_id, agent and vote");
                };
                let approve = match vote.as_str() {
                    "approve" | "yes" | "true" => true,
                    "reject" | "no" | "false" => false,
                    v => return tool_error(format!("vote '{v}': approve or reject")),
                };
                // A later vote replaces an earlier one only with a higher seq.
                let seq = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                let signature =
                    match self
                        .host
                        .sign_vote(pid, agent, approve, p.reason.as_deref(), seq)
                    {
                        Ok(s) => s,
                        Err(e) => return tool_error(e),
                    };
                let req = json!({
                    "agent_id": agent, "vote": if approve { "approve" } else { "reject" },
                    "reason": p.reason, "seq": seq, "signature": signature,
                });
                self.call(
                    "POST",
                    format!("/v1/proposals/{}/votes", segment(pid)),
                    Some(req),
                )
                .await
            }
            "status" => {
                let Some(pid) = &p.proposal_id else {
                    return tool_error("action 'status' needs proposal_id");
                };
                let wait = p.wait.unwrap_or(0.0);
                if !(0.0..=60.0).contains(&wait) {
                    return tool_error(format!("wait {wait} s is outside 0 to 60 s"));
                }
                self.call(
                    "GET",
                    format!("/v1/proposals/{}?wait={wait}", segment(pid)),
                    None,
                )
                .await
            }
            other => {
                return tool_error(format!("unknown action '{other}': propose, vote or status"));
            }
        };
        reply(r)
    }

    #[tool(
        description = "Sends a direct message to an agent (delivered on the node it is registered on, kept in its mailbox until it listens or the ttl ends), a node, or `all`; returns the receipt: per node delivered (with listener count), queued, pending, expired or gone."
    )]
    async fn daa_communication(
        &self,
        Parameters(p): Parameters<DaaCommunication>,
    ) -> Result<CallToolResult, McpError> {
        let to = if p.to == "all" || p.to.starts_with("agent:") || p.to.starts_with("node:") {
            p.to.clone()
        } else {
            format!("agent:{}", p.to)
        };
        let mut body = json!({"to": to, "message": p.message, "from": p.from});
        if let Some(ttl) = p.ttl {
            if ttl == 0 || ttl > 86_400 {
                return tool_error(format!("ttl {ttl} s is outside 1 to 86400 s"));
            }
            body["ttl_ms"] = json!(ttl * 1000);
        }
        reply(self.call("POST", "/v1/messages".into(), Some(body)).await)
    }

    #[tool(
        description = "Fault tolerance for one agent. strategy `heartbeat_monitor`: its liveness as the mesh sees it (agent state, last seen, its node's membership state, who suspects or confirmed it, round trip). `failover_recovery`: moves its running and queued tasks to other agents now and reports which."
    )]
    async fn daa_fault_tolerance(
        &self,
        Parameters(p): Parameters<DaaFaultTolerance>,
    ) -> Result<CallToolResult, McpError> {
        let agent_path = format!("/v1/agents/{}", segment(&p.agent_id));
        match p.strategy.as_str() {
            "heartbeat_monitor" => {
                let agent = match self.call("GET", agent_path, None).await {
                    Ok(a) => a,
                    Err(e) => return tool_error(e),
                };
                let members = match self.call("GET", "/v1/members".into(), None).await {
                    Ok(m) => m,
                    Err(e) => return tool_error(e),
                };
                let node = agent["node"].as_str().unwrap_or_default();
                let member = members["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| m["id"] == node)
                    .cloned()
                    .unwrap_or(Value::Null);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let seen_ago = agent["last_seen_ms"]
                    .as_u64()
                    .map(|t| now.saturating_sub(t));
                let node_state = member["state"].as_str().unwrap_or("unknown");
                ok(json!({
                    "agentId": p.agent_id,
                    "alive": node_state == "alive" && agent["node_dead_at_ms"].is_null(),
                    "agent_state": agent["state"],
                    "last_seen_ms_ago": seen_ago,
                    "node": node,
                    "node_state": node_state,
                    "node_rtt_ms": member["rtt_ms"],
                    "suspected_by": member["suspected_by"],
                    "confirmed_dead_by": member["confirmed_by"],
                    "node_reputation": member["reputation"],
                    "node_dead_at_ms": agent["node_dead_at_ms"],
                }))
            }
            "failover_recovery" => reply(
                self.call(
                    "POST",
                    format!("{agent_path}/failover"),
                    Some(json!({"reason": "failover_recovery through MCP"})),
                )
                .await,
            ),
            other => tool_error(format!(
                "unknown strategy '{other}': heartbeat_monitor or failover_recovery"
            )),
        }
    }

    #[tool(
        description = "Runs one rebalancing round now (queued tasks move from nodes above 80% of their slots to nodes below 30%) and reports every move and each peer's health (state, round trip, load, who suspects it)."
    )]
    async fn topology_optimize(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, McpError> {
        reply(self.call("POST", "/v1/tasks/rebalance".into(), None).await)
    }

    #[tool(
        description = "A performance report from the node's retained history of measured figures (a sample every 5 s, 24 h kept, plus one taken now): per figure min, mean, max and latest over the timeframe; figures never measured are null and say so."
    )]
    async fn performance_report(
        &self,
        Parameters(p): Parameters<PerformanceReport>,
    ) -> Result<CallToolResult, McpError> {
        let secs = match timeframe_secs(p.timeframe.as_deref().unwrap_or("1h")) {
            Ok(s) => s,
            Err(e) => return tool_error(e),
        };
        let format = p.format.as_deref().unwrap_or("summary");
        if !["summary", "detailed", "json"].contains(&format) {
            return tool_error(format!("format '{format}': summary, detailed or json"));
        }
        let h = match self
            .call(
                "GET",
                format!("/v1/metrics/history?seconds={secs}&current=true"),
                None,
            )
            .await
        {
            Ok(h) => h,
            Err(e) => return tool_error(e),
        };
        let samples = h["samples"].as_array().cloned().unwrap_or_default();
        let figures = summarize(&samples);
        let covered = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) => json!(
                (b["at_unix_ms"].as_u64().unwrap_or(0) - a["at_unix_ms"].as_u64().unwrap_or(0))
                    / 1000
            ),
            _ => Value::Null,
        };
        match format {
            "json" => ok(json!({
                "node": h["node"], "timeframe_secs": secs, "covered_secs": covered,
                "samples": samples.len(), "figures": figures,
            })),
            _ => {
                let mut text = report_text(&h["node"], secs, &samples, &figures);
                if format == "detailed" {
                    text.push_str("\nSamples:\n");
                    for s in &samples {
                        text.push_str(&format!("{s}\n"));
                    }
                }
                Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
            }
        }
    }

    #[tool(
        description = "Initialise or join the mesh: checks the topology (only `mesh`), sets the default task routing strategy if given, and returns this node, the members and the settings."
    )]
    async fn swarm_init(
        &self,
        Parameters(p): Parameters<SwarmInit>,
    ) -> Result<CallToolResult, McpError> {
        if p.topology != "mesh" {
            return tool_error(format!(
                "topology '{}' is not available: Agent Mesh has one topology, `mesh` (every node is client and server)",
                p.topology
            ));
        }
        if let Some(s) = &p.strategy
            && let Err(e) = self
                .call(
                    "PUT",
                    "/v1/tasks/settings".into(),
                    Some(json!({"strategy": s})),
                )
                .await
        {
            return tool_error(e);
        }
        let status = match self.call("GET", "/v1/status".into(), None).await {
            Ok(s) => s,
            Err(e) => return tool_error(e),
        };
        let settings = self
            .call("GET", "/v1/tasks/settings".into(), None)
            .await
            .unwrap_or(Value::Null);
        ok(json!({
            "topology": "mesh",
            "node_id": status["node_id"],
            "members": status["members"],
            "leader": status["consensus"]["leader"],
            "maxAgents": p.max_agents,
            "settings": settings,
        }))
    }

    #[tool(
        description = "The mesh as this node sees it now: members and their states, health, consensus (leader, term, commit index), task figures. Measured values; null where not measured."
    )]
    async fn swarm_status(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, McpError> {
        reply(self.call("GET", "/v1/status".into(), None).await)
    }

    #[tool(
        description = "Samples the mesh's status every `interval` seconds for `duration` seconds and returns every sample with the time it was taken (not one snapshot repeated)."
    )]
    async fn swarm_monitor(
        &self,
        Parameters(p): Parameters<SwarmMonitor>,
    ) -> Result<CallToolResult, McpError> {
        let interval = p.interval.unwrap_or(1.0);
        let duration = p.duration.unwrap_or(5.0);
        if !(0.1..=10.0).contains(&interval) {
            return tool_error(format!("interval {interval} s is outside 0.1 to 10 s"));
        }
        if !(0.0..=60.0).contains(&duration) {
            return tool_error(format!("duration {duration} s is outside 0 to 60 s"));
        }
        let keep = p.metrics.unwrap_or_default();
        for m in &keep {
            if !["members", "health", "consensus", "tasks"].contains(&m.as_str()) {
                return tool_error(format!(
                    "unknown metric '{m}': members, health, consensus or tasks"
                ));
            }
        }
        let start = Instant::now();
        let mut samples = Vec::new();
        loop {
            let at = start.elapsed().as_secs_f64();
            let s = match self.call("GET", "/v1/status".into(), None).await {
                Ok(s) => s,
                Err(e) => return tool_error(e),
            };
            let mut sample = json!({"at_secs": at});
            for k in ["members", "health", "consensus", "tasks"] {
                if keep.is_empty() || keep.iter().any(|m| m == k) {
                    sample[k] = s[k].clone();
                }
            }
            samples.push(sample);
            let next = Duration::from_secs_f64(interval * samples.len() as f64);
            if next.as_secs_f64() > duration {
                break;
            }
            tokio::time::sleep(next.saturating_sub(start.elapsed())).await;
        }
        ok(json!({"interval_secs": interval, "duration_secs": duration, "samples": samples}))
    }

    #[tool(
        description = "The agents registered on the mesh, with their node, capabilities, state and liveness."
    )]
    async fn agent_list(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, McpError> {
        reply(self.call("GET", "/v1/agents".into(), None).await)
    }

    #[tool(
        description = "Submits a task that really runs: routed to an agent by strategy (capability, hash, auction, steal), leased, retried within its budget, completed once. Returns its id."
    )]
    async fn task_orchestrate(
        &self,
        Parameters(p): Parameters<TaskOrchestrate>,
    ) -> Result<CallToolResult, McpError> {
        let mut t = json!({});
        match &p.task {
            Value::String(s) => t["payload_text"] = json!(s),
            other => t["payload"] = other.clone(),
        }
        for (k, v) in [
            ("id", p.id.map(Value::from)),
            ("strategy", p.strategy.map(Value::from)),
            ("priority", p.priority.map(Value::from)),
            ("deps", p.dependencies.map(Value::from)),
            ("caps", p.capabilities.map(Value::from)),
            ("timeout_secs", p.timeout_secs.map(Value::from)),
            ("idempotency_key", p.idempotency_key.map(Value::from)),
        ] {
            if let Some(v) = v {
                t[k] = v;
            }
        }
        reply(
            self.call("POST", "/v1/tasks".into(), Some(t))
                .await
                .map(|r| r["tasks"][0].clone()),
        )
    }

    #[tool(
        description = "A task's state, agent, attempts and history; without taskId, the list of tasks (optionally in one state)."
    )]
    async fn task_status(
        &self,
        Parameters(p): Parameters<TaskStatus>,
    ) -> Result<CallToolResult, McpError> {
        let path = match &p.task_id {
            Some(id) => format!("/v1/tasks/{}", segment(id)),
            None => {
                let mut q = format!("/v1/tasks?limit={}", p.limit.unwrap_or(100));
                if let Some(s) = &p.state {
                    q.push_str(&format!("&state={}", segment(s)));
                }
                q
            }
        };
        reply(self.call("GET", path, None).await)
    }

    #[tool(
        description = "A task's result (its worker's output) once it ended, waiting up to `wait` seconds for it."
    )]
    async fn task_results(
        &self,
        Parameters(p): Parameters<TaskResults>,
    ) -> Result<CallToolResult, McpError> {
        let wait = p.wait.unwrap_or(0.0);
        if !(0.0..=60.0).contains(&wait) {
            return tool_error(format!("wait {wait} s is outside 0 to 60 s"));
        }
        let path = format!("/v1/tasks/{}?wait={wait}", segment(&p.task_id));
        reply(self.call("GET", path, None).await.map(|t| {
            json!({
                "taskId": t["id"],
                "state": t["state"],
                "ended": t["state"].as_str().is_some_and(|s| {
                    ["completed", "failed", "dead_letter", "cancelled"].contains(&s)
                }),
                "result": t["result"],
                "agent": t["agent"],
                "attempts": t["attempts"],
            })
        }))
    }

    #[tool(
        description = "Shared memory on the replicated keyspace: store (with ttl), retrieve, list, delete or search keys in a namespace. A key stored here is the Redis key `namespace:key`."
    )]
    async fn memory_usage(
        &self,
        Parameters(p): Parameters<MemoryUsage>,
    ) -> Result<CallToolResult, McpError> {
        let ns = p.namespace.clone().unwrap_or_else(|| "default".into());
        let key = |p: &MemoryUsage| -> Result<String, String> {
            p.key
                .clone()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| format!("action '{}' needs a key", p.action))
        };
        let r = match p.action.as_str() {
            "store" => {
                let k = match key(&p) {
                    Ok(k) => k,
                    Err(e) => return tool_error(e),
                };
                let value = match &p.value {
                    Some(Value::String(s)) => s.clone().into_bytes(),
                    Some(v) => v.to_string().into_bytes(),
                    None => return tool_error("action 'store' needs a value"),
                };
                let mut path = format!("/v1/kv/{}/{}", segment(&ns), segment(&k));
                if let Some(ttl) = p.ttl {
                    path.push_str(&format!("?ttl={ttl}"));
                }
                (self.backend)(Request {
                    method: "PUT",
                    path,
                    body: Some(value),
                    raw: true,
                })
                .await
                .map(|_| json!({"stored": true, "namespace": ns, "key": k}))
            }
            "retrieve" => match key(&p) {
                Ok(k) => self
                    .call("GET", format!("/v1/kv/{}/{}", segment(&ns), segment(&k)), None)
                    .await
                    .map(|v| json!({"namespace": ns, "key": k, "value": v["value"], "ttl_ms": v["ttl_ms"]})),
                Err(e) => return tool_error(e),
            },
            "delete" => match key(&p) {
                Ok(k) => self
                    .call("DELETE", format!("/v1/kv/{}/{}", segment(&ns), segment(&k)), None)
                    .await,
                Err(e) => return tool_error(e),
            },
            "list" => {
                let mut path = format!("/v1/kv/{}", segment(&ns));
                if let Some(prefix) = &p.pattern {
                    path.push_str(&format!("?prefix={}", segment(prefix)));
                }
                self.call("GET", path, None).await
            }
            "search" => match &p.pattern {
                Some(pat) => {
                    self.call("GET", format!("/v1/kv/{}?match={}", segment(&ns), segment(pat)), None)
                        .await
                }
                None => return tool_error("action 'search' needs a pattern (a glob over keys)"),
            },
            other => {
                return tool_error(format!(
                    "unknown action '{other}': store, retrieve, list, delete or search"
                ));
            }
        };
        reply(r)
    }
}

#[tool_handler]
impl ServerHandler for MeshMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agent-mesh", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Agent Mesh: a real coordination layer. Tasks submitted here run on worker agents; \
                 memory is replicated; every figure is measured or null.",
            )
    }
}

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn serve_stdio(backend: Backend, host: Arc<dyn Host>) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let server = MeshMcp::new(backend, host)
        .serve(rmcp::transport::stdio())
        .await?;
    server.waiting().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeframes_and_summaries() {
        assert_eq!(timeframe_secs("5m"), Ok(300));
        assert_eq!(timeframe_secs("24h"), Ok(86_400));
        assert_eq!(timeframe_secs("90"), Ok(90));
        assert!(timeframe_secs("soon").is_err() && timeframe_secs("0s").is_err());
        assert!(timeframe_secs("3w").is_err());
        let f = summarize(&[
            json!({"at_unix_ms": 1, "cpu": 10.0, "never": null}),
            json!({"at_unix_ms": 2, "cpu": 30.0, "never": null}),
        ]);
        assert_eq!(f["cpu"]["mean"], json!(20.0));
        assert_eq!(f["cpu"]["measured"], json!(2));
        assert_eq!(f["never"]["mean"], Value::Null);
        assert_eq!(f["never"]["note"], "not measured");
    }

    #[test]
    fn every_tool_has_a_description_and_an_object_schema() {
        let tools = MeshMcp::tool_router().list_all();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        for want in [
            "swarm_init",
            "swarm_status",
            "swarm_monitor",
            "agent_list",
            "task_orchestrate",
            "task_status",
            "task_results",
            "memory_usage",
            "agent_spawn",
            "daa_consensus",
            "daa_communication",
            "daa_fault_tolerance",
            "topology_optimize",
            "performance_report",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for t in &tools {
            assert!(
                t.description.as_ref().is_some_and(|d| d.len() > 20),
                "{}",
                t.name
            );
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
        }
        // Unknown arguments fail the schema.
        for t in &tools {
            assert_eq!(
                t.input_schema.get("additionalProperties"),
                Some(&json!(false)),
                "{}",
                t.name
            );
        }
        let init = tools.iter().find(|t| t.name == "swarm_init").unwrap();
        let props = init.input_schema["properties"].as_object().unwrap();
        assert!(props.contains_key("maxAgents") && props.contains_key("topology"));
    }
}
