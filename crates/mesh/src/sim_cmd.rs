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
    /// Simulate pBFT with Byzantine replicas under loss, partitions and crashes,
    /// many seeds, checking safety after every step and liveness once healed.
    Pbft(PbftArgs),
}

/// Which seeds a many-seed simulation runs.
#[derive(Args)]
struct SeedRuns {
    /// How many seeds to run (1..=N), unless --seed picks one.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// Replay exactly this seed.
    #[arg(long)]
    seed: Option<u64>,
}

impl SeedRuns {
    fn list(&self) -> Vec<u64> {
        match self.seed {
            Some(s) => vec![s],
            None => (1..=self.seeds.max(1)).collect(),
        }
    }
}

#[derive(Args)]
struct PbftArgs {
    #[command(flatten)]
    runs: SeedRuns,
    /// Replicas (at least 4; f = floor((n - 1) / 3)).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Byzantine replicas (default f; more than f is allowed, to watch safety break).
    #[arg(long)]
    byzantine: Option<usize>,
    /// How they misbehave: silent, slow, equivocate, conflicting-votes, forger,
    /// malformed (comma-separated, one per Byzantine replica, repeated as needed);
    /// default: drawn from the seed.
    #[arg(long, value_delimiter = ',')]
    behaviour: Vec<String>,
    /// The Byzantine replicas coordinate (the primary equivocates, the others
    /// vote for whatever each replica was told).
    #[arg(long)]
    collude: bool,
    /// Message loss probability during the chaos (0.02 or 2%).
    #[arg(long, default_value = "2%", value_parser = parse_fraction)]
    loss: f64,
    /// Virtual time with loss, partitions and crashes, before the network heals.
    #[arg(long, default_value = "6s", value_parser = parse_duration_ms)]
    chaos: u64,
    /// Clients, each sending --requests requests one after another.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    #[arg(long, default_value_t = 12)]
    requests: u64,
    /// Once during the chaos, every correct replica crashes at once and
    /// restarts from what it stored.
    #[arg(long)]
    power_cut: bool,
    /// Crashed replicas keep their memory (a paused process) instead of
    /// restarting from what they stored.
    #[arg(long)]
    keep_memory: bool,
    /// Once during the chaos, the replicas vote to replace one of them (a
    /// Byzantine one half the time) by a new member; checks that every
    /// correct replica reaches the new configuration and nothing is ordered
    /// twice across it.
    #[arg(long)]
    reconfigure: bool,
    /// Print every seed's report as JSON lines.
    #[arg(long)]
    json: bool,
}

fn run_pbft(a: PbftArgs) -> anyhow::Result<()> {
    use mesh_consensus::pbft::sim::adversary::Behaviour;
    use mesh_consensus::pbft::sim::{PbftSimConfig, run_seed};
    if !(4..=64).contains(&a.nodes) {
        anyhow::bail!("--nodes must be between 4 and 64");
    }
    let f = (a.nodes - 1) / 3;
    let k = a.byzantine.unwrap_or(f);
    if k >= a.nodes {
        anyhow::bail!("--byzantine must be below --nodes");
    }
    let mut kinds = Vec::new();
    for b in &a.behaviour {
        kinds.push(Some(Behaviour::parse(b).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown behaviour {b:?}: silent, slow, equivocate, conflicting-votes, forger, malformed"
            )
        })?));
    }
    let byzantine: Vec<Option<Behaviour>> = (0..k)
        .map(|i| {
            if kinds.is_empty() {
                None
            } else {
                kinds[i % kinds.len()]
            }
        })
        .collect();
    if a.clients == 0 || a.requests == 0 {
        anyhow::bail!("--clients and --requests must be at least 1");
    }
    let mut cfg = PbftSimConfig {
        n: a.nodes,
        byzantine,
        collude: a.collude,
        clients: a.clients,
        requests: a.requests,
        chaos_ms: a.chaos,
        power_cut: a.power_cut,
        amnesia: !a.keep_memory,
        reconfigure: a.reconfigure,
        // Liveness is only promised with at most f Byzantine replicas.
        check_liveness: k <= f,
        ..PbftSimConfig::default()
    };
    cfg.net.loss = a.loss;
    let seeds = a.runs.list();
    let started = std::time::Instant::now();
    let (mut vcs, mut evidence, mut transfers, mut refused, mut msgs, mut bytes) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut signed, mut verified, mut accepted) = (0u64, 0u64, 0u64);
    let (mut reads, mut crashes, mut epoch_changes) = (0u64, 0u64, 0u64);
    for &seed in &seeds {
        let r = run_seed(seed, &cfg);
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        }
        if let Some(v) = &r.violation {
            anyhow::bail!(
                "seed {seed} (byzantine {:?}): {v}\nreplay: mesh sim pbft --seed {seed} --nodes {} --byzantine {k}{}{}{}{}{} --loss {} --chaos {}ms --clients {} --requests {}",
                r.byzantine,
                a.nodes,
                if a.power_cut { " --power-cut" } else { "" },
                if a.reconfigure { " --reconfigure" } else { "" },
                if a.keep_memory { " --keep-memory" } else { "" },
                if a.behaviour.is_empty() {
                    String::new()
                } else {
                    format!(" --behaviour {}", a.behaviour.join(","))
                },
                if a.collude { " --collude" } else { "" },
                a.loss,
                a.chaos,
                a.clients,
                a.requests
            );
        }
        vcs += r.view_changes;
        evidence += r.evidence;
        transfers += r.state_transfers;
        refused += r.refused + r.undecodable;
        msgs += r.messages;
        bytes += r.bytes;
        signed += r.signed;
        verified += r.verified;
        accepted += r.accepted;
        reads += r.reads;
        crashes += r.crashes;
        epoch_changes += r.epoch_changes;
    }
    if !a.json {
        println!(
            "{} seeds, n = {}, {k} Byzantine, {:.0}% loss: every check held ({accepted} requests accepted, {vcs} view changes entered, {evidence} pieces of evidence, {transfers} state transfers, {refused} messages refused, {crashes} crashes, {reads} read-index reads checked fresh{}) in {:.1} s",
            seeds.len(),
            a.nodes,
            a.loss * 100.0,
            if a.reconfigure {
                format!(", {epoch_changes} replicas moved to a new configuration")
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
        if accepted > 0 {
            println!(
                "per accepted request: {:.1} messages, {:.0} bytes, {:.1} signatures made, {:.1} verified (all replicas, faults included)",
                msgs as f64 / accepted as f64,
                bytes as f64 / accepted as f64,
                signed as f64 / accepted as f64,
                verified as f64 / accepted as f64
            );
        }
    }
    Ok(())
}

#[derive(Args)]
struct MessagingArgs {
    #[command(flatten)]
    runs: SeedRuns,
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
    let seeds = a.runs.list();
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
        SimWhat::Pbft(a) => run_pbft(a),
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
