//! `Kv.Watch` on eventual keyspaces against real `ledged` processes: a node's change stream in
//! commit order, each change with its whole state and a cursor; exact resumption from a cursor
//! on the node that issued it (across a kill -9 too); a snapshot first anywhere else; changes
//! merged from peers in the stream; a watcher that never reads dropped with a cursor to resume
//! from.

mod common;

use std::time::Duration;

use common::{Node, Region};
use ledge_client::{Client, EventKind, Hlc, Mode, Scope, ValueKind, WatchMessage, WatchOptions, WatchStream};

const KS: &str = "ev";

use common::next_message as next;

/// The one event of an eventual change message, and the message's cursor.
async fn change(stream: &mut WatchStream) -> (ledge_client::WatchEvent, Hlc) {
    match next(stream).await {
        WatchMessage::Events { mut events, cursor, revision } => {
            assert_eq!((events.len(), revision), (1, 0), "one change per message, no revision");
            (events.remove(0), cursor.expect("eventual changes carry a cursor"))
        }
        other => panic!("expected a change, got {other:?}"),
    }
}

async fn keyspace(client: &Client) {
    client.create_keyspace(KS, Mode::Eventual, Scope::Region).await.expect("create keyspace");
}

#[tokio::test]
async fn an_eventual_watch_streams_changes_and_resumes_exactly_from_a_cursor() {
    let mut node = Node::start_single_with(&["--watch-stall-ms", "2000"]);
    let c = node.wait_ready().await;
    keyspace(&c).await;

    // From now on: each change in commit order, with its state.
    let mut stream = c.watch(WatchOptions::prefix(KS, "s/")).await.unwrap();
    let put = c.put(KS, "s/a", "1").await.unwrap();
    c.increment(KS, "s/c", 5).await.unwrap();
    c.set_add(KS, "s/set", "m1").await.unwrap();
    c.put(KS, "other", "not watched").await.unwrap();
    c.delete(KS, "s/a").await.unwrap();

    let (a, first) = change(&mut stream).await;
    assert_eq!((a.kind, a.key.as_slice(), a.value.as_slice()), (EventKind::Put, &b"s/a"[..], &b"1"[..]));
    assert_eq!(a.state.as_ref().and_then(|s| s.hlc), put.hlc, "the state carries the write's timestamp");
    let (counter, second) = change(&mut stream).await;
    let state = counter.state.unwrap();
    assert_eq!((state.kind, state.counter, counter.value.as_slice()), (Some(ValueKind::Counter), Some(5), &b"5"[..]));
    let (set, third) = change(&mut stream).await;
    assert_eq!(set.state.unwrap().members, [b"m1".to_vec()]);
    let (deleted, fourth) = change(&mut stream).await;
    assert_eq!((deleted.kind, deleted.key.as_slice()), (EventKind::Delete, &b"s/a"[..]));
    assert!(first < second && second < third && third < fourth, "cursors grow with the stream");
    assert_eq!(stream.cursor(), Some(fourth));
    drop(stream);

    // Resumed after the second change: the third and fourth again, then what came since; no
    // snapshot, nothing else.
    c.put(KS, "s/d", "4").await.unwrap();
    let mut resumed = c.watch(WatchOptions::prefix(KS, "s/").from_cursor(second)).await.unwrap();
    assert_eq!(change(&mut resumed).await.1, third);
    assert_eq!(change(&mut resumed).await.1, fourth);
    let (d, fifth) = change(&mut resumed).await;
    assert_eq!(d.key, b"s/d");
    drop(resumed);

    // Killed and restarted, the node still resumes exactly: positions are durable, and so is
    // every change a watcher was sent.
    node.kill9();
    node.spawn();
    let c = node.wait_ready().await;
    c.put(KS, "s/e", "5").await.unwrap();
    let mut after_crash = c.watch(WatchOptions::prefix(KS, "s/").from_cursor(fourth)).await.unwrap();
    assert_eq!(change(&mut after_crash).await.1, fifth);
    let (e, sixth) = change(&mut after_crash).await;
    assert!(e.key == b"s/e" && sixth > fifth, "new changes after the restart come after the old ones");
    drop(after_crash);

    // A cursor another node issued: the range's current state first, then changes after it.
    let foreign = Hlc { node_id: fifth.node_id + 1, ..fifth };
    let mut elsewhere = c.watch(WatchOptions::prefix(KS, "s/").from_cursor(foreign)).await.unwrap();
    let snapshot_cursor = match next(&mut elsewhere).await {
        WatchMessage::Snapshot { kvs, cursor, .. } => {
            let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
            assert_eq!(keys, [&b"s/c"[..], b"s/d", b"s/e", b"s/set"], "present keys only, in key order");
            cursor.expect("an eventual snapshot carries a cursor")
        }
        other => panic!("expected a snapshot, got {other:?}"),
    };
    c.put(KS, "s/f", "6").await.unwrap();
    let (f, after) = change(&mut elsewhere).await;
    assert!(f.key == b"s/f" && after > snapshot_cursor);
    // A single key, from the snapshot's cursor: only what changed after it.
    let mut one = c.watch(WatchOptions::key(KS, "s/f").from_cursor(snapshot_cursor)).await.unwrap();
    assert_eq!(change(&mut one).await.1, after);

    // Options of the other side are refused, naming the way that works.
    let err = c.watch(WatchOptions::key(KS, "s/f").from_revision(3)).await.unwrap_err();
    assert_eq!(err.code(), ledge_client::Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("resumes from a cursor"), "{err}");
    let err = c.watch(WatchOptions::key("default", "k").from_cursor(after)).await.unwrap_err();
    assert_eq!(err.code(), ledge_client::Code::InvalidArgument, "{err}");

    // A watcher that never reads is dropped, with the cursor to resume from.
    {
        use ledge_proto::v1 as pb;
        let mut kv = pb::kv_client::KvClient::connect(format!("http://{}", node.addr)).await.unwrap();
        let request =
            pb::WatchRequest { keyspace: KS.into(), key: b"big/".to_vec(), prefix: true, ..Default::default() };
        let mut stalled = kv.watch(request).await.unwrap().into_inner();
        let value = vec![b'v'; 64 * 1024];
        for i in 0..200 {
            c.put(KS, format!("big/{i:04}"), value.clone()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut queued = 0;
        let status = loop {
            match stalled.message().await {
                Ok(Some(msg)) => {
                    assert!(msg.cursor.is_some());
                    queued += 1;
                }
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        };
        // The queue's four, and what HTTP/2's flow-control windows let through before it: the
        // node held no more than that for the watcher.
        assert!(queued < 64, "{queued} changes of 64 KiB were queued for a watcher that never read");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let resume = status.metadata().get("ledge-resume-cursor").expect("resume cursor").to_str().unwrap();
        assert!(
            status.message().contains(&format!("resume with a watch from cursor {resume}")),
            "{}",
            status.message()
        );
        // Resuming from it delivers the rest, none twice.
        let resume: Hlc = resume.parse().unwrap();
        let mut rest = c.watch(WatchOptions::prefix(KS, "big/").from_cursor(resume)).await.unwrap();
        let mut keys = Vec::new();
        while keys.len() < 200 - queued {
            let (event, _) = change(&mut rest).await;
            keys.push(event.key);
        }
        assert_eq!(keys.last().unwrap(), b"big/0199");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "in commit order, each once");
    }
    assert!(node.is_running());
}

#[tokio::test]
async fn a_watch_on_one_node_sees_writes_made_at_another() {
    let region = Region::start(3, &["--anti-entropy-ms", "200"]);
    region.wait_leader().await;
    region.wait_members(3, 0).await;
    keyspace(&region.client().await).await;
    let clients = region.clients_knowing(KS).await;
    let mut watch = clients[0].watch(WatchOptions::key(KS, "shared")).await.unwrap();
    let written = clients[1].put(KS, "shared", "from node 2").await.unwrap();
    let (event, cursor) = change(&mut watch).await;
    assert_eq!(event.value, b"from node 2");
    assert_eq!(event.state.unwrap().hlc, written.hlc, "the write's own timestamp");
    assert_eq!(cursor.node_id, region.nodes[0].raw_status().await.unwrap().node_id, "node 1's stream position");
    // The same cursor at node 3 (which did not issue it): a snapshot, then node 3's changes.
    let mut there = clients[2].watch(WatchOptions::key(KS, "shared").from_cursor(cursor)).await.unwrap();
    match next(&mut there).await {
        WatchMessage::Snapshot { kvs, .. } => assert_eq!(kvs[0].value, b"from node 2"),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    clients[0].increment(KS, "shared-not-watched", 1).await.unwrap();
    clients[0].put(KS, "shared", "from node 1").await.unwrap();
    assert_eq!(change(&mut there).await.0.value, b"from node 1");
    assert_eq!(change(&mut watch).await.0.value, b"from node 1");
}
