use std::future::Future;
use std::sync::Arc;

use ledge_store::{Command, Mode, Scope, StateMachine, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::sync::{anti_entropy, Remote, Request, Response};
use crate::{Kind, ManualClock, Read, DEFAULT_MAX_DRIFT};

pub(crate) struct Node {
    pub(crate) replica: Replica,
    clock: Arc<ManualClock>,
    pub(crate) space: SpaceId,
    _dir: tempfile::TempDir,
}

/// A node whose catalog holds the eventual keyspace `ks`, created at revision 1.
pub(crate) async fn node(id: u64, now_ms: u64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
    let clock = Arc::new(ManualClock::new(now_ms));
    let replica = open(&db, dir.path(), id, clock.clone()).await;
    Node { replica, clock, space: SpaceId::new("ks", 1), _dir: dir }
}

/// Opens node `id`'s replica in `db`, creating the keyspace `ks` (revision 1) on first open.
async fn open(db: &sled::Db, dir: &std::path::Path, id: u64, clock: Arc<ManualClock>) -> Replica {
    let mut sm = StateMachine::open(db, &dir.join("snapshots")).unwrap();
    if sm.keyspace("ks").unwrap().is_none() {
        let create = Command::CreateKeyspace {
            name: "ks".into(),
            mode: Mode::Eventual,
            scope: Scope::Region,
            if_not_exists: false,
        };
        let entry = openraft::Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(ledge_store::Proposal(vec![ledge_store::Request::new(create)])),
        };
        sm.apply(vec![entry]).await.unwrap();
    }
    Replica::open(Eventual::open(db).unwrap(), sm, id, clock, DEFAULT_MAX_DRIFT).unwrap()
}

/// A peer (`to`) reached by calling its `serve` directly, on behalf of node `from`.
struct Direct {
    from: u64,
    to: Replica,
}

fn link(from: &Replica, to: &Replica) -> Direct {
    Direct { from: from.node(), to: to.clone() }
}

impl Remote for Direct {
    fn peer(&self) -> u64 {
        self.to.node()
    }

    fn call(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send {
        let (to, from) = (self.to.clone(), self.from);
        async move { to.serve(from, request).await }
    }
}

#[tokio::test]
async fn operations_check_types_and_report_what_they_did() {
    let n = node(1, 1_000).await;
    let put = n.replica.apply(&n.space, b"k", Op::Put(b"v".to_vec())).await.unwrap();
    assert!(!put.existed);
    assert_eq!(put.ts.node, 1);
    let err = n.replica.apply(&n.space, b"k", Op::Add(1)).await.unwrap_err();
    assert_eq!(err, Error::TypeMismatch { held: Kind::Lww, given: Kind::Counter });
    let del = n.replica.apply(&n.space, b"k", Op::Delete).await.unwrap();
    assert!(del.existed && del.ts > put.ts && del.seq > put.seq);
    assert!(n.replica.get(&n.space, b"k").unwrap().unwrap().is_deleted());
    // Deleting a key never seen still leaves a tombstone: another replica may hold the key.
    let blind = n.replica.apply(&n.space, b"never", Op::Delete).await.unwrap();
    assert!(!blind.existed);
    let c = n.replica.apply(&n.space, b"c", Op::Add(5)).await.unwrap();
    assert_eq!(c.entry.read(), Read::Counter(5));
    let rows = n.replica.scan(&n.space, Bound::Unbounded, None, 10).unwrap();
    assert_eq!(rows.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(), vec![&b"c"[..]]);
    let status = n.replica.status(std::slice::from_ref(&n.space)).unwrap();
    assert_eq!((status.keys, status.tombstones), (3, 2));
}

#[tokio::test]
async fn clock_resumes_above_everything_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
    let space = SpaceId::new("ks", 1);
    let last = {
        let r = open(&db, dir.path(), 1, Arc::new(ManualClock::new(50_000))).await;
        r.apply(&space, b"k", Op::Put(b"v".to_vec())).await.unwrap().ts
    };
    // The wall clock went back ten seconds across the restart.
    let r = open(&db, dir.path(), 1, Arc::new(ManualClock::new(40_000))).await;
    let next = r.apply(&space, b"k", Op::Put(b"w".to_vec())).await.unwrap();
    assert!(next.ts > last, "{} must follow {last}", next.ts);
    assert_eq!(next.entry.read(), Read::Bytes(b"w".to_vec()));
}

