//! The dashboard in a real headless browser: Debian's Chromium driven through
//! ChromeDriver's W3C WebDriver HTTP API (plain JSON over HTTP, no extra
//! crate). Loads `/` of a live three-node mesh, checks it draws three members
//! alive with a leader and live charts, kills one node with SIGKILL and checks
//! the page turns it dead without a reload, and keeps a screenshot of each
//! state under `target/tmp/` (`dashboard-live.png`, `dashboard-dead.png`).
//!
//! `.ci/run` installs `chromium` and `chromium-driver`; in CI (`CI=true`) a
//! missing browser fails the test, elsewhere it is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mesh_cli::cluster::wait_for;
use serde_json::{Value, json};

mod common;
use common::{http, register_agent, three_node_mesh, url};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let driver = PathBuf::from("/usr/bin/chromedriver");
    driver.exists().then_some((chromium, driver))
}

/// Chromium and ChromeDriver, installed from Debian when missing.
fn tools() -> Option<(PathBuf, PathBuf)> {
    if let Some(t) = find_tools() {
        return Some(t);
    }
    eprintln!("installing Debian's chromium and chromium-driver");
    let _ = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver",
        ])
        .stdout(Stdio::null())
        .status();
    find_tools()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One WebDriver command; its `value`.
fn wd(method: &str, url: &str, body: Option<Value>) -> Value {
    let b = body.map(|b| b.to_string());
    let (status, v) = http(method, url, b.as_deref().map(str::as_bytes));
    assert!(status < 300, "{method} {url}: {status} {v}");
    v["value"].clone()
}

fn script(session: &str, js: &str) -> Value {
    wd(
        "POST",
        &format!("{session}/execute/sync"),
        Some(json!({"script": js, "args": []})),
    )
}

fn screenshot(session: &str, name: &str) -> PathBuf {
    let png = wd("GET", &format!("{session}/screenshot"), None);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

const NODES_JS: &str = "return Array.from(document.querySelectorAll('#graph g.node')).map(g => [g.dataset.node, g.dataset.state, g.dataset.leader || '']);";

fn nodes(session: &str) -> Vec<(String, String, bool)> {
    script(session, NODES_JS)
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_string(),
                r[1].as_str().unwrap_or_default().to_string(),
                r[2] == "true",
            )
        })
        .collect()
}

#[test]
fn the_dashboard_shows_three_nodes_live_and_a_killed_one_dead() {
    let Some((chromium, driver)) = tools() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromedriver are missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: Debian's chromium and chromium-driver are not installed here");
        return;
    };
    let exe = env!("CARGO_BIN_EXE_mesh");
    let mut c = three_node_mesh(exe, "dash");
    let port = free_port();
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromedriver.log");
    let _driver = Kill(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let up = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        ok && http("GET", &format!("{base}/status"), None).1["value"]["ready"] == true
    });
    assert!(up.is_some(), "chromedriver did not start");
    let profile =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-{}", std::process::id()));
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            // The closed network: no background connections, no sync.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1100",
                     format!("--user-data-dir={}", profile.display())],
        }
    }}});
    let s = wd("POST", &format!("{base}/session"), Some(caps));
    let session = format!("{base}/session/{}", s["sessionId"].as_str().unwrap());

    // Some work to show: a proposal and a task (no worker: it waits ready).
    for (id, seed) in [("x", 1u8), ("y", 2)] {
        let (st, v) = register_agent(&c, 0, id, "judge", &[], seed);
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = http(
        "POST",
        &url(&c, 0, "/v1/proposals"),
        Some(
            json!({"id": "dash-vote", "body": "ship", "voters": ["x", "y"]})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = http(
        "POST",
        &url(&c, 0, "/v1/tasks"),
        Some(
            json!({"id": "dash-task", "payload_text": "hello"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "{v}");

    wd(
        "POST",
        &format!("{session}/url"),
        Some(json!({"url": url(&c, 0, "/")})),
    );
    let mut seen = Vec::new();
    let live = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        seen = nodes(&session);
        seen.len() == 3 && seen.iter().all(|n| n.1 == "alive") && seen.iter().any(|n| n.2)
    });
    assert!(
        live.is_some(),
        "the dashboard did not show three live nodes and a leader: {seen:?}"
    );
    // Live charts, the event stream, the task table and the proposal.
    let filled = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let v = script(
            &session,
            "return [document.getElementById('lg-lat').textContent, document.getElementById('conn').textContent, \
             document.querySelector('#tasks tbody').textContent, document.querySelector('#proposals tbody').textContent, \
             document.getElementById('lg-load').textContent];",
        );
        v[0].as_str().is_some_and(|t| t.contains("dispatch p50"))
            && v[1] == "live"
            && v[2].as_str().is_some_and(|t| t.contains("dash-task"))
            && v[3].as_str().is_some_and(|t| t.contains("dash-vote"))
            && v[4].as_str().is_some_and(|t| t.contains("cpu %"))
    });
    assert!(
        filled.is_some(),
        "charts, stream, tasks or proposals missing"
    );
    // The charts take a sample a second: a few, so the screenshot shows lines.
    let sampled = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        script(&session, "return S.series.lat['dispatch p50 ms'].length;").as_u64() >= Some(4)
    });
    assert!(sampled.is_some(), "the charts are not sampling");
    let shot = screenshot(&session, "dashboard-live.png");

    // Kill a node that is not the one serving the page; it turns dead, no reload.
    let victim = 2;
    let name = c.info(victim).node_id.clone();
    let marker = script(&session, "window.__notReloaded = true; return true;");
    assert_eq!(marker, json!(true));
    c.kill_hard(victim).unwrap();
    let killed = Instant::now();
    let dead = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        nodes(&session).iter().any(|n| n.0 == name && n.1 == "dead")
    });
    assert!(
        dead.is_some(),
        "the killed node never turned dead: {:?}",
        nodes(&session)
    );
    let took = killed.elapsed();
    assert_eq!(
        script(&session, "return window.__notReloaded === true;"),
        json!(true),
        "the page reloaded"
    );
    let feed = script(
        &session,
        "return document.getElementById('feed').textContent;",
    );
    assert!(
        feed.as_str()
            .is_some_and(|f| f.contains("mesh.member.failed")),
        "{feed}"
    );
    let shot2 = screenshot(&session, "dashboard-dead.png");
    eprintln!(
        "dashboard: {name} shown dead {} ms after kill -9; screenshots {} and {}",
        took.as_millis(),
        shot.display(),
        shot2.display()
    );
    let _ = http("DELETE", &session, None);
    let _ = std::fs::remove_dir_all(&profile);
    c.stop_all();
}
