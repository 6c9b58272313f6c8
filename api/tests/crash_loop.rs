//! No acknowledged write is lost across repeated `kill -9` restarts of a node under a write load:
//! strong puts (Raft WAL) and eventual puts (group commit ending in `fdatasync`).
//!
//! CI runs 6 restarts; `cargo test -p ledge-api --test crash_loop -- --ignored` runs 100.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Node;
use ledge_client::{Mode, ReadOptions, Scope};

type Acked = Arc<Mutex<BTreeMap<(String, String), String>>>;

/// Restarts a node `rounds` times, killing it with SIGKILL while 16 writers put to a strong and
/// an eventual keyspace, and checks after each restart that every acknowledged write is there.
async fn crash_loop(rounds: usize) {
    let mut node = Node::start_single();
    let c = node.wait_ready().await;
    c.create_keyspace_if_not_exists("ev", Mode::Eventual, Scope::Region).await.unwrap();
    let acked: Acked = Arc::default();
    for round in 0..rounds {
        let c = node.wait_ready().await;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
                tokio::spawn(async move {
                    let keyspace = if w % 4 == 0 { "ev" } else { "default" };
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let (key, value) = (format!("r{round}/w{w}/{i}"), format!("v{round}-{w}-{i}"));
                        i += 1;
                        match c.put(keyspace, key.clone(), value.clone()).await {
                            Ok(_) => {
                                acked.lock().unwrap().insert((keyspace.to_string(), key), value);
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        // Kill at a different point of the load each round.
        tokio::time::sleep(Duration::from_millis(150 + (round as u64 * 37) % 250)).await;
        node.kill9();
        stop.store(true, Ordering::SeqCst);
        // Writes in flight at the kill are retried against the restarted node.
        node.spawn();
        for w in writers {
            w.await.unwrap();
        }
        // This round's writes after every restart; every round's once more at the end.
        verify(&node, &acked, Some(&format!("r{round}/"))).await;
    }
    verify(&node, &acked, None).await;
    assert!(acked.lock().unwrap().len() > rounds * 16, "the writers made progress");
}

/// Checks that every acknowledged write (whose key starts with `prefix`, if given) is there.
async fn verify(node: &Node, acked: &Acked, prefix: Option<&str>) {
    let c = node.wait_ready().await;
    let acked = acked.lock().unwrap().clone();
    for ((keyspace, key), value) in &acked {
        if prefix.is_some_and(|p| !key.starts_with(p)) {
            continue;
        }
        let options = if keyspace == "ev" { ReadOptions::default() } else { ReadOptions::linearizable() };
        let kv = c.get(keyspace, key.clone(), options).await.unwrap_or_else(|e| panic!("read {key}: {e}")).kv;
        let kv = kv.unwrap_or_else(|| panic!("acknowledged write {keyspace}/{key} lost after kill -9"));
        assert_eq!(kv.value, value.as_bytes(), "{keyspace}/{key}");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_repeated_kill_9() {
    crash_loop(6).await;
}

#[tokio::test]
#[ignore = "100 kill -9 restarts under load (a few minutes)"]
async fn acknowledged_writes_survive_a_hundred_kill_9() {
    crash_loop(100).await;
}
