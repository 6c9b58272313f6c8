//! Eventual keyspaces against real `ledged` processes: every node takes writes while cut off from
//! the others (SIGSTOP, SIGKILL), replicas converge once they can talk again with no acknowledged
//! write lost, write levels report how far a write got, and deletes stay deleted whatever order
//! the nodes come back in, until their tombstones are collected.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Node, Region};
use ledge_client::{Client, Code, Hlc, Mode, ReadOptions, ScanOptions, Scope, WriteLevel};

const KS: &str = "readings";
/// Fast anti-entropy and short sync deadlines, so that convergence takes a second or two.
const FLAGS: &[&str] = &["--anti-entropy-ms", "200", "--request-timeout-ms", "2000"];

/// Waits until the node answers status, leader or not.
async fn wait_up(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.raw_status().await.is_none() {
        assert!(Instant::now() < deadline, "node {} not up in 30 s; log:\n{}", node.addr, node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A three-node region with the eventual keyspace `readings`, known to every node.
async fn region() -> Region {
    let region = Region::start(3, FLAGS);
    region.wait_leader().await;
    region.wait_members(3, 0).await;
    region.client().await.create_keyspace(KS, Mode::Eventual, Scope::Region).await.expect("create keyspace");
    region.clients_knowing(KS).await;
    region
}

/// What every replica must converge to.
#[derive(Default, Debug)]
struct Expected {
    /// Every acknowledged put of `temp`: the one with the highest HLC must win.
    puts: Vec<(Hlc, String)>,
    /// The sum of every acknowledged increment of `hits`.
    hits: i64,
    /// Every acknowledged add to `seen` not later removed.
    seen: BTreeSet<String>,
}

impl Expected {
    fn winner(&self) -> Option<&(Hlc, String)> {
        self.puts.iter().max_by_key(|(hlc, _)| *hlc)
    }
}

/// Writes to node `i` alone: puts, increments, adds, and a remove of a member this node added.
async fn write_alone(client: &Client, i: usize, round: usize, expected: &mut Expected) {
    for n in 0..5 {
        let value = format!("node{i}-round{round}-{n}");
        let put = client.put(KS, "temp", value.clone()).await.expect("put while alone");
        expected.puts.push((put.hlc.expect("eventual puts carry an HLC"), value.clone()));
        let delta = (i as i64 + 1) * 10 + n;
        client.increment(KS, "hits", delta).await.expect("increment while alone");
        expected.hits += delta;
        client.set_add(KS, "seen", value.clone()).await.expect("set add while alone");
        expected.seen.insert(value);
    }
    let doomed = format!("doomed-{i}-{round}");
    client.set_add(KS, "seen", doomed.clone()).await.expect("set add");
    client.set_remove(KS, "seen", doomed).await.expect("set remove of an observed member");
}

/// What one node holds of the three keys.
async fn state(client: &Client) -> Option<(Option<(Hlc, String)>, Option<i64>, BTreeSet<String>)> {
    let temp = client.get(KS, "temp", ReadOptions::one()).await.ok()?.kv;
    let temp = temp.map(|kv| (kv.hlc.unwrap_or_default(), String::from_utf8_lossy(&kv.value).into_owned()));
    let hits = client.get(KS, "hits", ReadOptions::one()).await.ok()?.kv.and_then(|kv| kv.counter);
    let seen = client.get(KS, "seen", ReadOptions::one()).await.ok()?.kv;
    let seen = seen.map(|kv| kv.members.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect());
    Some((temp, hits, seen.unwrap_or_default()))
}

/// Polls every node until each holds exactly the expected state.
async fn converge(region: &Region, expected: &Expected) {
    let want = (expected.winner().cloned(), Some(expected.hits), expected.seen.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &region.nodes {
        let client = node.client().await;
        loop {
            let got = state(&client).await;
            if got.as_ref() == Some(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not converge:\n got {got:?}\nwant {want:?}\nlogs:\n{}",
                node.addr,
                region.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn sigstopped_partitions_converge_with_nothing_lost() {
    let region = region().await;
    let mut expected = Expected::default();
    for (round, alone) in [0, 1, 2].into_iter().enumerate() {
        // Stop the other two: `alone` has no Raft quorum, which eventual writes do not need.
        let others: Vec<usize> = (0..3).filter(|i| *i != alone).collect();
        for &i in &others {
            region.nodes[i].signal("STOP");
        }
        write_alone(&region.nodes[alone].client().await, alone, round, &mut expected).await;
        for &i in &others {
            region.nodes[i].signal("CONT");
        }
    }
    converge(&region, &expected).await;
    // The winning put is the one with the highest HLC, and reads report that HLC.
    let (hlc, value) = expected.winner().cloned().expect("puts were made");
    let got = region.nodes[0].client().await.get(KS, "temp", ReadOptions::quorum()).await.expect("quorum read");
    let kv = got.kv.expect("temp exists");
    assert_eq!((kv.hlc, kv.value), (Some(hlc), value.into_bytes()));
    assert_eq!(got.as_of.replicas, 2, "a quorum read merges a majority");
}

#[tokio::test]
async fn writes_acknowledged_at_level_one_survive_sigkill() {
    let mut region = region().await;
    let mut expected = Expected::default();
    for (round, alone) in [0, 1].into_iter().enumerate() {
        let others: Vec<usize> = (0..3).filter(|i| *i != alone).collect();
        for &i in &others {
            region.nodes[i].kill9();
        }
        write_alone(&region.nodes[alone].client().await, alone, round, &mut expected).await;
        // Kill the writer too before it can push: its writes must come back from its disk.
        region.nodes[alone].kill9();
        for &i in &others {
            region.nodes[i].spawn();
        }
        region.nodes[alone].spawn();
        for node in &region.nodes {
            wait_up(node).await;
        }
    }
    converge(&region, &expected).await;
}

#[tokio::test]
async fn quorum_write_without_a_quorum_is_kept_and_spreads() {
    let region = region().await;
    let alone = region.nodes[0].client().await;
    alone.put_with(KS, "all-up", "yes", WriteLevel::All).await.expect("level all with every node up");
    region.nodes[1].signal("STOP");
    region.nodes[2].signal("STOP");
    let result = alone.put_with(KS, "lonely", "kept", WriteLevel::Quorum).await;
    let err = result.map(|put| panic!("no quorum of replicas, yet {put:?}; logs:\n{}", region.logs())).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("stored on 1 of 3 nodes"), "{err}");
    assert!(err.message().contains("will still spread"), "{err}");
    // Level one needs nobody else.
    alone.put(KS, "lonely-one", "fine").await.expect("level one without peers");
    region.nodes[1].signal("CONT");
    region.nodes[2].signal("CONT");
    for node in &region.nodes {
        let client = node.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = client.get(KS, "lonely", ReadOptions::one()).await.expect("read").kv;
            if got.is_some_and(|kv| kv.value == b"kept") {
                break;
            }
            assert!(Instant::now() < deadline, "the kept write never reached {}", node.addr);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    alone.increment_with(KS, "quorum-counter", 3, WriteLevel::Quorum).await.expect("quorum write once healed");
}

async fn tombstones(node: &Node) -> Option<u64> {
    node.raw_status().await.map(|s| s.tombstones)
}

#[tokio::test]
async fn deleted_keys_stay_deleted_whatever_the_heal_order_and_tombstones_go() {
    let region = region().await;
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let mut keys = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let key = format!("doomed-{n}");
        let writer = region.nodes[0].client().await;
        writer.put_with(KS, key.clone(), "alive", WriteLevel::All).await.expect("put on every node");
        // Only node 0 sees the delete; then everyone is cut off, and they come back one by one.
        region.nodes[1].signal("STOP");
        region.nodes[2].signal("STOP");
        let deleted = writer.delete(KS, key.clone()).await.expect("delete while alone");
        assert!(deleted.deleted && deleted.hlc.is_some());
        region.nodes[0].signal("STOP");
        for &i in order {
            region.nodes[i].signal("CONT");
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        keys.push(key);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &region.nodes {
        let client = node.client().await;
        for key in &keys {
            loop {
                match client.get(KS, key.clone(), ReadOptions::one()).await.expect("read").kv {
                    None => break,
                    Some(kv) => assert!(Instant::now() < deadline, "{key} is back on {}: {kv:?}", node.addr),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Once every node has merged the deletes, every node collects their tombstones.
    for node in &region.nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tombstones(node).await != Some(0) {
            assert!(Instant::now() < deadline, "tombstones never collected on {}:\n{}", node.addr, region.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And the keys stay deleted after another partition and heal.
    region.nodes[2].signal("STOP");
    region.nodes[0].client().await.put(KS, "after", "gc").await.expect("put");
    region.nodes[2].signal("CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in &region.nodes {
        let page = node.client().await.scan(ScanOptions::new(KS).prefix("doomed-")).await.expect("scan");
        assert!(page.kvs.is_empty(), "deleted keys came back on {}: {:?}", node.addr, page.kvs);
    }
}

#[tokio::test]
async fn eventual_requests_are_validated() {
    let node = Node::start_single();
    let client = node.wait_ready().await;
    client.create_keyspace(KS, Mode::Eventual, Scope::Region).await.expect("create");
    let code = |r: Result<(), ledge_client::Error>| r.expect_err("must be refused").code();
    // Strong-only options on an eventual keyspace, eventual-only operations on a strong one.
    assert_eq!(code(client.get(KS, "k", ReadOptions::linearizable()).await.map(drop)), Code::InvalidArgument);
    assert_eq!(code(client.get(KS, "k", ReadOptions::session(3)).await.map(drop)), Code::InvalidArgument);
    assert_eq!(code(client.get("default", "k", ReadOptions::quorum()).await.map(drop)), Code::InvalidArgument);
    assert_eq!(code(client.increment("default", "k", 1).await.map(drop)), Code::InvalidArgument);
    assert_eq!(code(client.put_with("default", "k", "v", WriteLevel::Quorum).await.map(drop)), Code::InvalidArgument);
    let conditional = client.batch(KS, [ledge_client::Condition::absent("k")], [ledge_client::Op::put("k", "v")]).await;
    assert_eq!(code(conditional.map(drop)), Code::InvalidArgument);
    let counting = client.batch("default", [], [ledge_client::Op::increment("n", 1)]).await;
    assert_eq!(code(counting.map(drop)), Code::InvalidArgument);
    // Sizes and names as for strong keyspaces.
    assert_eq!(code(client.put(KS, vec![b'k'; 5000], "v").await.map(drop)), Code::ResourceExhausted);
    assert_eq!(code(client.set_add(KS, "s", vec![0; (1 << 20) + 1]).await.map(drop)), Code::ResourceExhausted);
    assert_eq!(code(client.put(KS, "", "v").await.map(drop)), Code::InvalidArgument);
    assert_eq!(code(client.put("Bad!", "k", "v").await.map(drop)), Code::InvalidArgument);
    assert_eq!(code(client.put("nope", "k", "v").await.map(drop)), Code::NotFound);
    // A key's type is fixed by its first write.
    client.increment(KS, "c", 2).await.expect("increment");
    let err = client.put(KS, "c", "text").await.expect_err("type mismatch");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("counter") && err.message().contains("lww"), "{err}");
    assert_eq!(code(client.set_add(KS, "c", "m").await.map(drop)), Code::InvalidArgument);
    let got = client.get(KS, "c", ReadOptions::one()).await.expect("get").kv.expect("counter");
    assert_eq!(got.counter, Some(2));
    // Overflowing a counter is refused and changes nothing.
    client.increment(KS, "big", i64::MAX).await.expect("first");
    client.increment(KS, "big", i64::MAX).await.expect("second");
    client.increment(KS, "big", 1).await.expect("third");
    assert_eq!(code(client.increment(KS, "big", i64::MAX).await.map(drop)), Code::InvalidArgument);

    // The CLI: put, get, incr, sets and scan with JSON output.
    let json = |args: &[&str]| {
        let out = node.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON object")
    };
    let put = json(&["--output", "json", "kv", "put", "t", "21.5", "--keyspace", KS]);
    let hlc = put["hlc"].as_str().expect("put reports its HLC").to_owned();
    assert!(put.get("revision").is_none());
    let got = json(&["--output", "json", "kv", "get", "t", "--keyspace", KS, "--consistency", "one"]);
    assert_eq!(
        (got["value"].as_str(), got["hlc"].as_str(), got["kind"].as_str()),
        (Some("21.5"), Some(&*hlc), Some("lww"))
    );
    assert!(got["as_of"]["hlc"].as_str().is_some() && got["as_of"]["stable_hlc"].as_str().is_some());
    let incr = json(&["--output", "json", "kv", "incr", "visits", "-3", "--keyspace", KS]);
    assert_eq!(incr["counter"], -3);
    json(&["--output", "json", "kv", "sadd", "tags", "blue", "--keyspace", KS]);
    json(&["--output", "json", "kv", "sadd", "tags", "red", "--keyspace", KS]);
    let removed = json(&["--output", "json", "kv", "srem", "tags", "blue", "--keyspace", KS, "--level", "all"]);
    assert_eq!(removed["size"], 1);
    let tags = json(&["--output", "json", "kv", "get", "tags", "--keyspace", KS, "--consistency", "quorum"]);
    assert_eq!(tags["members"], serde_json::json!(["red"]));
    let del = json(&["--output", "json", "kv", "del", "t", "--keyspace", KS]);
    assert_eq!(del["deleted"], true);
    let missing = node.cli(&["kv", "get", "t", "--keyspace", KS]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("NotFound"));
}

/// A set grows until its entry would pass `--max-request-bytes`; the add that would pass it is
/// refused with RESOURCE_EXHAUSTED and writes nothing, and every replica still converges on the
/// set as it stands.
#[tokio::test]
async fn a_set_grown_to_its_limit_is_refused_and_the_region_converges() {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--max-request-bytes", "1114112"]);
    let region = Region::start(3, &flags);
    region.wait_leader().await;
    region.wait_members(3, 0).await;
    let client = region.client().await;
    client.create_keyspace(KS, Mode::Eventual, Scope::Region).await.expect("create keyspace");
    let mut added = 0;
    let refused = loop {
        let member = format!("{added:03}{}", "m".repeat(16 * 1024));
        match client.set_add(KS, "big", member).await {
            Ok(_) => added += 1,
            Err(e) => break e,
        }
        assert!(added < 200, "the set never reached its limit");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.to_string().contains("remove members first"), "{refused}");
    assert!(added > 50, "only {added} members fit");
    for node in &region.nodes {
        let c = node.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let members = c.get(KS, "big", ReadOptions::one()).await.ok().and_then(|r| r.kv).map(|kv| kv.members.len());
            if members == Some(added) {
                break;
            }
            assert!(Instant::now() < deadline, "{} holds {members:?} of {added} members", node.addr);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A batch on an eventual keyspace applies its puts, deletes and increments together on the node
/// that takes it, or none of them: an operation of the wrong type refuses the whole batch.
#[tokio::test]
async fn eventual_batches_apply_all_or_nothing() {
    use ledge_client::Op;
    let node = Node::start_single();
    let client = node.wait_ready().await;
    client.create_keyspace(KS, Mode::Eventual, Scope::Region).await.expect("create");
    client.put(KS, "gone", "x").await.unwrap();
    let ops = [Op::put("a", "1"), Op::increment("n", 5), Op::increment("n", 2), Op::delete("gone")];
    let done = client.batch_with(KS, [], ops, WriteLevel::Quorum).await.expect("batch");
    assert!(done.succeeded && done.hlc.is_some(), "{done:?}");
    let read = |key: &'static str| {
        let client = client.clone();
        async move { client.get(KS, key, ReadOptions::one()).await.unwrap().kv }
    };
    assert_eq!(read("a").await.unwrap().value, b"1");
    assert_eq!(read("n").await.unwrap().counter, Some(7));
    assert!(read("gone").await.is_none());
    // The increment of "a" (a register) is refused, and the put before it is not written.
    let refused = client.batch(KS, [], [Op::put("b", "2"), Op::increment("a", 1)]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.to_string().contains("operation 1"), "{refused}");
    assert!(read("b").await.is_none(), "nothing of a refused batch is written");
}

/// `scan` at consistency `quorum` merges a majority's pages key by key: it pages through the
/// range, leaves deleted keys out, goes on with one member stopped, and is refused without a
/// majority; the command line takes `--consistency quorum` for scans too.
#[tokio::test]
async fn quorum_scans_merge_a_majority_and_page() {
    let region = region().await;
    let client = region.client().await;
    for i in 0..50 {
        client.put_with(KS, format!("q/{i:02}"), "v", WriteLevel::All).await.expect("put");
    }
    for i in (0..50).step_by(5) {
        client.delete_with(KS, format!("q/{i:02}"), WriteLevel::All).await.expect("delete");
    }
    let scan_all = |client: Client| async move {
        let mut keys = Vec::new();
        let mut token = String::new();
        loop {
            let options =
                ScanOptions::new(KS).prefix("q/").limit(15).page_token(token.clone()).read(ReadOptions::quorum());
            let page = client.scan(options).await?;
            assert!(page.as_of.replicas >= 2, "{:?}", page.as_of);
            keys.extend(page.kvs.into_iter().map(|kv| String::from_utf8(kv.key).unwrap()));
            match page.next_page_token {
                Some(next) => token = next,
                None => return Ok::<_, ledge_client::Error>(keys),
            }
        }
    };
    let expected: Vec<String> = (0..50).filter(|i| i % 5 != 0).map(|i| format!("q/{i:02}")).collect();
    assert_eq!(scan_all(client.clone()).await.unwrap(), expected);
    let out = region.nodes[0].cli(&[
        "--output",
        "json",
        "kv",
        "scan",
        "--prefix",
        "q/",
        "--keyspace",
        KS,
        "--consistency",
        "quorum",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), expected.len());

    region.nodes[2].signal("STOP");
    let first = Client::builder()
        .endpoint(region.nodes[0].addr.clone())
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    assert_eq!(scan_all(first.clone()).await.unwrap(), expected);
    region.nodes[1].signal("STOP");
    let refused = scan_all(first).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    region.nodes[1].signal("CONT");
    region.nodes[2].signal("CONT");
}

/// A peer's state stamped an hour ahead is merged but its timestamp is refused; after a restart
/// the node's clock has not resumed from it (its next write is stamped now, not an hour ahead)
/// and the same timestamp is refused again.
#[tokio::test]
async fn a_restarted_node_still_refuses_far_future_timestamps() {
    use ledge_crdt::sync::{Request as SyncRequest, Shipped};
    use ledge_crdt::{Entry, Op, SpaceId, Timestamp};
    use ledge_proto::v1::{sync_client::SyncClient, SyncMessage};

    let mut node = Node::start_single();
    let client = node.wait_ready().await;
    client.create_keyspace(KS, Mode::Eventual, Scope::Region).await.expect("create");
    let created = client.list_keyspaces().await.unwrap().into_iter().find(|k| k.name == KS).unwrap().created_revision;
    let id = node.raw_status().await.unwrap().node_id;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let future = Timestamp::new(now_ms + 3_600_000, 0, 999);
    let state = Entry::from_op(Op::Put(b"later".to_vec()), future).to_bytes().unwrap();
    let shipped = Shipped { space: SpaceId::new(KS, created), key: b"k".to_vec(), state };
    let payload = bincode::serialize(&SyncRequest::Merge { entries: vec![shipped] }).unwrap();
    let send = |addr: String, payload: Vec<u8>| async move {
        let mut sync = SyncClient::connect(format!("http://{addr}")).await.unwrap();
        sync.call(SyncMessage { from: 999, target: id, payload }).await.expect("merge");
    };
    send(node.addr.clone(), payload.clone()).await;
    assert_eq!(node.raw_status().await.unwrap().clock_drift_rejections, 1);

    assert!(node.terminate());
    node.spawn();
    let client = node.wait_ready().await;
    let put = client.put(KS, "own", "v").await.unwrap().hlc.unwrap();
    assert!(put.physical_ms < now_ms + 60_000, "the clock resumed from the refused timestamp: {put:?}");
    send(node.addr.clone(), payload).await;
    assert_eq!(node.raw_status().await.unwrap().clock_drift_rejections, 1, "refused again after the restart");
    let read = client.get(KS, "k", ReadOptions::one()).await.unwrap().kv.unwrap();
    assert_eq!(read.value, b"later");
}