#[tokio::test]
async fn far_future_states_are_merged_but_not_adopted_by_the_clock() {
    let (a, b) = (node(1, 1_000_000).await, node(2, 1_000_000).await);
    b.clock.advance(std::time::Duration::from_secs(120));
    let future = b.replica.apply(&b.space, b"k", Op::Put(b"later".to_vec())).await.unwrap();
    let state = b.replica.get_bytes(&b.space, b"k").unwrap().unwrap();
    assert_eq!(a.replica.merge(&a.space, b"k", &state).unwrap(), Merged::Changed);
    assert_eq!(a.replica.merge(&a.space, b"k", &state).unwrap(), Merged::Unchanged);
    assert_eq!(a.replica.hlc().drift_rejections(), 2);
    assert!(a.replica.hlc().latest() < future.ts);
    assert!(matches!(a.replica.merge(&a.space, b"k", b"garbage"), Err(Error::InvalidData(_))));
}

#[tokio::test]
async fn anti_entropy_exchanges_only_the_differences_both_ways() {
    let (a, b) = (node(1, 10_000).await, node(2, 10_000).await);
    let members = vec![1, 2];
    a.replica.set_members(members.clone());
    b.replica.set_members(members);
    let value = vec![b'x'; 100];
    for i in 0..2_000u32 {
        let op = Op::Put(value.clone());
        a.replica.apply(&a.space, format!("shared/{i}").as_bytes(), op).await.unwrap();
    }
    let first = anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    assert!(first.complete);
    assert_eq!(first.pushed, 2_000);
    // Now ten differences on each side, plus a concurrent write to one key on both.
    for i in 0..10u32 {
        a.replica.apply(&a.space, format!("a/{i}").as_bytes(), Op::Add(1)).await.unwrap();
        b.replica.apply(&b.space, format!("b/{i}").as_bytes(), Op::SetAdd(b"m".to_vec())).await.unwrap();
    }
    a.replica.apply(&a.space, b"shared/7", Op::Put(b"from a".to_vec())).await.unwrap();
    b.clock.advance(std::time::Duration::from_millis(5));
    b.replica.apply(&b.space, b"shared/7", Op::Put(b"from b".to_vec())).await.unwrap();
    let report = anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    assert!(report.complete);
    // b's later write to shared/7 wins, so a has nothing newer to send back for it.
    assert_eq!((report.pulled, report.pushed), (11, 10));
    let (ra, rb) = (a.replica.space(&a.space).unwrap().root().unwrap(), b.replica.space(&b.space).unwrap().root());
    assert_eq!(ra, rb.unwrap());
    assert_eq!(a.replica.get(&a.space, b"shared/7").unwrap().unwrap().read(), Read::Bytes(b"from b".to_vec()));
    // 21 differing keys: traffic is hashes of the differing buckets and those entries, not 2,000.
    let total = report.bytes_sent + report.bytes_received;
    assert!(total < 120_000, "{report:?}");
    let again = anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    assert_eq!((again.pulled, again.pushed, again.leaves), (0, 0, 0));
    assert!(again.bytes_sent + again.bytes_received < 1_000, "{again:?}");
}

#[tokio::test]
async fn tombstones_are_collected_once_every_member_merged_them_and_stay_deleted() {
    let (a, b) = (node(1, 10_000).await, node(2, 10_000).await);
    for r in [&a.replica, &b.replica] {
        r.set_members(vec![1, 2]);
    }
    let put = a.replica.apply(&a.space, b"k", Op::Put(b"v".to_vec())).await.unwrap();
    let old_state = a.replica.get_bytes(&a.space, b"k").unwrap().unwrap();
    anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    a.clock.advance(std::time::Duration::from_millis(10));
    a.replica.apply(&a.space, b"k", Op::Delete).await.unwrap();
    let spaces = [a.space.clone()];
    assert_eq!(a.replica.collect(&spaces).unwrap(), 0, "b has not merged the delete");
    // Two sessions: b learns the delete, then each learns the other's stable watermark.
    for _ in 0..2 {
        anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
        anti_entropy(&b.replica, &link(&b.replica, &a.replica)).await.unwrap();
    }
    assert_eq!(a.replica.collect(&spaces).unwrap(), 1);
    assert_eq!(b.replica.collect(&spaces).unwrap(), 1);
    assert_eq!(a.replica.status(&spaces).unwrap().tombstones, 0);
    assert!(a.replica.status(&spaces).unwrap().collected > put.ts);
    // A late copy of the old put (a resent push) must not bring the key back.
    assert_eq!(a.replica.merge(&a.space, b"k", &old_state).unwrap(), Merged::Ignored);
    assert_eq!(a.replica.get(&a.space, b"k").unwrap(), None);
    // A new write after the collection is an ordinary write.
    b.replica.apply(&b.space, b"k", Op::Put(b"new".to_vec())).await.unwrap();
    anti_entropy(&b.replica, &link(&b.replica, &a.replica)).await.unwrap();
    assert_eq!(a.replica.get(&a.space, b"k").unwrap().unwrap().read(), Read::Bytes(b"new".to_vec()));
}

