//! `mesh sim …`: runs of the deterministic simulator.

use clap::{Args, Subcommand};

use mesh_proto::Profile;
use mesh_proto::units::{parse_duration_ms, parse_fraction};
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
    /// Number of simulated nodes (3 to 20,000); a comma-separated list runs each
    /// size with the same settings and adds a side-by-side comparison.
    #[arg(long, default_value = "100", value_delimiter = ',')]
    nodes: Vec<usize>,
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
            if let Some(bad) = a.nodes.iter().find(|n| !(3..=20_000).contains(*n)) {
                anyhow::bail!("--nodes must be between 3 and 20000 (got {bad})");
            }
            if a.duration < MIN_DURATION_MS {
                anyhow::bail!("--duration must be at least {} s", MIN_DURATION_MS / 1000);
            }
            let mut reports = Vec::new();
            for &nodes in &a.nodes {
                let run = MembershipRun {
                    nodes,
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
                if !a.json {
                    print!("{}", report.to_text());
                    println!();
                }
                if let Some(v) = &report.invariant_violation {
                    anyhow::bail!("{v}\nreplay: {}", report.replay);
                }
                reports.push(report);
            }
            if a.json {
                let out = if reports.len() == 1 {
                    serde_json::to_value(&reports[0])?
                } else {
                    serde_json::to_value(&reports)?
                };
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if reports.len() > 1 {
                let f = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "null".into());
                println!("side by side (same seed, loss and profile):");
                println!(
                    "{:>7} {:>14} {:>12} {:>12} {:>12} {:>12} {:>6} {:>9}",
                    "nodes",
                    "msgs/member/s",
                    "bytes/m/s",
                    "fact 99.99%",
                    "detect ms",
                    "agree ms",
                    "FP",
                    "wall s"
                );
                for r in &reports {
                    println!(
                        "{:>7} {:>14.2} {:>12.0} {:>12} {:>12} {:>12} {:>6} {:>9.1}",
                        r.nodes,
                        r.traffic.steady_messages_per_member_per_sec,
                        r.traffic.steady_bytes_per_member_per_sec,
                        f(r.dissemination.to_99_99pct_ms),
                        f(r.crash.first_detection_ms),
                        f(r.crash.full_agreement_ms),
                        r.false_positives,
                        r.wall_ms as f64 / 1000.0
                    );
                }
                let first = reports[0].traffic.steady_messages_per_member_per_sec;
                let last = reports[reports.len() - 1]
                    .traffic
                    .steady_messages_per_member_per_sec;
                println!(
                    "messages per member per second, largest / smallest mesh: {:.3}x",
                    last / first
                );
            }
            Ok(())
        }
    }
}
