//! pBFT under Byzantine replicas, in the deterministic simulation
//! (`mesh_consensus::pbft::sim`): real replicas, real signatures, encoded
//! messages over a seeded network with loss, duplication, reordering,
//! partitions and crashes. Every step checks that no two correct replicas
//! execute different batches at one sequence number (TOCS 2002 §4.2,
//! safety), that their states agree, that no correct replica is accused,
//! and that clients accept only correct results (f + 1 matching replies,
//! §4.1); at the end, that every request was accepted once the network
//! healed (liveness after GST, §4.4). Replicas read by read index now and
//! then (§5.1.3) while Byzantine ones answer too low or far ahead: no read
//! is stale.
//!
//! `MESH_PBFT_SIM_SEEDS=N` runs N seeds (default 200); a failure names its
//! seed, and `MESH_PBFT_SIM_SEED=S` (or `mesh sim pbft --seed S`) replays it
//! exactly.

use mesh_consensus::pbft::replica::Settings;
use mesh_consensus::pbft::sim::adversary::Behaviour;
use mesh_consensus::pbft::sim::{OddView, PbftSimConfig, PbftSimReport, run_seed};
use mesh_sim::net::{Latency, NetConfig};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seeds to run: the one `MESH_PBFT_SIM_SEED` names, else 1 to
/// `count(MESH_PBFT_SIM_SEEDS)`.
fn seeds(count: impl FnOnce(Option<u64>) -> u64) -> Vec<u64> {
    match env_u64("MESH_PBFT_SIM_SEED") {
        Some(s) => vec![s],
        None => (1..=count(env_u64("MESH_PBFT_SIM_SEEDS"))).collect(),
    }
}

/// The mix of the seeded runs: mostly n = 4 with one Byzantine replica of
/// a seeded behaviour; every fifth seed n = 7 with two.
fn mixed(seed: u64) -> PbftSimConfig {
    if seed.is_multiple_of(5) {
        PbftSimConfig {
            n: 7,
            byzantine: vec![None, None],
            ..PbftSimConfig::default()
        }
    } else {
        PbftSimConfig::default()
    }
}

