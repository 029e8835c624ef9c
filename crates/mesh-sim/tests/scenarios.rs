//! Scenario tests: the membership core under faults, in virtual time.
//!
//! Each scenario runs with a fixed list of seeds (or `MESH_SIM_SEED=S` to replay
//! one). A failure names the seed and the command that replays it.

use mesh_sim::scenario::Scenario;

fn seeds() -> Vec<u64> {
    match std::env::var("MESH_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("MESH_SIM_SEED must be a number")],
        Err(_) => vec![1, 2, 3],
    }
}

fn run(name: &str, text: &str) -> mesh_sim::Sim {
    let scenario = Scenario::parse(text).expect("scenario parses");
    let mut last = None;
    for seed in seeds() {
        match scenario.run(seed) {
            Ok(sim) => last = Some(sim),
            Err(e) => panic!(
                "{e}\nreplay: MESH_SIM_SEED={seed} cargo test -p mesh-sim --test scenarios {name}"
            ),
        }
    }
    last.expect("at least one seed")
}

#[test]
fn converged_mesh_stays_converged_without_faults() {
    run(
        "converged_mesh_stays_converged_without_faults",
        "start 20; wait 10s; assert converged; assert no-false-positives",
    );
}

#[test]
fn cold_join_through_one_seed() {
    run(
        "cold_join_through_one_seed",
        "start 1; join 9 via 0; assert converged within 5s; assert no-false-positives",
    );
}

#[test]
fn crash_is_detected_and_agreed() {
    run(
        "crash_is_detected_and_agreed",
        "start 20; wait 2s; crash {7}; assert gone {7} within 3s; assert converged; assert no-false-positives",
    );
}

#[test]
fn crash_and_rejoin() {
    run(
        "crash_and_rejoin",
        "start 10; wait 1s; crash {3}; assert gone {3} within 3s; restart {3}; assert converged within 5s; assert no-false-positives",
    );
}

#[test]
fn graceful_leave_is_left_not_dead() {
    run(
        "graceful_leave_is_left_not_dead",
        "start 8; wait 1s; leave 5; wait 2s; assert left 5",
    );
}

#[test]
fn partition_and_heal() {
    run(
        "partition_and_heal",
        "start 20; wait 1s; partition {1..7}; assert mode {1..7} read-only within 5s; assert mode {0,8..19} read-write; \
         heal; assert converged within 15s; assert mode {0..19} read-write",
    );
}

#[test]
fn one_way_partition_heals() {
    run(
        "one_way_partition_heals",
        "start 12; wait 1s; oneway {2..3}; wait 5s; heal; assert converged within 15s",
    );
}

#[test]
fn flapping_node() {
    run(
        "flapping_node",
        "start 10; wait 1s; crash {4}; wait 2s; restart {4}; wait 1s; crash {4}; wait 2s; restart {4}; wait 1s; \
         crash {4}; wait 2s; restart {4}; assert converged within 10s",
    );
}

#[test]
fn twenty_percent_loss_still_converges_and_detects() {
    run(
        "twenty_percent_loss_still_converges_and_detects",
        "loss 20%; dup 2%; latency 1ms 5ms; start 20; wait 5s; crash {9}; assert gone {9} within 5s; publish 3; assert knows 3 within 5s",
    );
}

#[test]
fn soft_state_fact_reaches_everyone() {
    run(
        "soft_state_fact_reaches_everyone",
        "start 50; wait 1s; publish 7; assert knows 7 within 2s",
    );
}

#[test]
fn membership_report_measures_a_small_mesh() {
    let report = mesh_sim::report::MembershipRun {
        nodes: 30,
        seed: 7,
        loss: 0.0,
        duration_ms: 15_000,
        profile: mesh_proto::Profile::Lan,
        latency: mesh_sim::net::Latency::LAN,
    }
    .run();
    assert!(report.invariant_violation.is_none(), "{}", report.to_text());
    assert_eq!(report.dissemination.reached, 29, "{}", report.to_text());
    assert_eq!(report.crash.agreed, 29, "{}", report.to_text());
    assert_eq!(report.false_positives, 0, "{}", report.to_text());
    let detect = report.crash.first_detection_ms.expect("detected");
    let agree = report.crash.full_agreement_ms.expect("agreed");
    assert!(detect <= agree);
}

