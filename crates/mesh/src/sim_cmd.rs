//! `mesh sim …`: runs of the deterministic simulator.

use clap::{Args, Subcommand};

use crate::util::{parse_duration_ms, parse_fraction};
use mesh_proto::Profile;
use mesh_sim::net::Latency;
use mesh_sim::report::{MIN_DURATION_MS, MembershipRun};

#[derive(Args)]
pub struct SimArgs {
    #[command(subcommand)]
    what: SimWhat,
}

#[derive(Subcommand)]
enum SimWhat {
    /// Simulate SWIM membership: fact dissemination, crash detection, false positives, traffic.
    Membership(MembershipArgs),
}

#[derive(Args)]
struct MembershipArgs {
    /// Number of simulated nodes (3 to 20,000).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Seed of every random choice; the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Datagram loss probability (0.1 or 10%).
    #[arg(long, default_value = "0", value_parser = parse_fraction)]
    loss: f64,
    /// Virtual duration (at least 12s: the fact is published at 4 s, the crash is at 7 s).
    #[arg(long, default_value = "20s", value_parser = parse_duration_ms)]
    duration: u64,
    /// Timing profile.
    #[arg(long, default_value = "lan")]
    profile: Profile,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.what {
        SimWhat::Membership(a) => {
            if !(3..=20_000).contains(&a.nodes) {
                anyhow::bail!("--nodes must be between 3 and 20000 (got {})", a.nodes);
            }
            if a.duration < MIN_DURATION_MS {
                anyhow::bail!("--duration must be at least {} s", MIN_DURATION_MS / 1000);
            }
            let run = MembershipRun {
                nodes: a.nodes,
                seed: a.seed,
                loss: a.loss,
                duration_ms: a.duration,
                profile: a.profile,
                latency: if a.profile == Profile::Wan {
                    Latency::WAN
                } else {
                    Latency::LAN
                },
            };
            let report = run.run();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            if let Some(v) = &report.invariant_violation {
                anyhow::bail!("{v}\nreplay: {}", report.replay);
            }
            Ok(())
        }
    }
}
