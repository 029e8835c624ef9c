//! `mesh kv set|get|del|list`: shared memory from the command line.

use std::io::Read;

use clap::{Args, Subcommand};

use crate::api::{Api, DEFAULT_NODE, segment};

#[derive(Args)]
pub struct KvArgs {
    /// The node's HTTP URL (any node: writes are forwarded to the leader)
    #[arg(long, env = "MESH_NODE", default_value = DEFAULT_NODE, global = true)]
    node: String,
    #[command(subcommand)]
    cmd: KvCmd,
}

#[derive(Subcommand)]
enum KvCmd {
    /// Write a value ("-" reads it from stdin)
    Set {
        namespace: String,
        key: String,
        value: String,
        /// Expire after this long (whole seconds: 30s, 10m, 2h)
        #[arg(long)]
        ttl: Option<String>,
        /// Only if the key does not exist
        #[arg(long, conflicts_with_all = ["if_present", "if_value"])]
        if_absent: bool,
        /// Only if the key exists
        #[arg(long, conflicts_with = "if_value")]
        if_present: bool,
        /// Compare-and-set: only if the current value is this
        #[arg(long)]
        if_value: Option<String>,
        /// Idempotency key: a retry with the same key applies at most once
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Print a value (strings raw; other types as JSON)
    Get {
        namespace: String,
        key: String,
        /// Read this node's replica without a linearizable read point
        #[arg(long)]
        stale: bool,
        /// Print the whole item as JSON (type, value, ttl)
        #[arg(long)]
        json: bool,
    },
    /// Delete a key
    Del { namespace: String, key: String },
    /// List keys of a namespace
    List {
        namespace: String,
        /// Only keys starting with this
        #[arg(long)]
        prefix: Option<String>,
        /// Only keys matching this glob (* ? [abc])
        #[arg(long = "match")]
        pattern: Option<String>,
        /// At most this many keys (default 1000)
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        stale: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Parses a TTL like "30s" into whole seconds.
pub fn ttl_secs(s: &str) -> anyhow::Result<u64> {
    let ms = mesh_proto::units::parse_duration_ms(s).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    if ms == 0 || ms % 1000 != 0 {
        anyhow::bail!("--ttl {s}: must be a whole number of seconds, at least 1s");
    }
    Ok(ms / 1000)
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub fn run(args: KvArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.node);
    match args.cmd {
        KvCmd::Set {
            namespace,
            key,
            value,
            ttl,
            if_absent,
            if_present,
            if_value,
            request_id,
        } => {
            let bytes = if value == "-" {
                let mut b = Vec::new();
                std::io::stdin().read_to_end(&mut b)?;
                b
            } else {
                value.into_bytes()
            };
            let q = query(&[
                (
                    "ttl",
                    ttl.as_deref()
                        .map(ttl_secs)
                        .transpose()?
                        .map(|t| t.to_string()),
                ),
                ("if_absent", if_absent.then(|| "true".into())),
                ("if_present", if_present.then(|| "true".into())),
                ("if_value", if_value),
            ]);
            let path = format!("/v1/kv/{}/{}{q}", segment(&namespace), segment(&key));
            match api.send(
                "PUT",
                &path,
                &bytes,
                "application/octet-stream",
                request_id.as_deref(),
            ) {
                Ok(_) => println!("OK"),
                Err(e) => match e.downcast_ref::<crate::api::ApiError>() {
                    Some(a) if a.code == "condition_failed" => {
                        eprintln!("not written: the condition did not hold");
                        std::process::exit(2);
                    }
                    _ => return Err(e),
                },
            }
        }
        KvCmd::Get {
            namespace,
            key,
            stale,
            json,
        } => {
            let q = query(&[("stale", stale.then(|| "true".into()))]);
            let path = format!("/v1/kv/{}/{}{q}", segment(&namespace), segment(&key));
            if !json {
                // Strings byte for byte; other types fall through to JSON.
                let sep = if q.is_empty() { '?' } else { '&' };
                match api.get_raw(&format!("{path}{sep}raw=true")) {
                    Ok(bytes) => {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        out.write_all(&bytes)?;
                        out.write_all(b"\n")?;
                        return Ok(());
                    }
                    Err(e) => match e.downcast_ref::<crate::api::ApiError>() {
                        Some(a) if a.code == "wrong_type" => {}
                        _ => return Err(e),
                    },
                }
            }
            let item = api.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&item)?);
            } else {
                println!("{}", item["value"]);
            }
        }
        KvCmd::Del { namespace, key } => {
            let path = format!("/v1/kv/{}/{}", segment(&namespace), segment(&key));
            let r = api.send("DELETE", &path, &[], "", None)?;
            println!(
                "{}",
                if r["deleted"] == true {
                    "deleted"
                } else {
                    "no such key"
                }
            );
        }
        KvCmd::List {
            namespace,
            prefix,
            pattern,
            limit,
            stale,
            json,
        } => {
            let q = query(&[
                ("prefix", prefix),
                ("match", pattern),
                ("limit", limit.map(|l| l.to_string())),
                ("stale", stale.then(|| "true".into())),
            ]);
            let r = api.get(&format!("/v1/kv/{}{q}", segment(&namespace)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for k in r["keys"].as_array().into_iter().flatten() {
                    println!("{}", k.as_str().unwrap_or_default());
                }
                if r["truncated"] == true {
                    eprintln!("(more keys match; raise --limit)");
                }
            }
        }
    }
    Ok(())
}
