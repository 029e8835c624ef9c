//! End-to-end: the HTTP API's bearer token and OpenAPI document, on a real
//! `mesh up` process. Without the token every request but `GET /healthz` is
//! refused with 401 `unauthorized` (and counted); the CLI sends the token from
//! `MESH_HTTP_TOKEN`; a node refuses to serve a non-loopback address without a
//! token. `/v1/openapi.json` lists the routes that really answer.

use std::path::Path;
use std::process::{Command, Stdio};

use mesh_cli::cluster::Cluster;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_mesh");

mod common;
use common::http_with_token;
const TOKEN: &str = "test-token-0123456789";

fn call(url: &str, token: Option<&str>) -> (u16, Value, Option<String>) {
    let (status, body, headers) = http_with_token("GET", url, None, token);
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (status, body, challenge)
}

#[test]
fn a_token_guards_every_route_but_health_and_the_cli_sends_it() {
    let mut c = Cluster::new(Path::new(EXE), "local", "http-api").unwrap();
    let n = c
        .spawn_with("h0", &[], &["--http-token", TOKEN, "--voters", "1"])
        .unwrap();
    let base = format!("http://{}", c.info(n).http);
    let url = |p: &str| format!("{base}{p}");

    let (s, v, challenge) = call(&url("/v1/status"), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (s, v, _) = call(&url("/v1/status"), Some("wrong-token-0123456789"));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    // Unknown paths are no way around it.
    assert_eq!(call(&url("/v1/nothing-here"), None).0, 401);
    // Health checks need no token, nor the dashboard page (it holds no data
    // and asks for the token); the event stream and messaging do.
    assert_eq!(call(&url("/healthz"), None).0, 200);
    let (s, page, _) = call(&url("/"), None);
    assert_eq!(s, 200);
    assert!(
        page.as_str().is_some_and(|p| p.contains("Agent Mesh")),
        "{page}"
    );
    for path in [
        "/v1/events",
        "/v1/messaging",
        "/v1/metrics/history",
        "/v1/messages/1",
    ] {
        assert_eq!(call(&url(path), None).0, 401, "{path}");
    }
    let (s, v, _) = call(&url("/v1/status"), Some(TOKEN));
    assert_eq!(s, 200, "{v}");

    // The CLI: refused without the token, served with it.
    let cli = |args: &[&str], token: Option<&str>| {
        let mut cmd = Command::new(EXE);
        cmd.args(args)
            .env_remove("MESH_HTTP_TOKEN")
            .stdin(Stdio::null());
        if let Some(t) = token {
            cmd.env("MESH_HTTP_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let kv = ["kv", "--node", &base, "set", "notes", "k", "v"];
    let status = ["status", "--node", &base];
    for args in [&kv[..], &status[..]] {
        let out = cli(args, None);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unauthorized"), "{args:?}: {err}");
        let out = cli(args, Some(TOKEN));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (s, v, _) = call(&url("/v1/kv/notes/k?raw=true"), Some(TOKEN));
    assert_eq!((s, v.as_str()), (200, Some("v")), "{v}");

    // Refusals are counted.
    let (_, metrics, _) = call(&url("/metrics"), Some(TOKEN));
    let refused: u64 = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("mesh_http_unauthorized_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the counter is exported");
    assert!(refused >= 4, "{refused}");

    // The OpenAPI document: every path without parameters that it lists as a
    // GET answers (not 404/405).
    let (s, doc, _) = call(&url("/v1/openapi.json"), Some(TOKEN));
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/tasks/{id}"), "{:?}", paths.keys());
    for (path, ops) in paths {
        if path.contains('{') || ops.get("get").is_none() || path.ends_with("/events") {
            continue;
        }
        let (s, v, _) = call(&url(path), Some(TOKEN));
        assert!(s != 404 && s != 405, "GET {path}: {s} {v}");
    }
}

#[test]
fn an_open_address_without_a_token_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("mesh-http-open-{}", std::process::id()));
    let out = Command::new(EXE)
        .args(["up", "--http", "0.0.0.0:0", "--bind", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("MESH_HTTP_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http-token"), "{err}");
}
