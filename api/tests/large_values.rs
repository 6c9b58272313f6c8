//! Large values while a follower is paused: the leader keeps its leadership (AppendEntries are
//! cut to a byte bound, so each crosses within a heartbeat), the paused follower catches up once
//! resumed, and no node's memory grows with the backlog.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{memory_kib, raw_status_at, Region};
use ledge_client::{Client, ReadOptions};

const MIB: usize = 1024 * 1024;

/// What holding a paused follower's backlog may add to the leader's peak memory over a follower's.
const BACKLOG_MIB: u64 = 128;

/// What one run writes and what it must stay within.
struct Plan {
    /// Writes of one 1 MiB value each.
    writes: usize,
    /// Concurrent writers.
    writers: usize,
    /// Bound on each node's peak resident memory.
    max_rss_mib: u64,
    /// Bound on the resumed follower's catch-up.
    max_catch_up: Duration,
}

/// A 1 MiB value that names its key, so a misplaced value is caught.
fn value_for(key: &str) -> Vec<u8> {
    let mut value = vec![b'.'; MIB];
    value[..key.len()].copy_from_slice(key.as_bytes());
    value
}

/// Leader and term as seen by a node, with its state name.
type View = (u64, u64, String);
/// One poll: time since polling began, node index, whether the follower was resumed yet, view.
type Poll = (Duration, usize, bool, Option<View>);

