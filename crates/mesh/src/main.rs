//! The `mesh` command: run a node, inspect a mesh, simulate, demo and benchmark.
//!
//! Each subcommand lives in its own module; this file only parses the command line
//! and dispatches.

mod sim_cmd;
mod util;

use clap::{Parser, Subcommand};

/// Agent Mesh: a peer-to-peer coordination layer for swarms of agents.
#[derive(Parser)]
#[command(name = "mesh", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the deterministic simulator.
    Sim(sim_cmd::SimArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim_cmd::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
