//! The `ledge` CLI against a real `ledged`: the command line of docs/client.md, its JSON output, its
//! errors, and durability of what it was told was written across SIGKILL.

mod common;

use common::Node;
use serde_json::Value;

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "ledge failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn json(out: std::process::Output) -> Value {
    let mut lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one JSON object per result");
    lines.remove(0)
}

#[tokio::test]
async fn cli_tour_and_sigkill() {
    let mut node = Node::start_single();
    node.wait_ready().await;

    let put = json(node.cli(&["--output", "json", "kv", "put", "sensor/1", "21.5"]));
    assert_eq!(put["key"], "sensor/1");
    let revision = put["revision"].as_u64().expect("revision");
    assert!(revision > 0);

    let got = json(node.cli(&["--output", "json", "kv", "get", "sensor/1"]));
    assert_eq!(got["key"], "sensor/1");
    assert_eq!(got["value"], "21.5");
    assert_eq!(got["revision"].as_u64(), Some(revision));
    assert!(got["as_of"]["revision"].as_u64().unwrap() >= revision);

    // A session read: wait for the revision, then read locally.
    let session =
        json(node.cli(&["--output", "json", "kv", "get", "sensor/1", "--min-revision", &revision.to_string()]));
    assert_eq!(session["as_of"]["stale"], true);
    assert_eq!(session["value"], "21.5");
    let stale = json(node.cli(&[
        "--output",
        "json",
        "kv",
        "get",
        "sensor/1",
        "--consistency",
        "stale",
        "--max-staleness",
        "2s",
    ]));
    assert_eq!(stale["value"], "21.5");

    // Table output is for people, but must carry the value.
    let table = node.cli(&["kv", "get", "sensor/1"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("21.5"));

    for i in 2..=4 {
        node.cli(&["kv", "put", &format!("sensor/{i}"), &format!("{i}")]);
    }
    node.cli(&["kv", "put", "other", "x"]);
    let scan = json_lines(&node.cli(&["--output", "json", "kv", "scan", "--prefix", "sensor/"]));
    let keys: Vec<&str> = scan.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["sensor/1", "sensor/2", "sensor/3", "sensor/4"]);
    let limited = json_lines(&node.cli(&["--output", "json", "kv", "scan", "--prefix", "sensor/", "--limit", "2"]));
    assert_eq!(limited.len(), 2);

    let del = json(node.cli(&["--output", "json", "kv", "del", "sensor/4"]));
    assert_eq!(del["key"], "sensor/4");
    assert!(del["revision"].as_u64().unwrap() > revision);

    let ks = json(node.cli(&["--output", "json", "keyspace", "create", "orders", "--mode", "strong"]));
    assert_eq!(ks["name"], "orders");
    node.cli(&["kv", "put", "o1", "pending", "--keyspace", "orders"]);
    let list = json_lines(&node.cli(&["--output", "json", "keyspace", "list"]));
    let names: Vec<&str> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "orders"]);

    let status = json(node.cli(&["--output", "json", "cluster", "status"]));
    assert_eq!(status["raft_state"], "leader");
    assert_eq!(status["members"].as_array().unwrap().len(), 1);

    // Errors: code name on stderr, non-zero exit, nothing on stdout.
    let missing = node.cli(&["kv", "get", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
    assert!(missing.stdout.is_empty());
    let bad = node.cli(&["kv", "put", "k", "v", "--keyspace", "missing"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NotFound"));
    let bad = node.cli(&["keyspace", "create", "Bad!", "--mode", "strong"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidArgument"));

    // SIGKILL right after the acknowledged writes; everything acknowledged is there afterwards.
    node.kill9();
    node.spawn();
    node.wait_ready().await;
    let got = json(node.cli(&["--output", "json", "kv", "get", "sensor/1"]));
    assert_eq!(got["revision"].as_u64(), Some(revision));
    assert_eq!(json(node.cli(&["--output", "json", "kv", "get", "o1", "--keyspace", "orders"]))["value"], "pending");
    assert!(!node.cli(&["kv", "get", "sensor/4"]).status.success(), "deleted key stays deleted");
}
