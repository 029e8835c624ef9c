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
    /// Simulate messaging (pub/sub, direct messages) under loss, partitions and
    /// restarts, many seeds, checking order, at-most-once, honest counts and liveness.
    Messaging(MessagingArgs),
}

#[derive(Args)]
struct MessagingArgs {
    /// How many seeds to run (1..=N), unless --seed picks one.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// Replay exactly this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Message loss probability (0.05 or 5%).
    #[arg(long, default_value = "5%", value_parser = parse_fraction)]
    loss: f64,
    /// Virtual time with crashes and partitions, before the healed phase.
    #[arg(long, default_value = "20s", value_parser = parse_duration_ms)]
    chaos: u64,
    /// Print every seed's report as JSON lines.
    #[arg(long)]
    json: bool,
}

fn run_messaging(a: MessagingArgs) -> anyhow::Result<()> {
    use mesh_sim::msg::{MsgSimConfig, run_seed};
    if !(2..=32).contains(&a.nodes) {
        anyhow::bail!("--nodes must be between 2 and 32");
    }
    let seeds: Vec<u64> = match a.seed {
        Some(s) => vec![s],
        None => (1..=a.seeds.max(1)).collect(),
    };
    let started = std::time::Instant::now();
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for &seed in &seeds {
        let mut cfg = MsgSimConfig {
            nodes: a.nodes,
            chaos_ms: a.chaos,
            ..MsgSimConfig::default()
        };
        cfg.net.loss = a.loss;
        let r = run_seed(seed, cfg);
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        }
        if let Some(v) = &r.violation {
            anyhow::bail!(
                "{v}\nreplay: mesh sim messaging --seed {seed} --nodes {} --loss {} --chaos {}ms",
                a.nodes,
                a.loss,
                a.chaos
            );
        }
        totals.0 += r.published + r.direct_sent;
        totals.1 += r.deliveries;
        totals.2 += r.crashes;
        totals.3 += r.lost_wire_messages;
        totals.4 += r.direct_expired;
        totals.5 += r.expired_but_delivered;
    }
    if !a.json {
        println!(
            "{} seeds, {} nodes, {:.0}% loss: every check held ({} messages sent, {} deliveries, {} crashes, {} wire messages lost, {} direct messages expired of which {} had arrived) in {:.1} s",
            seeds.len(),
            a.nodes,
            a.loss * 100.0,
            totals.0,
            totals.1,
            totals.2,
            totals.3,
            totals.4,
            totals.5,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
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
        SimWhat::Messaging(a) => run_messaging(a),
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
