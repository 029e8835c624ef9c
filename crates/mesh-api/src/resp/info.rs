//! `INFO` (Redis's sections plus `# Mesh`), `COMMAND` (what `redis-cli` and
//! client libraries ask for) and `HELLO`'s reply.
//!
//! Every figure is measured here or read from the node; one that is not
//! available is left out rather than made up.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use mesh_state::read::ReadCmd;

use super::Server;
use super::frame::Reply;
use super::table::{COMMANDS, Spec, lookup};

/// The Redis version whose commands and replies this endpoint follows.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// `HELLO`'s map.
pub fn hello(id: u64, resp3: bool) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_COMPAT_VERSION)),
        (Reply::bulk("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
        (Reply::bulk("id"), Reply::Int(id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(vec![])),
        (
            Reply::bulk("mesh_version"),
            Reply::bulk(env!("CARGO_PKG_VERSION")),
        ),
    ])
}

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "stats",
    "replication",
    "keyspace",
    "mesh",
];

/// `INFO [section ...]`.
pub async fn info(server: &Server, args: &[Vec<u8>]) -> Reply {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let mut out = String::new();
    let st = &server.stats;
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nmesh_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            server.addr.port(),
            server.started.elapsed().as_secs(),
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            st.connected.load(Ordering::Relaxed),
            server.cfg.max_clients,
            st.blocked.load(Ordering::Relaxed),
        );
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nacl_access_denied_auth:{}\r\ndenied_remote_without_password:{}\r\nprotocol_errors:{}\r\n\r\n",
            st.connections_received.load(Ordering::Relaxed),
            st.commands.load(Ordering::Relaxed),
            st.rejected.load(Ordering::Relaxed),
            st.auth_failures.load(Ordering::Relaxed),
            st.denied_remote.load(Ordering::Relaxed),
            st.protocol_errors.load(Ordering::Relaxed),
        );
    }
    if want("replication") {
        // Every node takes writes (forwarded to the Raft leader).
        out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        // This node's replica: INFO never waits for a quorum.
        if let Ok(r) = server.svc.kv_read_batch(true, &[ReadCmd::DbSize]).await
            && let Some(Ok(mesh_state::Reply::Int(n))) = r.into_iter().next()
            && n > 0
        {
            let _ = write!(out, "db0:keys={n}\r\n");
        }
        out.push_str("\r\n");
    }
    if want("mesh") {
        mesh_section(server, &mut out).await;
    }
    if !all && !wanted.iter().any(|w| SECTIONS.contains(&w.as_str())) {
        // Redis answers an unknown section with nothing.
        out.clear();
    }
    // One CRLF at the end, as Redis sends it.
    let body = out.trim_end_matches("\r\n");
    Reply::Bulk(format!("{body}\r\n").into_bytes())
}

/// `# Mesh`: this node, the leader, the members, the mode.
async fn mesh_section(server: &Server, out: &mut String) {
    let svc = &server.svc;
    let c = svc.consensus_status();
    let leader = c
        .order
        .leader
        .and_then(|id| {
            c.order
                .voters
                .iter()
                .position(|v| *v == id)
                .and_then(|i| c.voter_names.get(i).cloned().flatten())
        })
        .unwrap_or_default();
    let _ = write!(
        out,
        "# Mesh\r\nnode:{}\r\nleader:{}\r\nconsensus:{}\r\nterm:{}\r\nvoters:{}\r\nwritable:{}\r\n",
        svc.node_name(),
        leader,
        c.engine,
        c.order.term,
        c.order.voters.len(),
        u8::from(c.writable),
    );
    if let Some(i) = c.order.commit_index {
        let _ = write!(out, "commit_index:{i}\r\n");
    }
    if let Some(i) = c.order.applied_index {
        let _ = write!(out, "applied_index:{i}\r\n");
    }
    if let Some(m) = svc.membership_status().await {
        let _ = write!(
            out,
            "mode:{}\r\nmembers_reachable:{}\r\nmembers_known:{}\r\n",
            m.mode, m.reachable, m.known
        );
        let names: Vec<String> = m
            .members
            .iter()
            .filter_map(|v| {
                Some(format!(
                    "{}={}",
                    v.get("id")?.as_str()?,
                    v.get("state")?.as_str()?
                ))
            })
            .collect();
        let _ = write!(out, "members:{}\r\n", names.join(","));
    }
}

fn flags(s: &Spec) -> Vec<Reply> {
    s.flags.iter().map(|f| Reply::Simple((*f).into())).collect()
}

/// One `COMMAND INFO` entry.
fn command_info(s: &Spec) -> Reply {
    Reply::Array(vec![
        Reply::bulk(s.name),
        Reply::Int(s.arity as i64),
        Reply::Set(flags(s)),
        Reply::Int(s.first_key as i64),
        Reply::Int(s.last_key as i64),
        Reply::Int(s.step as i64),
        Reply::Set(vec![Reply::Simple(format!("@{}", s.group))]),
        Reply::Set(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

fn command_docs(s: &Spec) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("summary"), Reply::bulk(s.summary)),
        (Reply::bulk("since"), Reply::bulk(s.since)),
        (Reply::bulk("group"), Reply::bulk(s.group)),
    ])
}

/// `COMMAND [COUNT | INFO name ... | DOCS [name ...] | LIST]`.
pub fn command(a: &[Vec<u8>], _resp3: bool) -> Reply {
    let Some(sub) = a.get(1) else {
        return Reply::Array(COMMANDS.iter().map(command_info).collect());
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    match sub.as_str() {
        "count" if a.len() == 2 => Reply::Int(COMMANDS.len() as i64),
        "list" if a.len() == 2 => {
            Reply::Array(COMMANDS.iter().map(|s| Reply::bulk(s.name)).collect())
        }
        "info" => {
            if a.len() == 2 {
                return Reply::Array(COMMANDS.iter().map(command_info).collect());
            }
            Reply::Array(
                a[2..]
                    .iter()
                    .map(|n| lookup(n).map(command_info).unwrap_or(Reply::NilArray))
                    .collect(),
            )
        }
        "docs" => {
            let specs: Vec<&Spec> = if a.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                a[2..].iter().filter_map(|n| lookup(n)).collect()
            };
            Reply::Map(
                specs
                    .into_iter()
                    .map(|s| (Reply::bulk(s.name), command_docs(s)))
                    .collect(),
            )
        }
        "count" | "list" => Reply::err(format!(
            "ERR wrong number of arguments for 'command|{sub}' command"
        )),
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&a[1])
        )),
    }
}
