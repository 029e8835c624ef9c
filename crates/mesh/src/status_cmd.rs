//! `mesh status`: a node's view of the mesh, as a table or JSON.

use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct StatusArgs {
    /// The node's HTTP URL
    #[arg(long, env = "MESH_NODE", default_value = "http://127.0.0.1:7070")]
    node: String,
    /// Print the raw JSON of /v1/status
    #[arg(long)]
    json: bool,
}

/// `GET /v1/status` of the node at `url`, with the token from
/// `MESH_HTTP_TOKEN` when it is set (a node with `--http-token` refuses
/// requests without it).
pub fn fetch(url: &str) -> anyhow::Result<Value> {
    crate::api::Api::new(url).get("/v1/status")
}

fn fmt_opt(v: &Value, f: impl Fn(&Value) -> Option<String>) -> String {
    if v.is_null() {
        "-".into()
    } else {
        f(v).unwrap_or_else(|| "-".into())
    }
}

pub fn render(s: &Value) -> String {
    let mut out = String::new();
    let h = &s["health"];
    out += &format!(
        "node {}  mode {}  reachable {}/{}  profile {}  uptime {:.0}s\n",
        s["node_id"].as_str().unwrap_or("?"),
        s["mode"].as_str().unwrap_or("?"),
        s["reachable"],
        s["known"],
        s["profile"].as_str().unwrap_or("?"),
        s["uptime_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    out += &format!(
        "traffic in {} msg/s, out {} msg/s; dropped {}; cpu {}; rss {}\n\n",
        fmt_opt(&h["messages_in_per_sec"], |v| v
            .as_f64()
            .map(|x| format!("{x:.1}"))),
        fmt_opt(&h["messages_out_per_sec"], |v| v
            .as_f64()
            .map(|x| format!("{x:.1}"))),
        h["packets_dropped_total"],
        fmt_opt(&h["cpu_percent"], |v| v
            .as_f64()
            .map(|x| format!("{x:.1}%"))),
        fmt_opt(&h["resident_bytes"], |v| v
            .as_f64()
            .map(|x| format!("{:.1} MiB", x / 1048576.0))),
    );
    out += &render_consensus(&s["consensus"]);
    out += &render_tasks(&s["tasks"]);
    out += &format!(
        "{:<18} {:<22} {:<8} {:>4} {:<10} {:<20} {:>8} {:>12}\n",
        "ID", "ADDR", "STATE", "INC", "ZONE", "CAPS", "RTT", "CHANGED"
    );
    for m in s["members"].as_array().into_iter().flatten() {
        let id = format!(
            "{}{}",
            m["id"].as_str().unwrap_or("?"),
            if m["self"].as_bool() == Some(true) {
                " *"
            } else {
                ""
            }
        );
        let caps = m["caps"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        out += &format!(
            "{:<18} {:<22} {:<8} {:>4} {:<10} {:<20} {:>8} {:>12}\n",
            id,
            m["addr"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["incarnation"],
            m["zone"].as_str().unwrap_or("-"),
            if caps.is_empty() { "-".into() } else { caps },
            fmt_opt(&m["rtt_ms"], |v| v.as_f64().map(|x| format!("{x:.1}ms"))),
            fmt_opt(&m["last_change_ms"], |v| v
                .as_f64()
                .map(|x| format!("{:.1}s ago", x / 1000.0))),
        );
        let by = |k: &str| {
            m[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        };
        let (s_by, c_by) = (by("suspected_by"), by("confirmed_by"));
        if !s_by.is_empty() || !c_by.is_empty() {
            out += &format!("{:<18} suspected by [{s_by}], confirmed by [{c_by}]\n", "");
        }
        if m["reputation"] == "accused" {
            out += &format!(
                "{:<18} ACCUSED: this node's pBFT replica holds {} piece(s) of evidence that it lied\n",
                "", m["evidence"]
            );
        }
    }
    out
}

/// The task lines: counts by state, rates, latencies, balance.
fn render_tasks(t: &Value) -> String {
    if t.is_null() {
        return String::new();
    }
    let states: Vec<String> = t["by_state"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let rate = |k: &str| {
        fmt_opt(&t["per_sec"][k], |v| {
            v.as_f64().map(|x| format!("{x:.1}/s"))
        })
    };
    let ms = |v: &Value| fmt_opt(v, |v| v.as_u64().map(|x| format!("{x} ms")));
    format!(
        "tasks {}  waiting {}\n  submitted {}  completed {}  failed {}  retried {}  dispatch p50 {} p99 {}  end-to-end p50 {}  load variance {}  hotspots {}  completion rate {}\n\n",
        if states.is_empty() {
            "none".to_string()
        } else {
            states.join(", ")
        },
        t["waiting"],
        rate("submitted"),
        rate("completed"),
        rate("failed"),
        rate("retried"),
        ms(&t["dispatch_ms"]["p50"]),
        ms(&t["dispatch_ms"]["p99"]),
        ms(&t["end_to_end_ms"]["p50"]),
        fmt_opt(&t["load_variance"], |v| v
            .as_f64()
            .map(|x| format!("{:.1}%", x * 100.0))),
        t["hotspots"].as_array().map_or(0, |h| h.len()),
        fmt_opt(&t["completion_rate"], |v| v
            .as_f64()
            .map(|x| format!("{:.1}%", x * 100.0))),
    )
}

/// The consensus lines: leader, term, commit index, voters and learners.
fn render_consensus(c: &Value) -> String {
    if c.is_null() {
        return String::new();
    }
    let names = |ids: &Value, names: &Value| -> String {
        let ids = ids.as_array().cloned().unwrap_or_default();
        let names = names.as_array().cloned().unwrap_or_default();
        let list: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| match names.get(i).and_then(|n| n.as_str()) {
                Some(n) => n.to_string(),
                None => format!("#{id}"),
            })
            .collect();
        if list.is_empty() {
            "-".into()
        } else {
            list.join(", ")
        }
    };
    let leader = match (c["leader"].as_u64(), c["voters"].as_array()) {
        (Some(l), Some(v)) => {
            let i = v.iter().position(|x| x.as_u64() == Some(l));
            i.and_then(|i| c["voter_names"][i].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("#{l}"))
        }
        _ => "none".into(),
    };
    if c["engine"] == "pbft" {
        return pbft_line(c, &leader, &names(&c["voters"], &c["voter_names"]));
    }
    format!(
        "consensus {}  leader {}  term {}  commit {}  applied {}  {}\nvoters [{}]  learners [{}]\n\n",
        c["engine"].as_str().unwrap_or("?"),
        leader,
        c["term"],
        fmt_opt(&c["commit_index"], |v| v.as_u64().map(|x| x.to_string())),
        fmt_opt(&c["applied_index"], |v| v.as_u64().map(|x| x.to_string())),
        if c["writable"] == true {
            "writable"
        } else {
            "READ-ONLY"
        },
        names(&c["voters"], &c["voter_names"]),
        names(&c["learners"], &c["learner_names"]),
    )
}

/// pBFT's lines: view and primary, the replicas, this replica's position
/// and counters, and the evidence it holds against replicas that lied.
fn pbft_line(c: &Value, primary: &str, replicas: &str) -> String {
    let p = &c["pbft"];
    let mut out = format!(
        "consensus pbft  primary {primary}  view {}{}  executed {}  stable checkpoint {}  {}\nreplicas [{replicas}]  (n = {}, tolerates f = {} that lie)\nsignatures made {}  verified {}  sent {} frames, {} bytes  refused {}  view changes {}  state transfers {}\n",
        p["view"],
        if p["active"] == false {
            " (changing)"
        } else {
            ""
        },
        p["last_executed"],
        p["low_watermark"],
        if c["writable"] == true {
            "writable"
        } else {
            "READ-ONLY"
        },
        p["replicas"],
        p["f"],
        p["signatures_made"],
        p["signatures_verified"],
        p["frames_sent"],
        p["bytes_sent"],
        p["refused"],
        p["view_changes"],
        p["state_transfers"],
    );
    if p["log_syncs"].is_u64() {
        out.push_str(&format!(
            "log {} records in {} syncs ({} bytes) since start  stored checkpoint {}  replayed at start {}\n",
            p["log_records"],
            p["log_syncs"],
            p["log_bytes"],
            p["stored_checkpoint"],
            p["replayed"],
        ));
    }
    let evidence = p["evidence"].as_array().cloned().unwrap_or_default();
    if p["evidence_total"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "EVIDENCE of misbehaviour: {} piece(s)\n",
            p["evidence_total"]
        ));
        for e in evidence.iter().rev().take(5) {
            let who = e["culprit"].as_u64().map_or_else(
                || format!("replica {}", e["culprit"]),
                |i| replica_name(c, i as usize),
            );
            out.push_str(&format!(
                "  {who}: {} in view {}\n",
                e["kind"].as_str().unwrap_or("?"),
                e["view"]
            ));
        }
    }
    let bad: Vec<String> = p["bad_signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(i, n)| format!("{} {n}", replica_name(c, i)))
        .collect();
    if !bad.is_empty() {
        out.push_str(&format!(
            "bad signatures refused, by the name they claimed (not proof against it): {}\n",
            bad.join(", ")
        ));
    }
    out.push('\n');
    out
}

/// Replica `i`'s node name, or "replica i" where the status has none.
fn replica_name(c: &Value, i: usize) -> String {
    c["voter_names"][i]
        .as_str()
        .map_or_else(|| format!("replica {i}"), str::to_string)
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let s = fetch(&args.node)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render(&s));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Proofs are shown as evidence; bad signatures on a line of their own,
    /// by the name they claimed, and only when there are some.
    #[test]
    fn pbft_lines_show_evidence_and_bad_signatures_apart() {
        let mut c = json!({
            "writable": true,
            "voter_names": ["a", "b", "c", "d"],
            "pbft": {
                "view": 0, "active": true, "last_executed": 9, "low_watermark": 0,
                "replicas": 4, "f": 1, "evidence_total": 1,
                "evidence": [{"culprit": 0, "kind": "equivocation", "view": 0}],
                "bad_signatures": [0, 0, 3, 0],
            }
        });
        let out = super::pbft_line(&c, "a", "a b c d");
        assert!(out.contains("EVIDENCE of misbehaviour: 1 piece(s)\n  a: equivocation in view 0"));
        assert!(out.contains(
            "bad signatures refused, by the name they claimed (not proof against it): c 3\n"
        ));
        c["pbft"]["bad_signatures"] = json!([0, 0, 0, 0]);
        assert!(!super::pbft_line(&c, "a", "a b c d").contains("bad signatures"));
    }
}
