//! The `ledge` binary's usage contract, without a server: its help names the command groups of
//! docs/client.md, and a malformed command line is a usage error (exit 2), not a panic. (Having this
//! test also makes `cargo test --workspace` build the `ledge` binary that the server's
//! integration tests drive.)

use std::process::Command;

fn ledge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledge")).args(args).output().expect("run ledge")
}

#[test]
fn help_names_every_command_group() {
    let out = ledge(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for group in ["kv", "keyspace", "cluster", "--endpoints", "--output"] {
        assert!(text.contains(group), "help mentions {group}: {text}");
    }
}

#[test]
fn a_malformed_command_line_is_a_usage_error() {
    let out = ledge(&["kv", "get"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let out = ledge(&["--output", "yaml", "kv", "get", "k"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
