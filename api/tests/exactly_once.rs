//! Retried writes apply once, and oversize requests are refused, on a real `ledged`.
//!
//! The raw gRPC API is used so that a test can resend exactly the request a client library would
//! resend after losing the connection: same bytes, same request id.

mod common;

use common::Node;
use ledge_proto::v1 as pb;
use pb::kv_client::KvClient;
use tonic::transport::Channel;
use tonic::Code;

async fn kv(node: &Node) -> KvClient<Channel> {
    node.wait_ready().await;
    KvClient::connect(format!("http://{}", node.addr)).await.expect("connect").max_decoding_message_size(64 << 20)
}

fn id(client_id: u64, sequence: u64) -> Option<pb::RequestId> {
    Some(pb::RequestId { client_id, sequence })
}

async fn get(kv: &mut KvClient<Channel>, key: &str) -> Option<pb::KeyValue> {
    let req = pb::GetRequest { key: key.into(), ..Default::default() };
    kv.get(req).await.expect("get").into_inner().kv
}

#[tokio::test]
async fn a_retried_put_cas_and_batch_apply_once() {
    let node = Node::start_single();
    let mut kv = kv(&node).await;

    // A put sent twice with the same id: one write, one revision, reported twice.
    let put = pb::PutRequest { key: "k".into(), value: "v1".into(), request_id: id(77, 1), ..Default::default() };
    let first = kv.put(put.clone()).await.unwrap().into_inner();
    let again = kv.put(put).await.unwrap().into_inner();
    assert_eq!(first.revision, again.revision, "the retry reports the first write");
    assert_eq!(get(&mut kv, "k").await.unwrap().version, 1, "applied once");

    // A compare-and-set retried after it applied: reported as succeeded, not as a failed
    // condition, and applied once.
    let cas = pb::BatchRequest {
        conditions: vec![pb::Condition { key: "k".into(), test: Some(pb::condition::Test::ValueEquals("v1".into())) }],
        ops: vec![pb::Op { op: Some(pb::op::Op::Put(pb::PutOp { key: "k".into(), value: "v2".into() })) }],
        request_id: id(77, 2),
        ..Default::default()
    };
    let first = kv.batch(cas.clone()).await.unwrap().into_inner();
    let again = kv.batch(cas.clone()).await.unwrap().into_inner();
    assert!(first.succeeded && again.succeeded, "{first:?} {again:?}");
    assert_eq!(first.revision, again.revision);
    assert_eq!(get(&mut kv, "k").await.unwrap().version, 2);

    // The same batch under a new id is a new write: its condition now fails.
    let fresh = kv.batch(pb::BatchRequest { request_id: id(77, 3), ..cas }).await.unwrap().into_inner();
    assert!(!fresh.succeeded);

    // Without an id, a resend applies again (the old protocol's semantics).
    let plain = pb::PutRequest { key: "n".into(), value: "x".into(), ..Default::default() };
    kv.put(plain.clone()).await.unwrap();
    kv.put(plain).await.unwrap();
    assert_eq!(get(&mut kv, "n").await.unwrap().version, 2);

    // A delete retried after it applied reports the first result (the key existed).
    let del = pb::DeleteRequest { key: "k".into(), request_id: id(78, 1), ..Default::default() };
    assert!(kv.delete(del.clone()).await.unwrap().into_inner().deleted);
    assert!(kv.delete(del).await.unwrap().into_inner().deleted, "the retry reports the first result");

    // The session table survives a restart (it is replicated, durable state).
    let put = pb::PutRequest { key: "r".into(), value: "1".into(), request_id: id(79, 1), ..Default::default() };
    let first = kv.put(put.clone()).await.unwrap().into_inner();
    drop(kv);
    let mut node = node;
    node.kill9();
    node.spawn();
    let mut kv = self::kv(&node).await;
    let again = kv.put(put).await.unwrap().into_inner();
    assert_eq!(first.revision, again.revision);
    assert_eq!(get(&mut kv, "r").await.unwrap().version, 1);

    // A zero id is bad input.
    let bad = pb::PutRequest { key: "z".into(), value: "1".into(), request_id: id(0, 1), ..Default::default() };
    assert_eq!(kv.put(bad).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn requests_over_the_limit_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let extra = vec!["--max-request-bytes".to_string(), (2 << 20).to_string()];
    let mut node = Node::new(dir.path().join("data"), addr, &extra);
    node.spawn();
    let mut kv = kv(&node).await;

    // Three 1 MiB values in one batch: every value is legal, the request is not.
    let ops = (0..3)
        .map(|i| pb::Op {
            op: Some(pb::op::Op::Put(pb::PutOp { key: format!("big{i}").into(), value: vec![7; 1 << 20] })),
        })
        .collect();
    let err = kv.batch(pb::BatchRequest { ops, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("2097152"), "the limit is named: {}", err.message());
    assert!(get(&mut kv, "big0").await.is_none(), "nothing was written");

    // Far past the limit: refused by the transport before the bytes are buffered.
    let ops = (0..5)
        .map(|i| pb::Op {
            op: Some(pb::op::Op::Put(pb::PutOp { key: format!("huge{i}").into(), value: vec![7; 1 << 20] })),
        })
        .collect();
    let err = kv.batch(pb::BatchRequest { ops, ..Default::default() }).await.unwrap_err();
    assert!(matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange), "{err}");

    // The node still serves.
    let put = pb::PutRequest { key: "ok".into(), value: vec![1; 1 << 20], ..Default::default() };
    kv.put(put).await.expect("a legal 1 MiB put");
    assert_eq!(get(&mut kv, "ok").await.unwrap().value.len(), 1 << 20);

    // Scan pages are bounded by bytes too: two 1 MiB values do not fit one 2 MiB page.
    let put = pb::PutRequest { key: "ok2".into(), value: vec![2; 1 << 20], ..Default::default() };
    kv.put(put).await.unwrap();
    let page = kv.scan(pb::ScanRequest { prefix: "ok".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(page.kvs.len(), 1);
    assert!(!page.next_page_token.is_empty());
}
