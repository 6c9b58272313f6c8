//! Real three-node (and four-node) regions on loopback: forming from identical flags, writes
//! through every node, leader failure under load, minority refusal, catching up by snapshot,
//! membership changes under load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{spawn_writers, verify_acked, Acked, Region};
use ledge_client::{Client, ReadOptions};
use tonic::Code;

async fn node_client(region: &Region, i: usize) -> Client {
    Client::builder().endpoint(region.nodes[i].addr.clone()).timeout(Duration::from_secs(10)).connect().await.unwrap()
}

#[tokio::test]
async fn region_forms_and_any_node_serves() {
    let region = Region::start(3, &[]);
    region.wait_leader().await;
    region.wait_members(3, 0).await;

    let mut revisions = Vec::new();
    for i in 0..3 {
        let c = node_client(&region, i).await;
        revisions.push(c.put("default", format!("via-{i}"), format!("value-{i}")).await.unwrap().revision);
    }
    for i in 0..3 {
        let c = node_client(&region, i).await;
        for (j, rev) in revisions.iter().enumerate() {
            let kv = c.get("default", format!("via-{j}"), ReadOptions::linearizable()).await.unwrap().kv.unwrap();
            assert_eq!(kv.value, format!("value-{j}").as_bytes());
            assert_eq!(kv.revision, *rev, "same revision on every node");
        }
        // A keyspace created through one node exists on all.
        if i == 0 {
            c.create_keyspace("shared", ledge_client::Mode::Strong, ledge_client::Scope::Region).await.unwrap();
        }
    }
    for i in 0..3 {
        let names: Vec<String> =
            node_client(&region, i).await.list_keyspaces().await.unwrap().into_iter().map(|k| k.name).collect();
        assert!(names.contains(&"shared".to_string()));
    }
}

#[tokio::test]
async fn leader_sigkill_under_load_loses_no_acknowledged_write() {
    let mut region = Region::start(3, &[]);
    let leader = region.wait_leader().await;
    region.wait_members(3, 0).await;
    let client = region.client().await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&client, 8, "load", &acked, &stop);
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = acked.lock().unwrap().len();
    let killed = Instant::now();
    region.nodes[leader].kill9();
    // Writes resume on a new leader.
    while acked.lock().unwrap().len() < before + 300 {
        assert!(killed.elapsed() < Duration::from_secs(30), "writes did not resume after the leader died");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_leader = region.wait_leader().await;
    assert_ne!(new_leader, leader);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    region.nodes[leader].spawn();
    region.wait_members(3, 0).await;
    let n = verify_acked(&client, &acked).await;
    assert!(n >= 600);
    // The restarted node has every acknowledged write too (session read on it alone).
    let max_rev = acked.lock().unwrap().values().map(|(_, r)| *r).max().unwrap();
    let old = node_client(&region, leader).await;
    let got = old.get("default", "load/w0/0", ReadOptions::session(max_rev)).await.unwrap();
    assert!(got.as_of.revision >= max_rev);
}