#[test]
fn at_most_f_byzantine_replicas_break_neither_safety_nor_liveness() {
    let seeds = seeds(|n| n.unwrap_or(200));
    let mut failures = Vec::new();
    let (mut vcs, mut evidence, mut transfers, mut refused, mut reads) = (0, 0, 0, 0, 0);
    for &seed in &seeds {
        let r = run_seed(seed, &mixed(seed));
        reads += r.reads;
        vcs += r.view_changes;
        evidence += r.evidence;
        transfers += r.state_transfers;
        refused += r.refused;
        if let Some(v) = &r.violation {
            failures.push(format!(
                "seed {seed} (n = {}, byzantine {:?}): {v}\n  replay: MESH_PBFT_SIM_SEED={seed} cargo test --release -p mesh-consensus --test pbft_sim",
                r.n, r.byzantine
            ));
        }
    }
    eprintln!(
        "{} seeds: {vcs} view changes, {evidence} pieces of evidence, {transfers} state transfers, {refused} messages refused, {reads} read-index reads checked fresh",
        seeds.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if seeds.len() >= 50 {
        // The runs exercise what they claim to.
        assert!(vcs > 0 && evidence > 0 && transfers > 0 && refused > 0 && reads > 0);
    }
}

/// These Byzantine replicas and no network faults, crashes or partitions.
fn no_faults(byzantine: Vec<Option<Behaviour>>) -> PbftSimConfig {
    PbftSimConfig {
        byzantine,
        net: NetConfig {
            latency: Latency::LAN,
            loss: 0.0,
            duplicate: 0.0,
        },
        crash_every_ms: 0,
        partition_every_ms: 0,
        ..PbftSimConfig::default()
    }
}

/// A run with one Byzantine replica of the given behaviour at every id in
/// turn (so it is the primary of view 0 in one of them), no network
/// faults: the targeted cases below.
fn each_position(b: Behaviour) -> Vec<PbftSimReport> {
    (1..=8)
        .map(|seed| {
            let cfg = PbftSimConfig {
                chaos_ms: 0,
                ..no_faults(vec![Some(b)])
            };
            let r = run_seed(seed, &cfg);
            assert_eq!(r.violation, None, "seed {seed}: {r:?}");
            assert_eq!(r.accepted, r.requests);
            r
        })
        .collect()
}

fn primary_was_byzantine(r: &PbftSimReport) -> bool {
    r.byzantine.iter().any(|(id, _)| *id == 0)
}

/// §4.4: a silent primary is replaced: the backups' timers expire, they
/// change view, and every request is still executed.
#[test]
fn a_silent_primary_is_replaced_by_a_view_change() {
    let runs = each_position(Behaviour::Silent);
    assert!(runs.iter().any(primary_was_byzantine));
    for r in runs.iter().filter(|r| primary_was_byzantine(r)) {
        assert!(r.max_view >= 1, "{r:?}");
    }
}

/// §4.2, §4.4: an equivocating primary (different pre-prepares to different
/// backups) is caught with evidence, cannot make correct replicas disagree,
/// and is replaced when it stalls progress.
#[test]
fn an_equivocating_primary_is_caught_and_cannot_split_the_replicas() {
    let runs = each_position(Behaviour::Equivocate);
    let byz_primary: Vec<_> = runs.iter().filter(|r| primary_was_byzantine(r)).collect();
    assert!(!byz_primary.is_empty());
    assert!(
        byz_primary.iter().any(|r| r.evidence > 0),
        "{byz_primary:?}"
    );
}

/// A primary that is slow but within the timeout keeps its view: the
/// timeout is a real bound, not a hair trigger.
#[test]
fn a_slow_primary_under_the_timeout_keeps_its_view() {
    let runs = each_position(Behaviour::Slow);
    for r in runs.iter().filter(|r| primary_was_byzantine(r)) {
        assert_eq!(r.max_view, 0, "{r:?}");
    }
}

/// Forged signatures, replays, outsiders' keys, lone view changes and
/// corrupted bytes are all refused, and change nothing.
#[test]
fn forged_replayed_and_malformed_messages_are_refused() {
    let forged = each_position(Behaviour::Forger);
    assert!(forged.iter().all(|r| r.refused > 0));
    let mangled = each_position(Behaviour::Malformed);
    assert!(mangled.iter().all(|r| r.undecodable > 0));
    let votes = each_position(Behaviour::ConflictingVotes);
    assert!(votes.iter().any(|r| r.evidence > 0));
}

/// The bound is real: with f + 1 = 2 colluding Byzantine replicas of 4
/// (the primary equivocates, the accomplice votes for whatever each
/// correct backup was told), two correct replicas execute different
/// batches at one sequence number (TOCS 2002 §4.1: n = 3f + 1 is needed).
#[test]
fn f_plus_1_colluding_replicas_can_break_safety() {
    let cfg = PbftSimConfig {
        collude: true,
        check_liveness: false,
        ..no_faults(vec![
            Some(Behaviour::Equivocate),
            Some(Behaviour::ConflictingVotes),
        ])
    };
    let r = run_seed(1, &cfg);
    let v = r
        .violation
        .expect("f + 1 colluding replicas split the correct ones");
    assert!(v.contains("safety"), "{v}");
    // The same adversary with only f = 1 replica (the equivocating
    // primary) cannot.
    let one = PbftSimConfig {
        byzantine: vec![Some(Behaviour::Equivocate)],
        check_liveness: true,
        ..cfg
    };
    let r = run_seed(1, &one);
    assert_eq!(r.violation, None);
}

/// A power cut: during the chaos every correct replica stops at once and
/// restarts from what it stored (its records, reservation and stable
/// checkpoint), on top of the usual single crashes (also restarts from
/// disk). Safety across the view change that follows rests on the prepared
/// certificates each replica stored before sending its commit (TOCS 2002
/// §4.4: 2f + 1 VIEW-CHANGEs include one from a replica that prepared every
/// committed batch); every batch a restarted replica executes again is
/// checked against what correct replicas executed there, and every state
/// after it against theirs. Then every request is accepted (liveness).
#[test]
fn a_power_cut_loses_nothing_committed() {
    let seeds = seeds(|n| n.map_or(100, |n| n / 2));
    let mut failures = Vec::new();
    let mut crashes = 0;
    for &seed in &seeds {
        let cfg = PbftSimConfig {
            power_cut: true,
            ..mixed(seed)
        };
        let r = run_seed(seed, &cfg);
        crashes += r.crashes;
        if let Some(v) = &r.violation {
            failures.push(format!(
                "seed {seed} (n = {}, byzantine {:?}): {v}\n  replay: MESH_PBFT_SIM_SEED={seed} cargo test --release -p mesh-consensus --test pbft_sim a_power_cut",
                r.n, r.byzantine
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every run had its power cut: at least all correct replicas crashed.
    assert!(crashes >= 3 * seeds.len() as u64, "{crashes} crashes");
}

/// The negative control of the power cut: replicas that do not store their
/// prepared certificates lose committed batches in one (the new view
/// re-assigns their sequence numbers), and the runs break.
#[test]
fn without_stored_prepared_certificates_a_power_cut_breaks_runs() {
    let broken = (1..=40)
        .filter(|&seed| {
            let cfg = PbftSimConfig {
                power_cut: true,
                forget_prepared: true,
                ..mixed(seed)
            };
            run_seed(seed, &cfg).violation.is_some()
        })
        .count();
    assert!(broken > 0, "no run of 40 broke: the control shows nothing");
}

/// The read-index bound is real (TOCS 2002 §5.1.3 waits for 2f + 1
/// answers): reads that take the highest of only f + 1 answers go stale
/// in some runs (a correct replica that missed the last writes and a
/// Byzantine one answering too low outvote nobody), where 2f + 1 never do.
#[test]
fn reads_on_f_plus_1_answers_can_be_stale() {
    let stale = (1..=300).find_map(|seed| {
        let cfg = PbftSimConfig {
            read_answers: Some(2),
            ..PbftSimConfig::default()
        };
        run_seed(seed, &cfg)
            .violation
            .filter(|v| v.contains("stale read"))
    });
    assert!(stale.is_some(), "no stale read in 300 runs");
}

/// Reconfiguration (TOCS 2002 leaves it out; Lamport, Malkhi and Zhou,
/// "Reconfiguring a state machine", 2010, give the α window): in each run
/// the correct replicas vote one replica out (a Byzantine one half the
/// time) for a newcomer's key while the Byzantine replicas vote for a set
/// of their own. The planned set, and only it, is decided by 2f + 1 votes
/// ordered like requests; the old epoch ends at the checkpoint a window
/// above the decision; every correct replica moves to epoch 1; the
/// newcomer joins by state transfer proven by the old set; and every
/// invariant above holds across the change, power cuts included.
#[test]
fn a_committed_reconfiguration_moves_every_correct_replica_to_the_new_set() {
    let seeds = seeds(|n| n.map_or(100, |n| n / 2));
    let mut failures = Vec::new();
    let mut moved = 0;
    for &seed in &seeds {
        let cfg = PbftSimConfig {
            reconfigure: true,
            // Every third run with a power cut as well.
            power_cut: seed.is_multiple_of(3),
            ..mixed(seed)
        };
        let r = run_seed(seed, &cfg);
        moved += r.epoch_changes;
        if let Some(v) = &r.violation {
            failures.push(format!(
                "seed {seed} (n = {}, byzantine {:?}, power cut {}): {v}\n  replay: MESH_PBFT_SIM_SEED={seed} cargo test --release -p mesh-consensus --test pbft_sim a_committed_reconfiguration",
                r.n, r.byzantine, cfg.power_cut
            ));
        } else {
            assert_eq!(r.epoch, 1, "seed {seed}: held but never reached epoch 1");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(moved >= 2 * seeds.len() as u64, "{moved} replicas moved");
}

/// One correct replica left in another view than the others (restarted
/// below their view, or alone in a view change above it), then one more
/// replica down for good: with f = 1 that is every fault the mesh may
/// take, and writes must go on (see `pbft::sim::odd_view`). No Byzantine
/// replica, no loss once the second fault struck.
#[test]
fn a_replica_in_another_view_leaves_room_for_one_more_fault() {
    let seeds = seeds(|n| n.map_or(40, |n| n / 2));
    let mut failures = Vec::new();
    let mut odd = [0, 0];
    // Per kind, then per replica that failed (a backup, the primary).
    let mut resumed = [[vec![], vec![]], [vec![], vec![]]];
    for &seed in &seeds {
        for (k, kind) in [OddView::Behind, OddView::Ahead].into_iter().enumerate() {
            let cfg = PbftSimConfig {
                odd_view: Some(kind),
                requests: 200,
                chaos_ms: 5_000,
                // A node's settings: a restarted primary's signing
                // reservation then lies far above what it executed, so it
                // cannot propose in its old view and stays silent there.
                settings: Settings::default(),
                ..no_faults(vec![])
            };
            let r = run_seed(seed, &cfg);
            let o = r.odd_view.clone().expect("the script ran");
            odd[k] += o.odd_at_fault as usize;
            resumed[k][o.down_was_primary as usize].extend(o.resumed_after_ms);
            if let Some(v) = &r.violation {
                failures.push(format!(
                    "seed {seed} ({kind:?}, odd replica {:?}, down {:?}; at the fault: {}): {v}\n  replay: MESH_PBFT_SIM_SEED={seed} cargo test --release -p mesh-consensus --test pbft_sim a_replica_in_another_view",
                    o.odd, o.down, o.positions
                ));
            }
        }
    }
    eprintln!(
        "{} seeds: the odd replica was still out of the others' view at the second fault in {} (behind) and {} (ahead) runs",
        seeds.len(),
        odd[0],
        odd[1],
    );
    for (k, kind) in ["behind", "ahead"].iter().enumerate() {
        for (p, down) in ["a backup", "the primary"].iter().enumerate() {
            let ms = &mut resumed[k][p];
            ms.sort_unstable();
            eprintln!(
                "{kind}, then {down} down: writes resumed after (runs, min, p50, max) {:?} ms",
                (ms.len(), ms.first(), ms.get(ms.len() / 2), ms.last())
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every run left a replica in another view and then took one more.
    assert_eq!(
        resumed.iter().flatten().map(Vec::len).sum::<usize>(),
        2 * seeds.len()
    );
}