#[tokio::test]
async fn a_replica_takes_part_in_one_session_at_a_time() {
    let (a, b, c) = (node(1, 10_000).await, node(2, 10_000).await, node(3, 10_000).await);
    // b is in a session with c (claimed, not finished): a's session with b must wait.
    let summary = c.replica.summary().unwrap();
    assert!(matches!(b.replica.serve(3, Request::Summary(summary)).await.unwrap(), Response::Summary(_)));
    let report = anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    assert!(report.busy && !report.complete);
    assert!(b.replica.serve(3, Request::Finish { floors: None }).await.unwrap() == Response::Finished);
    let report = anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    assert!(report.complete && !report.busy);
    // A session whose initiator vanished lapses after the lease, on the replica's clock.
    let summary = c.replica.summary().unwrap();
    b.replica.serve(3, Request::Summary(summary)).await.unwrap();
    assert!(anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap().busy);
    b.clock.advance(std::time::Duration::from_secs(6));
    assert!(anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap().complete);
}

#[tokio::test]
async fn of_two_sessions_started_at_once_between_two_replicas_the_lower_ids_goes_on() {
    let (a, b) = (node(1, 10_000).await, node(2, 10_000).await);
    assert!(a.replica.claim_session(2, true).unwrap());
    assert!(b.replica.claim_session(1, true).unwrap());
    let to_b = b.replica.serve(1, Request::Summary(a.replica.summary().unwrap())).await.unwrap();
    assert!(matches!(to_b, Response::Summary(_)), "b yields to a's session");
    let to_a = a.replica.serve(2, Request::Summary(b.replica.summary().unwrap())).await.unwrap();
    assert_eq!(to_a, Response::Busy { with: 2 });
    // b's own session ends without freeing the slot a's session now holds.
    b.replica.release_session(1, true);
    assert_eq!(b.replica.session_peer(), Some(1));
    b.replica.serve(1, Request::Finish { floors: None }).await.unwrap();
    assert_eq!(b.replica.session_peer(), None);
}

#[tokio::test]
async fn nothing_is_collected_while_a_member_is_silent() {
    let (a, b) = (node(1, 10_000).await, node(2, 10_000).await);
    for r in [&a.replica, &b.replica] {
        r.set_members(vec![1, 2, 3]);
    }
    a.replica.apply(&a.space, b"k", Op::Delete).await.unwrap();
    for _ in 0..2 {
        anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
        anti_entropy(&b.replica, &link(&b.replica, &a.replica)).await.unwrap();
    }
    assert_eq!(a.replica.collect(std::slice::from_ref(&a.space)).unwrap(), 0);
    assert_eq!(a.replica.stable().unwrap(), Timestamp::default(), "node 3's writes are unknown");
}

/// Applies `requests` to `sm` as the one entry at log index `index`.
async fn apply_at(sm: &mut StateMachine, index: u64, requests: Vec<ledge_store::Request>) {
    let entry = openraft::Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ledge_store::Proposal(requests)),
    };
    sm.apply(vec![entry]).await.unwrap();
}

fn create(name: &str, mode: Mode) -> Vec<ledge_store::Request> {
    let command = Command::CreateKeyspace { name: name.into(), mode, scope: Scope::Region, if_not_exists: false };
    vec![ledge_store::Request::new(command)]
}

