//! The `skiff` command line: flags are validated with messages that name them, before anything
//! starts. (These tests also make `cargo test --workspace` build the `skiff` binary that the
//! runtime, agent and end-to-end tests run.)

use std::process::Command;

fn skiff(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff")).args(args).output().expect("run skiff");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn server_refuses_plain_http_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = skiff(&["server", "--data-dir", dir.path().to_str().unwrap_or_default(), "--listen", "0.0.0.0:6443"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--listen 0.0.0.0:6443") && err.contains("loopback"), "{err}");
}

#[test]
fn server_flags_name_themselves_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().unwrap_or_default();
    for (args, needle) in [
        (vec!["--datastore-endpoint", "https://x:1"], "--datastore-endpoint"),
        (vec!["--history-retention", "5x"], "--history-retention"),
        (vec!["--cluster-cidr", "10.42.0.1/16"], "--cluster-cidr"),
        (vec!["--leader-lease-duration", "1s"], "--leader-lease-duration"),
    ] {
        let mut all = vec!["server", "--data-dir", d, "--listen", "127.0.0.1:0"];
        all.extend(args);
        let (code, err) = skiff(&all);
        assert_eq!(code, Some(2), "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
}

#[test]
fn agent_needs_an_http_server_url() {
    let (code, err) = skiff(&["agent", "--server", "ftp://x", "--data-dir", "/nonexistent-skiff-test"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--server") && err.contains("http://"), "{err}");
}
