//! The binary's contract: exit codes, one-line errors, the address file, and a clean SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hgw-dataplane");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env_remove("HGW_AGENT").output().unwrap()
}

#[test]
fn invalid_configuration_exits_64_with_one_line() {
    for args in [
        &[][..],
        &["--agent", "tcp://nowhere"][..],
        &["--agent", "unix:/tmp/x.sock", "--shutdown-grace", "soon"][..],
        &["--agent", "unix:/tmp/x.sock", "--listen", "nope"][..],
        &["--agent", "unix:/tmp/x.sock", "--no-such-flag"][..],
        // Plaintext TCP is refused, and https needs the agent's CA pinned.
        &["--agent", "http://127.0.0.1:9"][..],
        &["--agent", "https://127.0.0.1:9"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn help_and_version_exit_0() {
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    assert_eq!(run(&["--version"]).status.code(), Some(0));
}

#[test]
fn writes_the_address_file_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("hgw-dp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join("addr.json");
    // No agent listens there: the dataplane must still start, stay unready, and stop cleanly.
    let mut child = Command::new(BIN)
        .arg("--agent")
        .arg(format!("unix:{}", dir.join("nobody.sock").display()))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--shutdown-grace", "1s", "--workers", "1"])
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let addrs: serde_json::Value = loop {
        if let Some(v) = std::fs::read_to_string(&addr_file).ok().and_then(|t| serde_json::from_str(&t).ok()) {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no address file");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(addrs["listen"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(addrs["admin"].as_str().unwrap().starts_with("127.0.0.1:"));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
