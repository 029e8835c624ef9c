//! `mesh demo`: a 5-node mesh on loopback, a hard kill, detection, rejoin; then
//! the replicated state (see [`crate::demo_replicated`]): shared memory, a
//! proposal decided by signed votes, the Raft leader killed and the data still
//! there; then tasks (see [`crate::demo_tasks`]): workers with different
//! capabilities run a batch with dependencies while a node dies; and a summary
//! of measured times. Everything it prints is read from the nodes' own
//! status and event records; nothing is estimated.

use std::time::{Duration, Instant};

use clap::Args;

use crate::status_cmd::render;
use mesh_cli::cluster::{Cluster, wait_for};

#[derive(Args)]
pub struct DemoArgs {
    /// Number of nodes (3 to 9)
    #[arg(long, default_value_t = 5)]
    nodes: usize,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(3..=9).contains(&args.nodes) {
        anyhow::bail!("--nodes must be between 3 and 9");
    }
    let n = args.nodes;
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let mut c = Cluster::new(&exe, "lan", "demo")?;

    println!(
        "== 1. Start {n} nodes on loopback (real processes, UDP gossip + TCP, LAN profile) =="
    );
    let seed = c.spawn("node-1", &[])?;
    let seed_addr = c.info(seed).gossip;
    for i in 2..=n {
        c.spawn(&format!("node-{i}"), &[seed_addr])?;
    }
    let all_started = Instant::now();
    let converge = wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
        c.converged()
    })
    .ok_or_else(|| anyhow::anyhow!("the mesh did not converge within 20 s"))?;
    println!(
        "every node sees all {n} members alive, {} after the last node started\n",
        ms(converge)
    );
    // Rates need two one-second samples; wait for them rather than print nulls.
    let _ = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        c.status(seed)
            .is_ok_and(|(s, _)| !s["health"]["messages_in_per_sec"].is_null())
    });
    println!("{}", render(&c.status(seed)?.0));

    let victim = 2;
    let vname = c.nodes[victim].name.clone();
    let vgen = c.info(victim).generation;
    println!("== 2. kill -9 {vname} (no goodbye) ==");
    let survivors: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    let killed_at = Instant::now();
    c.kill_hard(victim)?;
    let agreed = wait_for(Duration::from_secs(15), Duration::from_millis(25), || {
        survivors.iter().all(|&s| {
            c.events_about(s, &vname, vgen)
                .is_ok_and(|ev| ev.iter().any(|e| e.kind == "dead"))
        })
    });
    if agreed.is_none() {
        anyhow::bail!("the survivors did not all declare {vname} dead within 15 s");
    }
    println!(
        "{:<10} {:>16} {:>16}   confirmed by",
        "peer", "suspected after", "declared dead"
    );
    let mut first_suspect: Option<Duration> = None;
    let mut dead_times = Vec::new();
    for &s in &survivors {
        let ev = c.events_about(s, &vname, vgen)?;
        let when = |kind: &str| {
            ev.iter()
                .find(|e| e.kind == kind)
                .map(|e| e.at.saturating_duration_since(killed_at))
        };
        let suspected = when("suspected");
        let dead = when("dead");
        if let Some(d) = suspected {
            first_suspect = Some(first_suspect.map_or(d, |f: Duration| f.min(d)));
        }
        if let Some(d) = dead {
            dead_times.push(d);
        }
        let by = ev
            .iter()
            .find(|e| e.kind == "dead")
            .map(|e| e.by.join(","))
            .unwrap_or_default();
        println!(
            "{:<10} {:>16} {:>16}   {}",
            c.nodes[s].name,
            suspected.map(ms).unwrap_or_else(|| "-".into()),
            dead.map(ms).unwrap_or_else(|| "-".into()),
            if by.is_empty() { "-".into() } else { by }
        );
    }
    let first_dead = dead_times.iter().min().copied();
    let all_dead = dead_times.iter().max().copied();
    println!(
        "all {} survivors agree that {vname} is dead\n",
        survivors.len()
    );

    println!("== 3. Restart {vname} (same name and data directory, new generation) ==");
    let restarted_at = Instant::now();
    c.restart(victim, &[seed_addr])?;
    let rejoin = wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
        c.converged()
    })
    .map(|_| restarted_at.elapsed())
    .ok_or_else(|| anyhow::anyhow!("{vname} did not rejoin within 20 s"))?;
    println!(
        "{vname} is back (generation {}); every node sees all {n} alive\n",
        c.info(victim).generation
    );
    println!("{}", render(&c.status(victim)?.0));

    let replicated = crate::demo_replicated::run(&mut c)?;
    let tasks = crate::demo_tasks::run(&mut c)?;

    let rss: Vec<u64> = (0..n).filter_map(|i| c.resident_bytes(i)).collect();
    println!("== Summary (measured on this machine) ==");
    println!("{:<44} {:>12}", "what", "time");
    println!(
        "{:<44} {:>12}",
        format!("{n} nodes converged after the last start"),
        ms(converge)
    );
    println!(
        "{:<44} {:>12}",
        format!("first suspicion of {vname} after kill -9"),
        first_suspect.map(ms).unwrap_or_else(|| "null".into())
    );
    println!(
        "{:<44} {:>12}",
        "first confirmed death (first detection)",
        first_dead.map(ms).unwrap_or_else(|| "null".into())
    );
    println!(
        "{:<44} {:>12}",
        "all survivors agree",
        all_dead.map(ms).unwrap_or_else(|| "null".into())
    );
    println!(
        "{:<44} {:>12}",
        format!("{vname} restarted until all see it alive"),
        ms(rejoin)
    );
    let opt_ms = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "null".into());
    println!(
        "{:<44} {:>12}",
        "proposal decided after it opened",
        replicated
            .decision_ms
            .map(|x| format!("{x} ms"))
            .unwrap_or_else(|| "null".into())
    );
    println!(
        "{:<44} {:>12}",
        "vote participation",
        replicated
            .participation
            .map(|p| format!("{:.0}%", p * 100.0))
            .unwrap_or_else(|| "null".into())
    );
    println!(
        "{:<44} {:>12}",
        "Raft leader killed: first write accepted",
        opt_ms(replicated.first_write_after)
    );
    println!(
        "{:<44} {:>12}",
        "Raft leader killed: new leader agreed",
        opt_ms(replicated.new_leader_after)
    );
    println!(
        "{:<44} {:>12}",
        format!("{} tasks with dependencies, all completed", tasks.tasks),
        opt_ms(tasks.all_done)
    );
    println!(
        "{:<44} {:>12}",
        "dead node's tasks restarted, after confirmed",
        tasks
            .recovered_ms
            .map(|x| format!("{x} ms"))
            .unwrap_or_else(|| "null".into())
    );
    println!(
        "{:<44} {:>12}",
        "task load variance (std dev / mean)",
        tasks
            .load_variance
            .map(|v| format!("{:.0}%", v * 100.0))
            .unwrap_or_else(|| "null".into())
    );
    if !rss.is_empty() {
        let max = *rss.iter().max().expect("non-empty");
        println!(
            "{:<44} {:>9.1} MiB",
            "largest node resident memory",
            max as f64 / 1048576.0
        );
    }
    println!("\nstopping the mesh (each node leaves gracefully)…");
    c.stop_all();
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    let _ = all_started;
    Ok(())
}
