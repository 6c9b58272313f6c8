//! The memory budget and the disk footprint on a real `ledged`: what `cluster status` reports,
//! the refusals the budget makes, and checkpoints that purge the log behind them.

mod common;

use common::Node;
use ledge_client::{Mode, ScanOptions, Scope};
use tonic::Code;

#[tokio::test]
async fn status_reports_the_budget_by_part_rss_and_disk() {
    let node = Node::start_single_with(&["--memory-mb", "48"]);
    let c = node.wait_ready().await;
    c.put("default", "k", "v").await.unwrap();
    let status = c.status().await.unwrap();
    assert_eq!(status.memory_budget, 48 << 20);
    let names: Vec<&str> = status.memory.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sled_cache", "log_cache", "requests", "changes", "digests"]);
    let total: u64 = status.memory.iter().map(|p| p.limit).sum();
    assert!(total < status.memory_budget, "shares {total} within the budget");
    for part in &status.memory {
        match part.name.as_str() {
            "sled_cache" => assert_eq!(part.used, None, "sled does not report its cache"),
            _ => assert!(part.used.unwrap() <= part.limit, "{part:?}"),
        }
    }
    assert!(status.rss > 1 << 20, "rss {}", status.rss);
    assert!(status.disk.log > 0 && status.disk.db > 0, "{:?}", status.disk);

    // The command line shows the same figures.
    let out = node.cli(&["--output", "json", "cluster", "status"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json status");
    assert_eq!(json["memory_budget_bytes"], 48u64 << 20);
    assert_eq!(json["memory"][0]["name"], "sled_cache");
    assert!(json["disk"]["db_bytes"].as_u64().unwrap() > 0, "{json}");
    let out = node.cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("budget 48.0 MiB") && text.contains("  log_cache "), "{text}");
}

#[test]
fn a_budget_out_of_range_is_refused_at_start_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(common::binary("ledged"))
        .args(["--region", "test", "--listen", "127.0.0.1:0", "--memory-mb", "8", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run ledged");
    assert!(!out.status.success(), "ledged must refuse --memory-mb 8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--memory-mb 8") && stderr.contains("32"), "{stderr}");
}

#[tokio::test]
async fn small_eventual_keyspaces_are_cheap_and_one_past_the_digest_share_is_refused() {
    // 32 MiB: the digests share (10 %) is 3.2 MiB; a hash tree grows to 1 MiB at most.
    let node = Node::start_single_with(&["--memory-mb", "32"]);
    let c = node.wait_ready().await;
    // Empty keyspaces hold a few KiB each: ten of them fit easily.
    for i in 0..10 {
        c.create_keyspace(&format!("small{i}"), Mode::Eventual, Scope::Region).await.unwrap();
    }
    // Fill three so that their trees take all their leaf blocks (2,000 keys each).
    let mut tasks = Vec::new();
    for w in 0..12 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                let ks = format!("small{}", w % 3);
                c.put(&ks, format!("key-{w}-{i}"), "v").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let held = c.status().await.unwrap().memory.iter().find(|p| p.name == "digests").unwrap().used.unwrap();
    assert!(held > 3 << 20, "three full trees and seven small ones: {held} bytes");
    let e = c.create_keyspace("one_more", Mode::Eventual, Scope::Region).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.to_string().contains("--memory-mb"), "{e}");
    // Strong keyspaces take no hash tree; the refused one was never created.
    c.create_keyspace("s1", Mode::Strong, Scope::Region).await.unwrap();
    let names: Vec<String> = c.list_keyspaces().await.unwrap().into_iter().map(|k| k.name).collect();
    assert!(names.contains(&"s1".to_string()) && !names.contains(&"one_more".to_string()), "{names:?}");
    c.put("small5", "k", "v").await.unwrap();
}

#[tokio::test]
async fn checkpoints_purge_the_log_behind_them_and_keep_no_snapshot_copy() {
    let node = Node::start_single_with(&["--log-keep", "10"]);
    let c = node.wait_ready().await;
    // 48 values of 512 KiB: 24 MiB of log, three segments of 8 MiB.
    let value = vec![7u8; 512 * 1024];
    for i in 0..48 {
        c.put("default", format!("key-{i:04}"), value.clone()).await.unwrap();
    }
    // A checkpoint (after 16 MiB applied, or 5 s idle) lets the log be purged behind it: of the
    // 24 MiB written, at most the live segment and a part of the one before stay (one purge may
    // already have run while the values went in).
    let written = 48 * value.len() as u64;
    let mut after = c.status().await.unwrap();
    for _ in 0..100 {
        if after.disk.log < written / 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        after = c.status().await.unwrap();
    }
    assert!(after.disk.log < written / 2, "log {} bytes after writing {written}", after.disk.log);
    assert_eq!(after.disk.snapshots, 0, "a checkpoint writes no snapshot file");
    let all = c.scan_all(ScanOptions::new("default").prefix("key-")).await.unwrap();
    assert_eq!(all.len(), 48);
    assert!(all.iter().all(|kv| kv.value == value));
}