#[test]
fn soft_state_published_during_a_partition_reaches_the_other_side() {
    // The rumour runs out of retransmissions during the partition. After the heal
    // both sides learn they were declared dead, rejoin under new generations and
    // re-announce their soft state (anti-entropy is tested at the core level).
    run(
        "soft_state_published_during_a_partition_reaches_the_other_side",
        "start 12; wait 1s; partition {6..11}; wait 1s; publish 2; wait 3s; heal; assert converged within 20s; assert knows 2 within 25s",
    );
}

#[test]
fn long_tail_latency_and_duplicates() {
    run(
        "long_tail_latency_and_duplicates",
        "latency exp 1ms 20ms; dup 10%; start 15; wait 3s; crash {5}; assert gone {5} within 5s; assert converged; assert no-false-positives",
    );
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let text = "loss 10%; dup 3%; latency exp 1ms 5ms; start 25; wait 2s; crash {3}; wait 2s; publish 1; partition {10..14}; wait 3s; heal; wait 3s";
    let scenario = Scenario::parse(text).unwrap();
    let a = scenario.run(77).unwrap();
    let b = scenario.run(77).unwrap();
    let c = scenario.run(78).unwrap();
    let trace = |s: &mesh_sim::Sim| -> Vec<String> {
        s.observed
            .iter()
            .map(|o| format!("{} {} {:?}", o.at_us, o.observer, o.event))
            .collect()
    };
    assert_eq!(a.stats.events_processed, b.stats.events_processed);
    assert_eq!(a.stats.datagrams_sent, b.stats.datagrams_sent);
    assert_eq!(trace(&a), trace(&b));
    assert_ne!(
        trace(&a),
        trace(&c),
        "a different seed should give a different run"
    );
}

#[test]
fn a_failing_scenario_names_its_seed() {
    // Nobody can detect a crash in 1 ms: this must fail, and say how to replay it.
    let Err(err) = Scenario::parse("start 5; crash {2}; assert gone {2} within 1ms")
        .unwrap()
        .run(4242)
    else {
        panic!("an impossible assertion passed");
    };
    let msg = err.to_string();
    assert!(msg.contains("seed 4242"), "{msg}");
    assert!(msg.contains("step 3"), "{msg}");
}

fn report(
    nodes: usize,
    loss: f64,
    duration_ms: u64,
    seed: u64,
) -> mesh_sim::report::MembershipReport {
    mesh_sim::report::MembershipRun {
        nodes,
        seed,
        loss,
        duration_ms,
        profile: mesh_proto::Profile::Lan,
        latency: mesh_sim::net::Latency::LAN,
    }
    .run()
}

#[test]
fn an_hour_at_ten_percent_loss_has_no_false_positives() {
    // The target: N = 50, 10% datagram loss, one hour of virtual time.
    let r = report(50, 0.10, 3_600_000, 1);
    assert!(r.invariant_violation.is_none(), "{}", r.to_text());
    assert_eq!(r.false_positives, 0, "{}", r.to_text());
    assert_eq!(r.renewals, 0, "{}", r.to_text());
    assert_eq!(r.crash.agreed, 49, "{}", r.to_text());
}

#[test]
fn a_fact_reaches_all_but_one_in_ten_thousand_within_two_virtual_seconds() {
    // Virtual time, so deterministic; the 10,000-node run is `mesh sim membership`.
    let r = report(2_000, 0.0, 12_000, 3);
    let t = r.dissemination.to_99_99pct_ms.expect("reached 99.99%");
    assert!(t <= 2_000, "{}", r.to_text());
    assert!(
        (r.traffic.steady_messages_per_member_per_sec - 10.0).abs() < 0.5,
        "{}",
        r.to_text()
    );
}

#[test]
fn clocks_running_ten_percent_apart() {
    run(
        "clocks_running_ten_percent_apart",
        "skew 10%; loss 5%; start 20; wait 10s; crash {3}; assert gone {3} within 5s; restart {3}; assert converged within 10s; assert no-false-positives",
    );
}