#[tokio::test]
async fn minority_refuses_cleanly_and_recovers() {
    let mut region = Region::start(3, &["--request-timeout-ms", "2000"]);
    region.wait_leader().await;
    region.wait_members(3, 0).await;
    let put = region.client().await.put("default", "k", "before").await.unwrap();
    // Make sure every node has applied it before the others die.
    for i in 0..3 {
        node_client(&region, i).await.get("default", "k", ReadOptions::session(put.revision)).await.unwrap();
    }
    let survivor = 2;
    region.nodes[0].kill9();
    region.nodes[1].kill9();
    let c = node_client(&region, survivor).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t = Instant::now();
    let err = c.put("default", "k", "during").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(t.elapsed() < Duration::from_secs(8), "refused within the deadline, took {:?}", t.elapsed());
    let err = c.get("default", "k", ReadOptions::linearizable()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    let stale = c.get("default", "k", ReadOptions::stale()).await.unwrap();
    assert_eq!(stale.kv.unwrap().value, b"before", "never a wrong value");
    assert!(stale.as_of.stale);
    assert!(stale.as_of.staleness >= Duration::from_secs(1), "staleness is measured: {:?}", stale.as_of.staleness);
    let bounded = c.get("default", "k", ReadOptions::stale().max_staleness(Duration::from_millis(500))).await;
    assert_eq!(bounded.unwrap_err().code(), Code::Unavailable);

    region.nodes[0].spawn();
    region.nodes[1].spawn();
    region.wait_leader().await;
    let put = region.client().await.put("default", "k", "after").await.unwrap();
    let kv = c.get("default", "k", ReadOptions::linearizable()).await.unwrap().kv.unwrap();
    assert_eq!((kv.value.as_slice(), kv.revision), (&b"after"[..], put.revision));
}

#[tokio::test]
async fn node_down_during_purge_catches_up_by_snapshot() {
    let mut region = Region::start(3, &["--snapshot-after", "1000", "--log-keep", "100"]);
    let leader = region.wait_leader().await;
    region.wait_members(3, 0).await;
    let down = (leader + 1) % 3;
    region.nodes[down].kill9();

    let client = region.client().await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&client, 32, "bulk", &acked, &stop);
    // Writes are batched into Raft entries, so write until the leader has purged its log.
    let started = Instant::now();
    loop {
        let purged = match region.nodes[leader].raw_status().await {
            Some(s) => s.purged_index,
            None => 0,
        };
        if purged > 1000 && acked.lock().unwrap().len() >= 2_000 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let leader = region.wait_leader().await;
    let status = region.nodes[leader].raw_status().await.unwrap();
    assert!(status.purged_index > 1000, "the leader purged its log: {status:?}");

    region.nodes[down].spawn();
    let target = status.applied_revision;
    let started = Instant::now();
    loop {
        if region.nodes[down].raw_status().await.is_some_and(|s| s.applied_revision >= target) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no catch-up in 60 s; log:\n{}", region.nodes[down].log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = node_client(&region, down).await;
    let got = c.get("default", "bulk/w0/0", ReadOptions::session(target)).await.unwrap();
    assert!(got.as_of.revision >= target);
    let s = region.nodes[down].raw_status().await.unwrap();
    assert!(s.snapshot_index > 0, "caught up through a snapshot: {s:?}");
    // Every acknowledged write is on the node that was down.
    let acked = acked.lock().unwrap().clone();
    for (key, (value, revision)) in acked.iter().step_by(7) {
        let kv = c.get("default", key.clone(), ReadOptions::stale()).await.unwrap().kv.unwrap();
        assert_eq!((kv.value.as_slice(), kv.revision), (value.as_bytes(), *revision), "{key}");
    }
}

#[tokio::test]
async fn add_and_remove_members_under_load() {
    let mut region = Region::start(3, &[]);
    region.wait_leader().await;
    region.wait_members(3, 0).await;
    let client = region.client().await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&client, 8, "members", &acked, &stop);

    let fourth = region.add_node(&[]);
    region.wait_members(4, 0).await;
    let leader = region.wait_leader().await;
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_id = region.nodes[victim].raw_status().await.unwrap().node_id;
    let admin = node_client(&region, fourth).await;
    admin.remove_member(victim_id).await.unwrap();
    region.wait_members(3, 0).await;
    region.nodes[victim].kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let members = admin.members().await.unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m.id != victim_id));
    let n = verify_acked(&client, &acked).await;
    assert!(n > 0);
}

/// A member restarted at a new address (a rescheduled pod) asks the leader to update the
/// membership, and the region reaches it there: it applies writes made after the move.
#[tokio::test]
async fn a_member_restarted_at_a_new_address_is_reached_there() {
    let mut region = Region::start(3, &[]);
    region.wait_leader().await;
    let c = region.client().await;
    c.put("default", "before", "1").await.unwrap();
    let leader = region.wait_leader().await;
    let moved = (leader + 1) % 3;
    assert!(region.nodes[moved].terminate());
    let old = region.nodes[moved].addr.clone();
    let new = format!("127.0.0.1:{}", common::free_port());
    let node = &mut region.nodes[moved];
    let at = node.args.iter().position(|a| a == "--listen").unwrap() + 1;
    node.args[at] = new.clone();
    node.addr = new.clone();
    node.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = region.nodes[leader].raw_status().await.unwrap();
        if status.members.iter().any(|m| m.address == new) {
            assert!(status.members.iter().all(|m| m.address != old), "{:?}", status.members);
            break;
        }
        assert!(Instant::now() < deadline, "membership never showed {new}:\n{}", region.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = c.put("default", "after", "2").await.unwrap().revision;
    let moved_client = node_client(&region, moved).await;
    let got = moved_client.get("default", "after", ReadOptions::session(after)).await.unwrap();
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"2".to_vec()));
    // Each member reports its own applied revision in the member list.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members = c.members().await.unwrap();
        assert_eq!(members.len(), 3);
        if members.iter().all(|m| m.applied_revision.is_some_and(|r| r >= after)) {
            break;
        }
        assert!(Instant::now() < deadline, "{members:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
