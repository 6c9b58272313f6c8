//! A real one-node `ledged` driven through the client library: the KV and admin API, bad input,
//! paging, and durability across SIGKILL.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::Node;
use ledge_client::{Condition, Mode, Op, ReadOptions, ScanOptions, Scope};
use tonic::Code;

#[tokio::test]
async fn kv_and_keyspaces_round_trip() {
    let node = Node::start_single();
    let c = node.wait_ready().await;

    let put = c.put("default", "greeting", "hello").await.unwrap();
    let got = c.get("default", "greeting", ReadOptions::linearizable()).await.unwrap();
    let kv = got.kv.expect("key present");
    assert_eq!(kv.value, b"hello");
    assert_eq!(kv.revision, put.revision);
    assert_eq!(kv.version, 1);
    assert!(got.as_of.revision >= put.revision);
    assert!(!got.as_of.stale);

    let put2 = c.put("default", "greeting", "hi").await.unwrap();
    assert!(put2.revision > put.revision);
    let kv = c.get("default", "greeting", ReadOptions::stale()).await.unwrap().kv.unwrap();
    assert_eq!((kv.value.as_slice(), kv.version, kv.create_revision), (&b"hi"[..], 2, put.revision));

    // Keyspaces are separate namespaces.
    let ks = c.create_keyspace("orders", Mode::Strong, Scope::Region).await.unwrap();
    assert_eq!(ks.name, "orders");
    c.put("orders", "greeting", "other").await.unwrap();
    assert_eq!(c.get("default", "greeting", ReadOptions::default()).await.unwrap().kv.unwrap().value, b"hi");
    let names: Vec<String> = c.list_keyspaces().await.unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, vec!["default".to_string(), "orders".to_string()]);
    let dup = c.create_keyspace("orders", Mode::Strong, Scope::Region).await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    c.create_keyspace_if_not_exists("orders", Mode::Strong, Scope::Region).await.unwrap();

    // Delete reports whether the key existed.
    let del = c.delete("default", "greeting").await.unwrap();
    assert!(del.deleted);
    assert!(!c.delete("default", "greeting").await.unwrap().deleted);
    assert!(c.get("default", "greeting", ReadOptions::default()).await.unwrap().kv.is_none());

    // Conditional batch: compare-and-set succeeds once, then fails without writing.
    let r = c.put("default", "lock", "free").await.unwrap().revision;
    let cas = c
        .batch(
            "default",
            vec![Condition::revision_equals("lock", r)],
            vec![Op::put("lock", "held"), Op::put("owner", "me")],
        )
        .await
        .unwrap();
    assert!(cas.succeeded);
    let again =
        c.batch("default", vec![Condition::revision_equals("lock", r)], vec![Op::put("lock", "stolen")]).await.unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.failed_conditions, vec![0]);
    assert_eq!(c.get("default", "lock", ReadOptions::default()).await.unwrap().kv.unwrap().value, b"held");
    let absent = c.batch("default", vec![Condition::absent("owner")], vec![Op::delete("owner")]).await.unwrap();
    assert!(!absent.succeeded);
    assert_eq!(c.get("default", "owner", ReadOptions::default()).await.unwrap().kv.unwrap().value, b"me");

    // Dropping a keyspace removes it and its data; re-creating starts empty.
    c.drop_keyspace("orders").await.unwrap();
    assert_eq!(c.get("orders", "greeting", ReadOptions::default()).await.unwrap_err().code(), Code::NotFound);
    c.create_keyspace("orders", Mode::Strong, Scope::Region).await.unwrap();
    assert!(c.get("orders", "greeting", ReadOptions::default()).await.unwrap().kv.is_none());

    let status = c.status().await.unwrap();
    assert_eq!(status.raft_state, "leader");
    assert_eq!(status.region, "test");
    assert_eq!(status.members.len(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let node = Node::start_single();
    let c = node.wait_ready().await;
    let before = c.put("default", "keep", "safe").await.unwrap();

    let expect = |r: Result<(), ledge_client::Error>, code: Code, words: &str| {
        let e = r.expect_err("request must fail");
        assert_eq!(e.code(), code, "{e}");
        assert!(e.message().contains(words), "message {:?} should mention {words:?}", e.message());
    };
    expect(c.put("default", "", "v").await.map(drop), Code::InvalidArgument, "key is empty");
    expect(c.put("default", vec![b'k'; 4097], "v").await.map(drop), Code::ResourceExhausted, "key is 4097 bytes");
    expect(c.put("default", "keep", vec![0u8; (1 << 20) + 1]).await.map(drop), Code::ResourceExhausted, "value is");
    let ops: Vec<Op> = (0..1001).map(|i| Op::put(format!("k{i}"), "v")).collect();
    expect(c.batch("default", vec![], ops).await.map(drop), Code::ResourceExhausted, "1001 operations");
    expect(c.put("nope", "k", "v").await.map(drop), Code::NotFound, "keyspace \"nope\" does not exist");
    expect(c.put("Bad Name", "k", "v").await.map(drop), Code::InvalidArgument, "keyspace name");
    expect(
        c.create_keyspace("UPPER", Mode::Strong, Scope::Region).await.map(drop),
        Code::InvalidArgument,
        "keyspace name",
    );
    expect(
        c.create_keyspace(&"a".repeat(65), Mode::Strong, Scope::Region).await.map(drop),
        Code::InvalidArgument,
        "more than 64",
    );
    expect(c.drop_keyspace("default").await.map(drop), Code::InvalidArgument, "default keyspace");
    expect(
        c.scan(ScanOptions::new("default").page_token("%%%not-a-token")).await.map(drop),
        Code::InvalidArgument,
        "page_token",
    );
    expect(c.get("default", "keep", ReadOptions::one()).await.map(drop), Code::InvalidArgument, "eventual");

    // The node still serves, and stored data is unchanged.
    let kv = c.get("default", "keep", ReadOptions::default()).await.unwrap().kv.unwrap();
    assert_eq!((kv.value.as_slice(), kv.revision), (&b"safe"[..], before.revision));
    let all = c.scan_all(ScanOptions::new("default")).await.unwrap();
    assert_eq!(all.len(), 1, "only the one valid write is stored");
}

#[tokio::test]
async fn scan_pages_over_ten_thousand_keys() {
    let node = Node::start_single();
    let c = node.wait_ready().await;
    for chunk in 0..20 {
        let ops: Vec<Op> = (0..500).map(|i| Op::put(format!("key/{:05}", chunk * 500 + i), "v")).collect();
        assert!(c.batch("default", vec![], ops).await.unwrap().succeeded);
    }
    c.put("default", "other", "x").await.unwrap();

    let mut seen = Vec::new();
    let mut options = ScanOptions::new("default").prefix("key/").limit(777);
    let mut pages = 0;
    loop {
        let page = c.scan(options.clone()).await.unwrap();
        pages += 1;
        assert!(page.kvs.len() <= 777);
        seen.extend(page.kvs.into_iter().map(|kv| String::from_utf8(kv.key).unwrap()));
        match page.next_page_token {
            Some(token) => options = options.page_token(token),
            None => break,
        }
    }
    let expected: Vec<String> = (0..10_000).map(|i| format!("key/{i:05}")).collect();
    assert_eq!(seen, expected, "every key once, in order");
    assert_eq!(pages, 13);
    assert_eq!(c.scan_all(ScanOptions::new("default").range("key/09990", "key/09995")).await.unwrap().len(), 5);
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let mut node = Node::start_single();
    let c = node.wait_ready().await;
    let acked: Arc<Mutex<BTreeMap<String, (String, u64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let c = c.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                let (key, value) = (format!("w{w}/k{i}"), format!("value-{w}-{i}"));
                match c.put("default", key.clone(), value.clone()).await {
                    Ok(put) => {
                        acked.lock().unwrap().insert(key, (value, put.revision));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill while writers are still running: whatever was acknowledged must survive.
    while acked.lock().unwrap().len() < 400 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    node.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 400);

    node.spawn();
    let c = node.wait_ready().await;
    for (key, (value, revision)) in &acked {
        let kv = c.get("default", key.clone(), ReadOptions::linearizable()).await.unwrap().kv;
        let kv = kv.unwrap_or_else(|| panic!("acknowledged key {key} lost after SIGKILL"));
        assert_eq!(kv.value, value.as_bytes(), "{key}");
        assert_eq!(kv.revision, *revision, "{key}");
    }
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_restarts() {
    let mut node = Node::start_single();
    let c = node.wait_ready().await;
    let put = c.put("default", "k", "v").await.unwrap();
    assert!(node.terminate(), "ledged exits 0 on SIGTERM; log:\n{}", node.log());
    node.spawn();
    let c = node.wait_ready().await;
    let kv = c.get("default", "k", ReadOptions::default()).await.unwrap().kv.unwrap();
    assert_eq!(kv.revision, put.revision);
    let id = c.status().await.unwrap().node_id;
    node.terminate();
    node.spawn();
    assert_eq!(node.wait_ready().await.status().await.unwrap().node_id, id, "node id kept in the data dir");
}