/// Installing a Raft snapshot swaps the catalog while eventual housekeeping runs beside it: the
/// housekeeping must never see the catalog without the eventual keyspace (it would drop the
/// keyspace's storage, and with it writes no peer holds yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_never_drops_eventual_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
    let mut sm = StateMachine::open(&db, &dir.path().join("snapshots")).unwrap();
    apply_at(&mut sm, 2, create("ks", Mode::Eventual)).await;
    let clock = Arc::new(ManualClock::new(10_000));
    let replica = Replica::open(Eventual::open(&db).unwrap(), sm.clone(), 2, clock, DEFAULT_MAX_DRIFT).unwrap();
    let space = SpaceId::new("ks", 1);
    replica.apply(&space, b"only here", Op::Put(b"v".to_vec())).await.unwrap();

    // The leader holds the same keyspace and a strong one whose entries come first in its
    // snapshot, so an install spends a while between the two keyspaces' records.
    let leader_dir = tempfile::tempdir().unwrap();
    let leader_db = sled::Config::new().path(leader_dir.path().join("db")).open().unwrap();
    let mut leader = StateMachine::open(&leader_db, &leader_dir.path().join("snapshots")).unwrap();
    apply_at(&mut leader, 2, create("ks", Mode::Eventual)).await;
    apply_at(&mut leader, 3, create("aa", Mode::Strong)).await;
    for batch in 0..50u64 {
        let puts = (0..1_000u64)
            .map(|i| {
                let op = ledge_store::Op::Put(format!("key/{batch}/{i}").into_bytes(), vec![7; 64]);
                ledge_store::Request::new(Command::Batch { keyspace: "aa".into(), conditions: vec![], ops: vec![op] })
            })
            .collect();
        apply_at(&mut leader, 4 + batch, puts).await;
    }
    leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    leader.serve_snapshots();
    let snapshot = leader.get_current_snapshot().await.unwrap().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let housekeeping = {
        let (replica, stop) = (replica.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                replica.retain_spaces().unwrap();
            }
        })
    };
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    housekeeping.join().unwrap();
    assert_eq!(replica.retain_spaces().unwrap(), 0);
    assert_eq!(sm.keyspace("aa").unwrap().map(|def| def.mode), Some(Mode::Strong));
    let kept = replica.get(&space, b"only here").unwrap();
    assert_eq!(kept.map(|entry| entry.read()), Some(Read::Bytes(b"v".to_vec())));
}

/// A replica whose copy of a keyspace is gone (storage lost, made again empty) takes its peers'
/// states back, even those older than tombstones it collected before: the collected watermark
/// belongs to the keyspace's storage and goes with it.
#[tokio::test]
async fn a_replica_that_lost_a_keyspace_is_repaired_by_its_peers() {
    let (a, b) = (node(1, 10_000).await, node(2, 10_000).await);
    for r in [&a.replica, &b.replica] {
        r.set_members(vec![1, 2]);
    }
    a.replica.apply(&a.space, b"old", Op::Put(b"v".to_vec())).await.unwrap();
    a.replica.apply(&a.space, b"gone", Op::Delete).await.unwrap();
    a.clock.advance(std::time::Duration::from_millis(10));
    for _ in 0..2 {
        anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
        anti_entropy(&b.replica, &link(&b.replica, &a.replica)).await.unwrap();
    }
    let spaces = [b.space.clone()];
    assert_eq!(b.replica.collect(&spaces).unwrap(), 1);
    assert!(!b.replica.space(&b.space).unwrap().collected().unwrap().is_empty());
    b.replica.store().retain_spaces(|_| Ok(true)).unwrap();
    assert_eq!(b.replica.get(&b.space, b"old").unwrap(), None);
    let report = anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    assert!(report.complete && report.pushed >= 1, "{report:?}");
    assert_eq!(b.replica.get(&b.space, b"old").unwrap().unwrap().read(), Read::Bytes(b"v".to_vec()));
}

/// A peer's timestamp refused for drift is merged but never reaches the persisted high-water
/// mark: after a restart the clock is still where this node's own time put it, and the same
/// timestamp is refused again.
#[tokio::test]
async fn a_restart_does_not_adopt_a_timestamp_refused_for_drift() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
    let space = SpaceId::new("ks", 1);
    let peer = node(2, 1_000_000).await;
    peer.clock.advance(std::time::Duration::from_secs(3_600));
    let future = peer.replica.apply(&peer.space, b"k", Op::Put(b"later".to_vec())).await.unwrap().ts;
    let state = peer.replica.get_bytes(&peer.space, b"k").unwrap().unwrap();
    {
        let r = open(&db, dir.path(), 1, Arc::new(ManualClock::new(1_000_000))).await;
        r.apply(&space, b"own", Op::Put(b"v".to_vec())).await.unwrap();
        assert_eq!(r.merge(&space, b"k", &state).unwrap(), Merged::Changed);
        r.flush().await.unwrap();
        assert_eq!(r.hlc().drift_rejections(), 1);
    }
    let r = open(&db, dir.path(), 1, Arc::new(ManualClock::new(1_000_500))).await;
    assert!(r.hlc().latest() < future, "{} adopted {future}", r.hlc().latest());
    let next = r.apply(&space, b"own", Op::Put(b"w".to_vec())).await.unwrap().ts;
    assert!(next < future && next.physical_ms == 1_000_500, "{next}");
    assert!(r.hlc().observe(future).is_err(), "refused again after the restart");
    assert_eq!(r.get(&space, b"k").unwrap().unwrap().read(), Read::Bytes(b"later".to_vec()));
}