async fn run(plan: Plan) {
    let region = Region::start(3, &[]);
    let leader = region.wait_leader().await;
    region.wait_members(3, 0).await;
    let status = region.nodes[leader].raw_status().await.unwrap();
    let expected = (status.leader_id, status.term);
    let paused = (leader + 1) % 3;
    let live = (leader + 2) % 3;
    region.nodes[paused].signal("STOP");

    // Every 200 ms: the leader's and the live follower's view of leadership, and every node's
    // memory.
    let stop = Arc::new(AtomicBool::new(false));
    let resumed_flag = Arc::new(AtomicBool::new(false));
    let views: Arc<Mutex<Vec<Poll>>> = Arc::default();
    let peak_rss: Arc<Mutex<[u64; 3]>> = Arc::default();
    let poller = {
        let (stop, resumed, views, peak_rss) = (stop.clone(), resumed_flag.clone(), views.clone(), peak_rss.clone());
        let addrs = [region.nodes[leader].addr.clone(), region.nodes[live].addr.clone()];
        let watched = [leader, live];
        let pids: Vec<u32> = region.nodes.iter().map(|n| n.pid().unwrap()).collect();
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                for (addr, i) in addrs.iter().zip(watched) {
                    let phase = resumed.load(Ordering::SeqCst);
                    let view = raw_status_at(addr).await.map(|s| (s.leader_id, s.term, s.raft_state));
                    views.lock().unwrap().push((started.elapsed(), i, phase, view));
                }
                for (k, pid) in pids.iter().enumerate() {
                    if let Some((rss, _)) = memory_kib(*pid) {
                        let mut peak = peak_rss.lock().unwrap();
                        peak[k] = peak[k].max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Writes through the leader (a client that knows only the leader: one that also knew the
    // paused node could send requests there and wait for its deadline).
    let client = region.nodes[leader].client().await;
    let written: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let started = Instant::now();
    let tasks: Vec<_> = (0..plan.writers)
        .map(|w| {
            let (client, written) = (client.clone(), written.clone());
            let each = plan.writes / plan.writers + usize::from(w < plan.writes % plan.writers);
            tokio::spawn(async move {
                for i in 0..each {
                    let key = format!("big/w{w}/{i}");
                    let put = client.put("default", key.clone(), value_for(&key)).await;
                    let put = put.unwrap_or_else(|e| panic!("put {key}: {e}"));
                    written.lock().unwrap().push((key, put.revision));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let write_time = started.elapsed();
    let written = written.lock().unwrap().clone();
    assert_eq!(written.len(), plan.writes);
    let last_revision = written.iter().map(|(_, r)| *r).max().unwrap();

    // Resume the follower: it catches up.
    let target = region.nodes[leader].raw_status().await.unwrap().applied_revision;
    assert!(target >= last_revision);
    resumed_flag.store(true, Ordering::SeqCst);
    region.nodes[paused].signal("CONT");
    let resumed = Instant::now();
    loop {
        if region.nodes[paused].raw_status().await.is_some_and(|s| s.applied_revision >= target) {
            break;
        }
        assert!(
            resumed.elapsed() < plan.max_catch_up,
            "the resumed follower did not catch up in {:?}; log:\n{}",
            plan.max_catch_up,
            region.nodes[paused].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up = resumed.elapsed();
    // One more poll round after the catch-up, then stop polling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    poller.await.unwrap();

    // Leadership never moved while the follower was paused and the writes ran: every poll saw
    // the same leader and term. (After the resume, see below.)
    let views = views.lock().unwrap().clone();
    let during: Vec<_> = views.iter().filter(|v| !v.2).cloned().collect();
    assert!(during.len() >= 4, "polled leadership: {views:?}");
    for (at, i, _, view) in &during {
        let (leader_id, term, state) =
            view.clone().unwrap_or_else(|| panic!("node {i} did not answer status at {at:?}"));
        assert_eq!((leader_id, term), expected, "node {i} at {at:?} ({state}); logs:\n{}", region.logs());
        if *i == leader {
            assert_eq!(state, "leader", "at {at:?}");
        }
    }

    // Every write is on the follower that was paused, with its revision.
    let c = Client::builder()
        .endpoint(region.nodes[paused].addr.clone())
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    for (key, revision) in &written {
        let kv = c.get("default", key.clone(), ReadOptions::stale()).await.unwrap().kv;
        let kv = kv.unwrap_or_else(|| panic!("{key} missing on the resumed follower"));
        assert_eq!((kv.value.len(), kv.revision), (MIB, *revision), "{key}");
        assert!(kv.value == value_for(key), "{key}: wrong value");
    }

    // A resumed follower's election timer has long expired, and openraft 0.9 has no pre-vote: it
    // may stand for election before it hears the leader, and the leader steps down on its higher
    // term. Not a payload problem; reported, not asserted.
    let after: Vec<_> = views.iter().filter(|v| v.2).collect();
    let moved = after.iter().filter(|(_, _, _, v)| v.as_ref().map(|(l, t, _)| (*l, *t)) != Some(expected)).count();
    let final_term = region.nodes[leader].raw_status().await.map(|s| s.term).unwrap_or(0);

    let peak_rss = *peak_rss.lock().unwrap();
    let hwm: Vec<u64> = region.nodes.iter().map(|n| n.memory_kib().map(|(_, hwm)| hwm).unwrap_or(0)).collect();
    eprintln!(
        "large values: {} MiB in {} writes by {} writers took {write_time:?} ({:.1} MiB/s) with a follower paused; \
         leader stable over {} polls (leader id {}, term {}); after the resume {moved} of {} polls saw another \
         leader or term (term now {final_term}); resumed follower caught up in {catch_up:?}; \
         peak RSS (VmHWM) MiB: leader {}, paused follower {}, live follower {}; sampled VmRSS max MiB: leader {}, \
         paused {}, live {}",
        plan.writes,
        plan.writes,
        plan.writers,
        plan.writes as f64 / write_time.as_secs_f64(),
        during.len(),
        expected.0,
        expected.1,
        after.len(),
        hwm[leader] / 1024,
        hwm[paused] / 1024,
        hwm[live] / 1024,
        peak_rss[leader] / 1024,
        peak_rss[paused] / 1024,
        peak_rss[live] / 1024,
    );
    for (i, kib) in hwm.iter().enumerate() {
        assert!(*kib / 1024 < plan.max_rss_mib, "node {i} peaked at {} MiB RSS", kib / 1024);
    }
    // Every node holds the same state; the leader also held the paused follower's backlog, which
    // must cost it little: before the byte bound, one replication read loaded up to 300 entries
    // of 4 MiB.
    assert!(
        hwm[leader] / 1024 < hwm[live] / 1024 + BACKLOG_MIB,
        "the leader peaked at {} MiB RSS, the live follower at {} MiB",
        hwm[leader] / 1024,
        hwm[live] / 1024
    );
}

/// 64 MiB: 64 writes of 1 MiB from 8 writers (measured: about 240 MiB peak RSS per node).
#[tokio::test]
async fn large_values_with_a_paused_follower_keep_the_leader() {
    run(Plan { writes: 64, writers: 8, max_rss_mib: 384, max_catch_up: Duration::from_secs(30) }).await;
}

/// 320 MiB: 320 writes of 1 MiB from 8 writers. Run with `--ignored --nocapture`. Each node's
/// memory grows with the state it holds (measured: about 750 MiB peak on every node, paused or
/// not, sled's cache holding the values), hence the 1 GiB bound; the leader's own cost of the
/// backlog is bounded separately.
#[tokio::test]
#[ignore = "writes 320 MiB through a three-node region (about a minute)"]
async fn many_large_values_with_a_paused_follower_keep_the_leader() {
    run(Plan { writes: 320, writers: 8, max_rss_mib: 1024, max_catch_up: Duration::from_secs(120) }).await;
}
