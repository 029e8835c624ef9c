//! `mesh up`: run one mesh node in the foreground until SIGINT or SIGTERM, which
//! make it leave gracefully (peers record `left`, not `dead`).

use std::path::PathBuf;

use clap::Args;

use mesh_cli::cluster::NodeFile;
use mesh_node::config::{NodeConfig, Settings};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Node name, unique in the mesh [default: read from the data directory, or generated and persisted]
    #[arg(long, env = "MESH_NODE_ID")]
    node_id: Option<String>,
    /// Address for UDP gossip and TCP RPC (one port for both) [default: 127.0.0.1:7946]
    #[arg(long, env = "MESH_BIND", value_name = "HOST:PORT")]
    bind: Option<String>,
    /// Seed nodes to join through, comma-separated; retried with backoff until one answers. The first node of a mesh starts without it and bootstraps the replicated log
    #[arg(
        long,
        env = "MESH_JOIN",
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ','
    )]
    join: Option<Vec<String>>,
    /// HTTP address of the JSON API (/v1/...) and /metrics [default: 127.0.0.1:7070]
    #[arg(long, env = "MESH_HTTP", value_name = "HOST:PORT")]
    http: Option<String>,
    /// Data directory (node id, replicated log and snapshots) [default: ~/.local/share/agent-mesh]
    #[arg(long, env = "MESH_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Timing preset: local (one host), lan, wan [default: lan]
    #[arg(long, env = "MESH_PROFILE", value_name = "local|lan|wan")]
    profile: Option<String>,
    /// Failure domain of this node (rack, zone, host)
    #[arg(long, env = "MESH_ZONE")]
    zone: Option<String>,
    /// Capabilities this node offers, comma-separated
    #[arg(long, env = "MESH_CAPS", value_name = "a,b,c", value_delimiter = ',')]
    caps: Option<Vec<String>>,
    /// Announce this node and discover peers with mDNS on the local network
    #[arg(long, env = "MESH_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    mdns: bool,
    /// Target number of Raft voters: 1, 3, 5 or 7 [default: 3; fewer while the mesh is smaller]
    #[arg(long, env = "MESH_VOTERS")]
    voters: Option<usize>,
    /// Replace a voter confirmed dead this long by a healthy learner [default: 30s]
    #[arg(long, env = "MESH_REPLACE_DEAD_AFTER", value_name = "DURATION")]
    replace_dead_after: Option<String>,
    /// Bearer token every HTTP request must carry (but GET /healthz); required when --http is
    /// not a loopback address; at least 16 printable characters. Clients (`mesh kv`, `mesh
    /// worker`, ...) read it from MESH_HTTP_TOKEN
    #[arg(
        long,
        env = "MESH_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    http_token: Option<String>,
    /// Serve Redis clients (RESP2/RESP3) on this address, on the replicated keyspace
    #[arg(long, env = "MESH_RESP", value_name = "HOST:PORT")]
    resp: Option<String>,
    /// Password Redis clients must give with AUTH (like requirepass); without it only
    /// loopback clients are served
    #[arg(
        long,
        env = "MESH_RESP_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    resp_password: Option<String>,
    /// Serve FLUSHDB/FLUSHALL on the Redis endpoint (they remove every key of the mesh)
    #[arg(long, env = "MESH_RESP_ALLOW_FLUSH", value_parser = clap::builder::BoolishValueParser::new())]
    resp_allow_flush: bool,
    /// Most Redis clients served at once [default: 10000]
    #[arg(long, env = "MESH_RESP_MAX_CLIENTS", value_name = "N")]
    resp_max_clients: Option<usize>,
    /// Ordering engine: raft (tolerates crashes) or pbft (tolerates f of 3f + 1 replicas that lie; needs --pbft-genesis) [default: raft]
    #[arg(long, env = "MESH_CONSENSUS", value_name = "raft|pbft")]
    consensus: Option<String>,
    /// pBFT's genesis file: the replicas' names and public keys, the same on every replica (see `mesh pbft --help`)
    #[arg(long, env = "MESH_PBFT_GENESIS", value_name = "FILE")]
    pbft_genesis: Option<PathBuf>,
    /// TOML file with the same settings (keys: node_id, bind, join, http, data_dir, profile, zone, caps, mdns, voters, replace_dead_after, http_token, resp, resp_password, resp_allow_flush, resp_max_clients, consensus, pbft_genesis); flags and MESH_* variables win
    #[arg(long, env = "MESH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Leave the mesh when this process id is gone (used by `mesh demo` and tests)
    #[arg(long, hide = true)]
    parent_pid: Option<u32>,
    /// Also run a worker in this process: this command for each task it claims
    /// (as `mesh worker --exec`; the worker offers the node's --caps)
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// The worker's slots (tasks run at once), with --exec
    #[arg(long, default_value_t = 1, requires = "exec")]
    slots: u32,
}

