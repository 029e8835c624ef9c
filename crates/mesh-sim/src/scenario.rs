//! A small text DSL for simulator scenarios.
//!
//! One command per line (or separated by `;`); `#` starts a comment. Node sets are
//! `{1..7}` (inclusive ranges), `{1,4,9}` or a bare index. Durations are `250ms`,
//! `5s`, `2m` or `1h`.
//!
//! ```text
//! profile lan            # timing preset (before start)
//! skew 5%                # nodes started from now on get clocks running up to 5% fast or slow
//! loss 20%               # datagram loss; also: dup 5%, latency 1ms 5ms (uniform),
//!                        # latency exp 1ms 4ms (1 ms + exponential tail of mean 4 ms)
//! start 20               # 20 nodes that already know each other
//! join 3 via 0           # 3 more nodes joining cold through node 0
//! partition {1..7}       # cut {1..7} off (both ways); oneway {1..7}: they can't send
//! heal
//! crash {4}              # kill -9; restart {4}: new generation, rejoins via a live node
//! leave 5                # graceful leave
//! publish 2              # node 2 changes its soft state (a new fact)
//! wait 5s
//! assert converged within 10s
//! assert gone {4} within 3s    # every live node sees it dead or left
//! assert left 5
//! assert mode {1..7} read-only within 5s
//! assert knows 2 within 2s     # every live node has node 2's latest soft state
//! assert no-false-positives
//! ```

use crate::net::{Latency, NetConfig};
use crate::sim::{Sim, SimConfig};
use mesh_membership::{MemberState, Mode};
use mesh_proto::Profile;
use mesh_proto::units::{parse_duration_ms, parse_fraction};

/// One scenario command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Profile(Profile),
    Loss(f64),
    Dup(f64),
    Latency(Latency),
    Skew(f64),
    Start(usize),
    Join {
        count: usize,
        via: u32,
    },
    Partition {
        nodes: Vec<u32>,
        one_way: bool,
    },
    Heal,
    Crash(Vec<u32>),
    Restart(Vec<u32>),
    Leave(u32),
    Publish(u32),
    Wait(u64),
    AssertConverged {
        within_ms: u64,
    },
    AssertGone {
        nodes: Vec<u32>,
        within_ms: u64,
    },
    AssertLeft(u32),
    AssertMode {
        nodes: Vec<u32>,
        mode: Mode,
        within_ms: u64,
    },
    AssertKnows {
        node: u32,
        within_ms: u64,
    },
    AssertNoFalsePositives,
}

/// A parse or run failure, with the line and (for runs) the seed that replays it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// A line is not a valid command, or the scenario starts no nodes.
    #[error("line {line}: {msg}")]
    Parse {
        /// 1-based line number; 0 when the scenario as a whole is at fault.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A step's action or assertion failed while running.
    #[error("step {step} ({text}) failed at {at_ms} ms virtual: {msg} [seed {seed}]")]
    Failed {
        /// 1-based position of the step among all commands.
        step: usize,
        /// The command as written.
        text: String,
        /// Virtual time of the failure, ms.
        at_ms: u64,
        /// What went wrong (the invariant violation, if one stopped the run).
        msg: String,
        /// The seed that replays the failure.
        seed: u64,
    },
}

/// A parsed scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    steps: Vec<(String, Step)>,
}

fn parse_set(s: &str) -> Result<Vec<u32>, String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(s);
    let mut out = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once("..") {
            let a: u32 = a
                .trim()
                .parse()
                .map_err(|_| format!("bad range start in '{part}'"))?;
            let b: u32 = b
                .trim()
                .parse()
                .map_err(|_| format!("bad range end in '{part}'"))?;
            if a > b {
                return Err(format!("empty range '{part}'"));
            }
            out.extend(a..=b);
        } else {
            out.push(
                part.parse()
                    .map_err(|_| format!("'{part}' is not a node index"))?,
            );
        }
    }
    if out.is_empty() {
        return Err(format!("'{s}' names no node"));
    }
    Ok(out)
}