#[tokio::test]
async fn a_session_claim_lapses_when_the_clock_steps_back() {
    let (a, b) = (node(1, 100_000).await, node(2, 100_000).await);
    assert!(b.replica.claim_session(3, true).unwrap());
    assert!(!b.replica.claim_session(1, false).unwrap(), "held by the session with 3");
    b.clock.set(40_000);
    assert!(b.replica.claim_session(1, false).unwrap(), "a minute back: the lease cannot be trusted");
    assert!(anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap().complete);
}

#[tokio::test]
async fn a_write_past_the_entry_limit_is_refused_and_changes_nothing() {
    let (a, b) = (node(1, 10_000).await, node(2, 10_000).await);
    for r in [&a.replica, &b.replica] {
        r.set_members(vec![1, 2]);
        r.set_max_entry_bytes(4096);
    }
    let mut added = 0;
    let refused = loop {
        match a.replica.apply(&a.space, b"s", Op::SetAdd(format!("member-{added:04}").into_bytes())).await {
            Ok(_) => added += 1,
            Err(e) => break e,
        }
        assert!(added < 1_000, "the set never reached its limit");
    };
    assert!(matches!(&refused, Error::TooLarge(m) if m.contains("4096") && m.contains("remove members")), "{refused}");
    let before = a.replica.get_bytes(&a.space, b"s").unwrap().unwrap();
    assert!(before.len() <= 4096);
    // Removing a member makes room again; the replicas still converge.
    a.replica.apply(&a.space, b"s", Op::SetRemove(b"member-0000".to_vec())).await.unwrap();
    a.replica.apply(&a.space, b"s", Op::SetAdd(b"late".to_vec())).await.unwrap();
    anti_entropy(&a.replica, &link(&a.replica, &b.replica)).await.unwrap();
    assert_eq!(a.replica.get_bytes(&a.space, b"s").unwrap(), b.replica.get_bytes(&b.space, b"s").unwrap());
}

#[tokio::test]
async fn key_lists_and_scans_are_bounded_per_call() {
    let (a, b) = (node(1, 10_000).await, node(2, 10_000).await);
    for r in [&a.replica, &b.replica] {
        r.set_members(vec![1, 2]);
    }
    // 2,000 keys of 8 KB: 16 MB of keys, more than one Keys answer carries.
    let mut leaves = BTreeSet::new();
    for i in 0..2_000u32 {
        let key = format!("{i:04}{}", "k".repeat(8_000));
        a.replica.apply(&a.space, key.as_bytes(), Op::Add(1)).await.unwrap();
        leaves.insert(ledge_store::eventual::merkle::bucket(key.as_bytes()));
    }
    let leaves: Vec<u16> = leaves.into_iter().take(1024).collect();
    match a.replica.serve(2, Request::Keys { space: a.space.clone(), leaves }).await.unwrap() {
        Response::Keys { keys, covered } => {
            assert!(covered > 0 && covered < 1024, "covered {covered}");
            assert!(keys.iter().map(|(k, _)| k.len()).sum::<usize>() < 5 << 20);
        }
        other => panic!("{other:?}"),
    }
    let report = anti_entropy(&b.replica, &link(&b.replica, &a.replica)).await.unwrap();
    assert!(report.complete && report.pulled == 2_000, "{report:?}");

    // A scan page walks a bounded number of deleted entries, then says where to go on.
    for i in 0..30u32 {
        a.replica.apply(&a.space, format!("dead/{i:02}").as_bytes(), Op::Delete).await.unwrap();
    }
    a.replica.apply(&a.space, b"dead/zz-live", Op::Put(b"v".to_vec())).await.unwrap();
    let start = Bound::Included(b"dead/".to_vec());
    let (rows, next) = a.replica.scan_page(&a.space, start, Some(b"dead0".to_vec()), 10, 20).unwrap();
    assert!(rows.is_empty());
    assert_eq!(next.as_deref(), Some(&b"dead/19"[..]));
    let (rows, next) = a.replica.scan_page(&a.space, Bound::Excluded(b"dead/19".to_vec()), None, 1, 20).unwrap();
    assert_eq!((rows.len(), next), (1, None));
    assert_eq!(rows[0].0, b"dead/zz-live");
}