pub fn resolve(args: &UpArgs) -> anyhow::Result<NodeConfig> {
    let args = args.clone();
    let file = match &args.config {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    let over = Settings {
        node_id: args.node_id,
        bind: args.bind,
        join: args.join,
        http: args.http,
        data_dir: args.data_dir,
        profile: args.profile,
        zone: args.zone,
        caps: args.caps,
        mdns: args.mdns.then_some(true),
        voters: args.voters,
        replace_dead_after: args.replace_dead_after,
        http_token: args.http_token,
        resp: args.resp,
        resp_password: args.resp_password,
        resp_allow_flush: args.resp_allow_flush.then_some(true),
        resp_max_clients: args.resp_max_clients,
        consensus: args.consensus,
        pbft_genesis: args.pbft_genesis,
    };
    Ok(NodeConfig::resolve(over, file)?)
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let cfg = resolve(&args)?;
    let parent = args.parent_pid;
    // One thread for the node's async work (the log's fsyncs and snapshot
    // encoding run on threads of their own): waking a task then never wakes
    // another thread, so writes are faster, at one client and at many, than
    // with two worker threads (measured with `mesh bench kv`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let data_dir = cfg.data_dir.clone();
    let (exec, slots, caps) = (args.exec.clone(), args.slots, cfg.caps.clone());
    let http_token = cfg.http_token.clone();
    let serve_token = cfg.http_token.clone();
    let resp_cfg = mesh_api::resp::RespConfig {
        password: cfg.resp_password.clone(),
        max_clients: cfg.resp_max_clients,
        allow_flush: cfg.resp_allow_flush,
    };
    rt.block_on(async move {
        let mut node = mesh_node::start(cfg).await?;
        if let Some(listener) = node.http_listener.take() {
            tokio::spawn(mesh_api::http::serve(
                listener,
                node.service.clone(),
                serve_token,
            ));
        }
        if let Some(listener) = node.resp_listener.take() {
            tokio::spawn(mesh_api::resp::serve(
                listener,
                node.service.clone(),
                resp_cfg,
            ));
        }
        let resp_note = node
            .resp_addr
            .map(|a| format!(", redis {a}"))
            .unwrap_or_default();
        eprintln!(
            "mesh node {} up: gossip {} (udp+tcp), http http://{}{resp_note}  (Ctrl-C leaves the mesh)",
            node.node_id, node.gossip_addr, node.http_addr
        );
        let status = node
            .status()
            .await
            .ok_or_else(|| anyhow::anyhow!("node stopped at start"))?;
        if let Some(exec) = exec.clone() {
            let w = crate::worker::WorkerArgs {
                node: format!("http://{}", node.http_addr),
                exec,
                caps: caps.clone(),
                slots,
                id: Some(format!("{}-worker", node.node_id)),
                kind: "worker".into(),
                lease: "5s".into(),
                max_output: 1024 * 1024,
                keys_dir: Some(data_dir.join("keys")),
                max_tasks: None,
                http_token,
            };
            // The worker is a blocking HTTP client of this node: its own thread.
            std::thread::spawn(move || {
                if let Err(e) = crate::worker::run(w) {
                    eprintln!("the worker stopped: {e:#}");
                }
            });
        }
        let file = NodeFile {
            node_id: node.node_id.clone(),
            gossip: node.gossip_addr,
            http: node.http_addr,
            resp: node.resp_addr,
            pid: std::process::id(),
            generation: status.generation,
        };
        // Written last, atomically: its presence means the node serves.
        let tmp = data_dir.join("node.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&file)?)?;
        std::fs::rename(&tmp, data_dir.join("node.json"))?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let parent_gone = async {
            match parent {
                Some(pid) => loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        eprintln!("parent process {pid} is gone");
                        break;
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = parent_gone => {}
        }
        eprintln!("leaving the mesh…");
        node.shutdown().await;
        Ok(())
    })
}
