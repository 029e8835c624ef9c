//! The `mesh` command: run a node, inspect a mesh, simulate, demo and benchmark.
//!
//! Each subcommand lives in its own module; this file only parses the command line
//! and dispatches.

/// mimalloc instead of glibc's malloc: a node allocates many small, short-lived
/// buffers per request (parsed arguments, log entries, replies), and `perf` showed
/// a quarter of a busy Redis endpoint in glibc's `_int_malloc`/`malloc_consolidate`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent_cmd;
mod api;
mod barrier_cmd;
mod bench;
mod bench_kv;
mod bench_mcp;
mod bench_pubsub;
mod bench_resp;
mod bench_tasks;
mod demo;
mod demo_replicated;
mod demo_tasks;
mod keys;
mod kv_cmd;
mod mcp_cmd;
mod msg_cmd;
mod pbft_cmd;
mod sim_cmd;
mod status_cmd;
mod task_cmd;
mod up;
mod vote_cmd;
mod worker;

use clap::{Parser, Subcommand};

/// Agent Mesh: a peer-to-peer coordination layer for swarms of agents.
#[derive(Parser)]
#[command(name = "mesh", version, about = "Agent Mesh: a peer-to-peer coordination layer for swarms of agents and workers", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a mesh node in the foreground (Ctrl-C or SIGTERM leaves the mesh gracefully).
    Up(up::UpArgs),
    /// Show a node's view of the mesh.
    Status(status_cmd::StatusArgs),
    /// Start a 5-node mesh on loopback: kill one hard (detection, rejoin), then shared memory, signed votes, a Raft leader kill, and tasks run by workers while a node dies.
    Demo(demo::DemoArgs),
    /// Benchmarks on real processes: membership, kv, tasks, pubsub (beside redis-server), mcp.
    Bench(bench::BenchArgs),
    /// Run the deterministic simulator.
    Sim(sim_cmd::SimArgs),
    /// Set up pBFT (Byzantine-fault-tolerant ordering): replica keys and the genesis file.
    Pbft(pbft_cmd::PbftArgs),
    /// Shared memory: set, get, del, list keys in namespaces.
    Kv(kv_cmd::KvArgs),
    /// Proposals decided by votes signed with agents' keys.
    Vote(vote_cmd::VoteArgs),
    /// Register agents, list them, set their state.
    Agent(agent_cmd::AgentArgs),
    /// Wait until agents are COMPLETE.
    Barrier(barrier_cmd::BarrierArgs),
    /// Tasks: submit, list, show, wait, cancel; claim, complete, fail for scripts.
    Task(task_cmd::TaskArgs),
    /// Run tasks: an agent that claims tasks and runs a command for each.
    Worker(worker::WorkerArgs),
    /// Serve MCP (Model Context Protocol) on stdio for LLM agents, attached to a node.
    Mcp(mcp_cmd::McpArgs),
    /// Messages: publish on channels, send to agents or nodes with receipts, listen.
    Msg(msg_cmd::MsgArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Status(args) => status_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Pbft(args) => pbft_cmd::run(args),
        Command::Kv(args) => kv_cmd::run(args),
        Command::Msg(args) => msg_cmd::run(args),
        Command::Vote(args) => vote_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Barrier(args) => barrier_cmd::run(args),
        Command::Task(args) => task_cmd::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Mcp(args) => mcp_cmd::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
