//! `Kv.Watch` against real nodes: replay from a revision, a snapshot when the revision was
//! compacted, then live events with no gap and no duplicate, on leader and follower alike.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Node, Region};
use ledge_client::{Client, Op, WatchMessage, WatchOptions};

use common::next_message as next;

#[tokio::test]
async fn watch_replays_history_then_follows() {
    let node = Node::start_single();
    let c = node.wait_ready().await;
    let first = c.put("default", "app/a", "1").await.unwrap().revision;
    c.put("default", "other", "x").await.unwrap();
    let second = c.put("default", "app/b", "2").await.unwrap().revision;
    c.delete("default", "app/a").await.unwrap();

    let mut stream = c.watch(WatchOptions::prefix("default", "app/").from_revision(1)).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next(&mut stream).await {
            WatchMessage::Events { events, .. } => seen.extend(events),
            WatchMessage::Snapshot { .. } => panic!("history is retained: no snapshot expected"),
        }
    }
    assert_eq!(seen[0].key, b"app/a");
    assert_eq!(seen[0].revision, first);
    assert_eq!(seen[1].revision, second);
    assert_eq!(seen[2].kind, ledge_client::EventKind::Delete);

    // Live events, in order, only for the watched prefix.
    let live = c.put("default", "app/c", "3").await.unwrap().revision;
    c.put("default", "zzz", "not watched").await.unwrap();
    match next(&mut stream).await {
        WatchMessage::Events { revision, events, .. } => {
            assert_eq!(revision, live);
            assert_eq!((events[0].key.as_slice(), events[0].value.as_slice()), (&b"app/c"[..], &b"3"[..]));
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Applies a watch stream to a map, checking order and uniqueness of revisions.
struct Replica {
    state: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    last: u64,
    snapshots: usize,
}

impl Replica {
    fn apply(&mut self, msg: WatchMessage) {
        assert!(
            msg.revision() > self.last || self.last == 0,
            "revision {} after {}: duplicate or out of order",
            msg.revision(),
            self.last
        );
        match msg {
            WatchMessage::Snapshot { revision, kvs, .. } => {
                self.snapshots += 1;
                self.state = kvs.into_iter().map(|kv| (kv.key, (kv.value, kv.revision))).collect();
                self.last = revision;
            }
            WatchMessage::Events { revision, events, .. } => {
                for e in events {
                    match e.kind {
                        ledge_client::EventKind::Put => self.state.insert(e.key, (e.value, revision)),
                        ledge_client::EventKind::Delete => self.state.remove(&e.key),
                    };
                }
                self.last = revision;
            }
        }
    }
}

async fn write_rounds(c: &Client, rounds: usize, tag: &str) -> u64 {
    let mut last = 0;
    for r in 0..rounds {
        let ops: Vec<Op> = (0..5).map(|k| Op::put(format!("w/{k}"), format!("{tag}-{r}-{k}"))).collect();
        last = c.batch("default", vec![], ops).await.unwrap().revision;
        if r % 7 == 0 {
            c.delete("default", format!("w/{}", r % 5)).await.unwrap();
        }
    }
    last
}

#[tokio::test]
async fn watch_from_compacted_revision_starts_with_a_snapshot() {
    let region = Region::start(3, &["--snapshot-after", "100", "--log-keep", "10"]);
    let leader = region.wait_leader().await;
    region.wait_members(3, 0).await;
    let c = region.client().await;
    write_rounds(&c, 400, "before").await;

    // Watch from revision 1 on a follower: history is compacted there too.
    let follower = (leader + 1) % 3;
    let fc = Client::builder().endpoint(region.nodes[follower].addr.clone()).connect().await.unwrap();
    let mut stream = fc.watch(WatchOptions::prefix("default", "w/").from_revision(1)).await.unwrap();
    let mut replica = Replica { state: BTreeMap::new(), last: 0, snapshots: 0 };
    let first = next(&mut stream).await;
    assert!(matches!(first, WatchMessage::Snapshot { .. }), "compacted history starts with a snapshot");
    replica.apply(first);

    let last = write_rounds(&c, 60, "after").await;
    while replica.last < last {
        replica.apply(next(&mut stream).await);
    }
    assert_eq!(replica.snapshots, 1);
    // The watcher's copy equals the store.
    let stored: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = c
        .scan_all(ledge_client::ScanOptions::new("default").prefix("w/"))
        .await
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.revision)))
        .collect();
    assert_eq!(replica.state, stored);
}

/// A watch that needs a snapshot of a large range gets it in pages, and a watcher that reads
/// nothing holds a few of them, not the range: four stalled watchers of a 75 MiB range leave the
/// node's memory where it was. After `--watch-stall-ms` each is dropped with RESOURCE_EXHAUSTED
/// naming the revision to resume from, once the pages already queued have reached it.
#[tokio::test]
async fn snapshots_are_paged_and_a_stalled_watcher_is_dropped_holding_little() {
    use ledge_proto::v1 as pb;
    use ledge_proto::v1::kv_client::KvClient;

    let node = Node::start_single_with(&["--log-keep", "100", "--watch-stall-ms", "3000"]);
    let c = node.wait_ready().await;
    let value = vec![b'v'; 256 * 1024];
    for i in 0..300 {
        c.put("default", format!("big/{i:04}"), value.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, _) = node.memory_kib().unwrap();

    let request = || pb::WatchRequest {
        keyspace: "default".into(),
        key: b"big/".to_vec(),
        prefix: true,
        from_revision: 1,
        from_cursor: None,
    };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut kv = KvClient::connect(format!("http://{}", node.addr)).await.unwrap();
        stalled.push(kv.watch(request()).await.unwrap().into_inner());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (during, _) = node.memory_kib().unwrap();
    assert!(during < before + 48 * 1024, "4 stalled watchers of a 75 MiB range: RSS {before} KiB -> {during} KiB");

    // A watcher that reads gets the whole range as one snapshot, then live events.
    let mut reader = c.watch(WatchOptions::prefix("default", "big/").from_revision(1)).await.unwrap();
    let revision = match next(&mut reader).await {
        WatchMessage::Snapshot { kvs, revision, .. } => {
            assert_eq!(kvs.len(), 300);
            assert!(kvs.windows(2).all(|w| w[0].key < w[1].key), "in key order, each key once");
            revision
        }
        other => panic!("expected a snapshot, got {other:?}"),
    };
    let put = c.put("default", "big/new", "x").await.unwrap();
    match next(&mut reader).await {
        WatchMessage::Events { revision: r, events, .. } => {
            assert!(r == put.revision && r > revision && events.len() == 1)
        }
        other => panic!("expected the new put, got {other:?}"),
    }

    // The stalled watchers were dropped: what was queued, then the status.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for mut stream in stalled {
        let mut pages = 0;
        let status = loop {
            match stream.message().await {
                Ok(Some(page)) => {
                    assert!(page.snapshot && page.more, "only pages of the snapshot were queued");
                    pages += 1;
                }
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        };
        // The queue's four, and what HTTP/2's flow-control window let through before it.
        assert!(pages <= 16, "{pages} pages were queued");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("resume with a watch from revision 1"), "{}", status.message());
        assert_eq!(status.metadata().get("ledge-resume-revision").unwrap(), "1");
    }
    assert!(node.is_running());
}
