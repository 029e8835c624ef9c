//! End-to-end: `mesh mcp` driven by the official MCP Python SDK (PyPI `mcp`)
//! against a live three-node mesh with a `mesh worker` (the checks are in
//! `tests/mcp/client.py`). The SDK is installed with pip when missing; in CI
//! (`CI=true`) a missing SDK that cannot be installed fails the test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_cli::cluster::wait_for;

const EXE: &str = env!("CARGO_BIN_EXE_mesh");

mod common;
use common::{three_node_mesh, url, wait_agents};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_sdk() -> bool {
    let has = || {
        Command::new("python3")
            .args(["-c", "import mcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return true;
    }
    eprintln!("installing the MCP Python SDK (pip install mcp)");
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "mcp"])
        .status();
    has()
}

#[test]
fn the_official_python_client_drives_every_tool_on_a_live_mesh() {
    if !python_sdk() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the MCP Python SDK is missing and could not be installed"
        );
        eprintln!("SKIPPED: python3 with the `mcp` package is not available here");
        return;
    }
    let c = three_node_mesh(EXE, "m");
    let keys = std::env::temp_dir().join(format!("mesh-mcp-keys-{}", std::process::id()));
    let _worker = Kill(
        Command::new(EXE)
            .args(["worker", "--node", &url(&c, 2, ""), "--id", "w0"])
            .args(["--caps", "sh", "--slots", "2"])
            .args(["--exec", "printf 'ran:%s' \"$(cat)\""])
            .env("MESH_KEYS_DIR", &keys)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_agents(&c, 0, 1), "the worker did not register");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let log =
        |name: &str| std::env::temp_dir().join(format!("mesh-mcp-{}-{name}", std::process::id()));
    let (out_path, err_path) = (log("stdout"), log("stderr"));
    let mut client = Kill(
        Command::new("python3")
            .arg(&script)
            .args([EXE, &url(&c, 0, ""), &url(&c, 1, "")])
            .env("MESH_LOG", "warn")
            .env("MESH_KEYS_DIR", &keys)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut status = None;
    wait_for(Duration::from_secs(120), Duration::from_millis(50), || {
        status = client.0.try_wait().ok().flatten();
        status.is_some()
    });
    // The worker `agent_spawn` started outlives the MCP server, as it should;
    // this test stops it.
    for id in ["mcp-builder", "sleeper"] {
        let _ = Command::new("pkill")
            .args(["-f", "--", &format!("worker .*--id {id}")])
            .status();
    }
    let _ = std::fs::remove_dir_all(&keys);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = (
        std::fs::remove_file(&out_path),
        std::fs::remove_file(&err_path),
    );
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("all checks passed"),
        "the MCP client failed or did not finish in 120 s ({status:?}):\n{stdout}\n{stderr}"
    );
}