/// Splits a line into commands at `;` and at `,` outside `{...}` sets.
fn split_commands(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0u32;
    for ch in line.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if ch == ';' || (ch == ',' && depth == 0) {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Joins "5 s" into "5s" so durations may be written either way.
fn merge_units(words: Vec<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in words {
        let is_unit = matches!(w, "ms" | "s" | "m" | "h");
        if is_unit && out.last().is_some_and(|p| p.parse::<f64>().is_ok()) {
            out.last_mut().expect("checked").push_str(w);
        } else {
            out.push(w.to_string());
        }
    }
    out
}

fn parse_within(words: &[&str]) -> Result<u64, String> {
    match words {
        [] => Ok(0),
        ["within", d] => parse_duration_ms(d),
        _ => Err(format!(
            "expected 'within DURATION', found '{}'",
            words.join(" ")
        )),
    }
}

impl Scenario {
    /// Parses scenario text; the error names the first bad line.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let mut steps = Vec::new();
        for (lineno, raw_line) in text.lines().enumerate() {
            let line = raw_line.split('#').next().unwrap_or("");
            for cmd in split_commands(line) {
                let step = Self::parse_step(&cmd).map_err(|msg| ScenarioError::Parse {
                    line: lineno + 1,
                    msg,
                })?;
                steps.push((cmd, step));
            }
        }
        Ok(Scenario { steps })
    }

    fn parse_step(cmd: &str) -> Result<Step, String> {
        let w = merge_units(cmd.split_whitespace().collect());
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        let idx = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("'{s}' is not a node index"))
        };
        Ok(match w.as_slice() {
            ["profile", p] => Step::Profile(p.parse()?),
            ["loss", p] => Step::Loss(parse_fraction(p)?),
            ["dup", p] => Step::Dup(parse_fraction(p)?),
            ["latency", a, b] => {
                let (lo, hi) = (parse_duration_ms(a)?, parse_duration_ms(b)?);
                if hi < lo {
                    return Err("latency range is reversed".into());
                }
                Step::Latency(Latency::Uniform {
                    min_us: lo * 1000,
                    max_us: hi * 1000,
                })
            }
            ["latency", "exp", base, mean] => Step::Latency(Latency::Exponential {
                base_us: parse_duration_ms(base)? * 1000,
                mean_extra_us: parse_duration_ms(mean)? * 1000,
            }),
            ["skew", p] => Step::Skew(parse_fraction(p)?),
            ["start", n] => Step::Start(n.parse().map_err(|_| format!("'{n}' is not a count"))?),
            ["join", n, "via", k] => Step::Join {
                count: n.parse().map_err(|_| format!("'{n}' is not a count"))?,
                via: idx(k)?,
            },
            ["partition", set] => Step::Partition {
                nodes: parse_set(set)?,
                one_way: false,
            },
            ["oneway", set] => Step::Partition {
                nodes: parse_set(set)?,
                one_way: true,
            },
            ["heal"] => Step::Heal,
            ["crash", set] => Step::Crash(parse_set(set)?),
            ["restart", set] => Step::Restart(parse_set(set)?),
            ["leave", k] => Step::Leave(idx(k)?),
            ["publish", k] => Step::Publish(idx(k)?),
            ["wait", d] => Step::Wait(parse_duration_ms(d)?),
            ["assert", "converged", rest @ ..] => Step::AssertConverged {
                within_ms: parse_within(rest)?,
            },
            ["assert", "gone", set, rest @ ..] => Step::AssertGone {
                nodes: parse_set(set)?,
                within_ms: parse_within(rest)?,
            },
            ["assert", "left", k] => Step::AssertLeft(idx(k)?),
            ["assert", "mode", set, m, rest @ ..] => Step::AssertMode {
                nodes: parse_set(set)?,
                mode: match *m {
                    "read-only" => Mode::ReadOnly,
                    "read-write" => Mode::ReadWrite,
                    other => {
                        return Err(format!("unknown mode '{other}' (read-only or read-write)"));
                    }
                },
                within_ms: parse_within(rest)?,
            },
            ["assert", "knows", k, rest @ ..] => Step::AssertKnows {
                node: idx(k)?,
                within_ms: parse_within(rest)?,
            },
            ["assert", "no-false-positives"] => Step::AssertNoFalsePositives,
            _ => return Err(format!("unknown command '{cmd}'")),
        })
    }

    /// Runs the scenario with `seed`. On failure the error carries the seed.
    pub fn run(&self, seed: u64) -> Result<Sim, ScenarioError> {
        let mut profile = Profile::Lan;
        let mut net = NetConfig::default();
        let mut skew = 0.0;
        let mut sim: Option<Sim> = None;
        let mut published: Vec<(u32, u64)> = Vec::new();
        for (i, (text, step)) in self.steps.iter().enumerate() {
            let fail = |sim: &Option<Sim>, msg: String| ScenarioError::Failed {
                step: i + 1,
                text: text.clone(),
                at_ms: sim.as_ref().map(|s| s.now_ms()).unwrap_or(0),
                // An invariant violation stops the run early: it is the real failure.
                msg: match sim.as_ref().and_then(|s| s.violation()) {
                    Some(v) => v.to_string(),
                    None => msg,
                },
                seed,
            };
            let need = |sim: &mut Option<Sim>| -> Result<(), ScenarioError> {
                if sim.is_none() {
                    Err(fail(sim, "no nodes yet: use 'start N' first".into()))
                } else {
                    Ok(())
                }
            };
            match step {
                Step::Profile(p) => profile = *p,
                Step::Loss(p) => {
                    net.loss = *p;
                    if let Some(s) = sim.as_mut() {
                        s.net.loss = *p
                    }
                }
                Step::Dup(p) => {
                    net.duplicate = *p;
                    if let Some(s) = sim.as_mut() {
                        s.net.duplicate = *p
                    }
                }
                Step::Latency(l) => {
                    net.latency = *l;
                    if let Some(s) = sim.as_mut() {
                        s.net.latency = *l
                    }
                }
                Step::Skew(p) => {
                    skew = *p;
                    if let Some(s) = sim.as_mut() {
                        s.max_skew = *p
                    }
                }
                Step::Start(n) => {
                    let s = sim.get_or_insert_with(|| {
                        Sim::new(SimConfig {
                            seed,
                            timings: profile.timings(),
                            net: net.clone(),
                            record_events: true,
                        })
                    });
                    s.max_skew = skew;
                    s.start_converged(*n);
                    // Let every node boot (boots are spread over one probe period).
                    let period = s.timings().probe_period_ms;
                    s.run_for_ms(period);
                }
                Step::Join { count, via } => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    for _ in 0..*count {
                        s.start_joining(vec![*via]);
                    }
                }
                Step::Partition { nodes, one_way } => {
                    need(&mut sim)?;
                    sim.as_mut()
                        .expect("checked")
                        .partitions
                        .isolate(nodes, *one_way);
                }
                Step::Heal => {
                    need(&mut sim)?;
                    sim.as_mut().expect("checked").partitions.heal();
                }
                Step::Crash(nodes) => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    for &n in nodes {
                        if !s.is_up(n) {
                            return Err(fail(&sim, format!("n{n} is not running")));
                        }
                        s.crash(n);
                    }
                }
                Step::Restart(nodes) => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    for &n in nodes {
                        if s.is_up(n) || n as usize >= s.len() {
                            return Err(fail(&sim, format!("n{n} is not a crashed node")));
                        }
                        let seeds: Vec<u32> = s
                            .live_nodes()
                            .into_iter()
                            .filter(|x| !nodes.contains(x))
                            .take(3)
                            .collect();
                        s.restart(n, seeds);
                    }
                }
                Step::Leave(k) => {
                    need(&mut sim)?;
                    sim.as_mut().expect("checked").leave(*k);
                }
                Step::Publish(k) => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    let v = s.publish(*k, vec![format!("fact-{}", s.now_ms())]);
                    published.retain(|(n, _)| n != k);
                    published.push((*k, v));
                }
                Step::Wait(ms) => {
                    need(&mut sim)?;
                    sim.as_mut().expect("checked").run_for_ms(*ms);
                }
                Step::AssertConverged { within_ms } => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    if s.run_until_cond(*within_ms, 50, |s| s.converged().is_ok())
                        .is_none()
                    {
                        let why = s.converged().err().unwrap_or_default();
                        return Err(fail(&sim, format!("not converged: {why}")));
                    }
                }
                Step::AssertGone { nodes, within_ms } => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    if s.run_until_cond(*within_ms, 20, |s| {
                        nodes.iter().all(|&n| s.all_see_gone(n))
                    })
                    .is_none()
                    {
                        return Err(fail(
                            &sim,
                            "some live node still sees it alive or suspect".into(),
                        ));
                    }
                }
                Step::AssertLeft(k) => {
                    need(&mut sim)?;
                    let s = sim.as_ref().expect("checked");
                    let key = format!("n{k}");
                    for o in s.live_nodes().into_iter().filter(|o| o != k) {
                        let state = s.view(o).into_iter().find(|m| m.id == key).map(|m| m.state);
                        if state != Some(MemberState::Left) {
                            return Err(fail(
                                &sim,
                                format!("n{o} sees n{k} as {state:?}, not left"),
                            ));
                        }
                    }
                }
                Step::AssertMode {
                    nodes,
                    mode,
                    within_ms,
                } => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    if s.run_until_cond(*within_ms, 20, |s| {
                        nodes.iter().all(|&n| s.mode(n) == Some(*mode))
                    })
                    .is_none()
                    {
                        let modes: Vec<String> = nodes
                            .iter()
                            .map(|&n| format!("n{n}={:?}", s.mode(n)))
                            .collect();
                        return Err(fail(&sim, format!("modes are {}", modes.join(" "))));
                    }
                }
                Step::AssertKnows { node, within_ms } => {
                    need(&mut sim)?;
                    let s = sim.as_mut().expect("checked");
                    let Some(&(_, v)) = published.iter().find(|(n, _)| n == node) else {
                        return Err(fail(&sim, format!("n{node} published nothing")));
                    };
                    let key = crate::id::SimKey(*node);
                    let knows = |s: &Sim| {
                        s.live_nodes().iter().all(|&o| {
                            s.core(o)
                                .and_then(|c| c.soft_version(&key))
                                .is_some_and(|x| x >= v)
                        })
                    };
                    if s.run_until_cond(*within_ms, 20, knows).is_none() {
                        return Err(fail(
                            &sim,
                            format!("not every live node has version {v} of n{node}'s soft state"),
                        ));
                    }
                }
                Step::AssertNoFalsePositives => {
                    need(&mut sim)?;
                    let s = sim.as_ref().expect("checked");
                    let fps = s.false_positives();
                    if !fps.is_empty() {
                        return Err(fail(
                            &sim,
                            format!("{} false positives, first: {:?}", fps.len(), fps[0]),
                        ));
                    }
                    let renewals = s.renewals();
                    if !renewals.is_empty() {
                        return Err(fail(
                            &sim,
                            format!(
                                "{} forced rejoins of healthy nodes, first: {:?}",
                                renewals.len(),
                                renewals[0]
                            ),
                        ));
                    }
                }
            }
            if let Some(v) = sim.as_ref().and_then(|s| s.violation()) {
                return Err(fail(&sim, v.to_string()));
            }
        }
        sim.ok_or(ScenarioError::Parse {
            line: 0,
            msg: "scenario starts no nodes".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_examples() {
        let s = Scenario::parse(
            "start 20; partition {1..7}; wait 5s; heal; assert converged within 10s",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 5);
        assert_eq!(
            s.steps[1].1,
            Step::Partition {
                nodes: (1..=7).collect(),
                one_way: false
            }
        );
        assert_eq!(s.steps[2].1, Step::Wait(5000));
    }

    #[test]
    fn accepts_the_issue_s_own_wording() {
        let s = Scenario::parse("start 20, partition {1..7}, wait 5 s, heal, assert converged")
            .unwrap();
        assert_eq!(s.steps.len(), 5);
        assert_eq!(
            s.steps[1].1,
            Step::Partition {
                nodes: (1..=7).collect(),
                one_way: false
            }
        );
        assert_eq!(s.steps[2].1, Step::Wait(5000));
        let t = Scenario::parse("crash {1,4,9}; latency exp 1ms 4ms").unwrap();
        assert_eq!(t.steps[0].1, Step::Crash(vec![1, 4, 9]));
        assert_eq!(
            t.steps[1].1,
            Step::Latency(Latency::Exponential {
                base_us: 1000,
                mean_extra_us: 4000
            })
        );
    }

    #[test]
    fn rejects_bad_input_with_the_line() {
        let err = Scenario::parse("start 3\nexplode 4").unwrap_err();
        assert_eq!(
            err,
            ScenarioError::Parse {
                line: 2,
                msg: "unknown command 'explode 4'".into()
            }
        );
        assert!(Scenario::parse("loss 140%").is_err());
        assert!(Scenario::parse("partition {5..2}").is_err());
        assert!(Scenario::parse("wait soon").is_err());
    }
}
