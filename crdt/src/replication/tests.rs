//! The engine over an in-memory transport: peers reached by calling their replicas directly.

use std::sync::atomic::AtomicBool;

use super::*;
use crate::replica::tests::node;
use crate::{Op, Read};

/// A peer reached by calling its replica's `serve` directly; `up` cuts it off.
#[derive(Clone)]
struct Direct {
    from: u64,
    to: Replica,
    address: String,
    up: Arc<AtomicBool>,
}

impl Remote for Direct {
    fn peer(&self) -> u64 {
        self.to.node()
    }

    fn call(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send {
        let (to, from, up) = (self.to.clone(), self.from, self.up.load(Ordering::SeqCst));
        async move {
            match up {
                true => to.serve(from, request).await,
                false => Err(Error::Unavailable(format!("node {} is cut off", to.node()))),
            }
        }
    }
}

impl Peer for Direct {
    fn address(&self) -> &str {
        &self.address
    }

    fn with_timeout(&self, _: Duration) -> Self {
        self.clone()
    }
}

/// Reaches the replicas it was given, each while its switch is on.
struct Local(Vec<(Replica, Arc<AtomicBool>)>);

impl Transport for Local {
    type Peer = Direct;

    fn connect(&self, from: u64, peer: u64, address: &str, _: Duration) -> Result<Direct, Error> {
        let (to, up) =
            self.0.iter().find(|(r, _)| r.node() == peer).cloned().ok_or_else(|| Error::NotFound(address.into()))?;
        Ok(Direct { from, to, address: address.into(), up })
    }
}

/// A fixed membership.
struct Fixed(u64, Vec<(u64, String)>);

impl Membership for Fixed {
    fn members(&self) -> (u64, Vec<(u64, String)>) {
        (self.0, self.1.clone())
    }

    async fn changed(&mut self) -> bool {
        false
    }
}

fn options() -> SyncOptions {
    SyncOptions {
        anti_entropy_interval: Duration::from_millis(100),
        call_timeout: Duration::from_secs(1),
        log_keep: 1000,
        watch_keep: 10,
    }
}

#[tokio::test]
async fn write_levels_count_the_members_that_hold_the_write() {
    let (a, b, c) = (node(1, 1_000).await, node(2, 1_000).await, node(3, 1_000).await);
    let switches: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect();
    let transport = Local(vec![(b.replica.clone(), switches[1].clone()), (c.replica.clone(), switches[2].clone())]);
    let members = Fixed(1, (1..=3).map(|id| (id, format!("n{id}"))).collect());
    let (_stop, stopping) = watch::channel(false);
    let engine = Replication::start(a.replica.clone(), transport, members, options(), stopping);
    let deadline = || Instant::now() + Duration::from_secs(5);

    // Everyone up: `all` is met, and the peers hold the write.
    let put = a.replica.apply(&a.space, b"k", Op::Put(b"v".to_vec())).await.unwrap();
    engine.wait_acks(put.seq, WriteLevel::All, deadline()).await.unwrap();
    for peer in [&b, &c] {
        assert_eq!(peer.replica.get(&peer.space, b"k").unwrap().unwrap().read(), Read::Bytes(b"v".to_vec()));
    }

    // One peer cut off: `quorum` (2 of 3) is met, `all` falls short, naming what was stored.
    switches[2].store(false, Ordering::SeqCst);
    let put = a.replica.apply(&a.space, b"k", Op::Put(b"w".to_vec())).await.unwrap();
    engine.wait_acks(put.seq, WriteLevel::Quorum, deadline()).await.unwrap();
    let short = engine.wait_acks(put.seq, WriteLevel::All, Instant::now() + Duration::from_millis(300)).await;
    assert_eq!(short, Err(Shortfall { level: WriteLevel::All, needed: 3, members: 3, stored: 2 }));
    assert!(short.unwrap_err().to_string().contains("stored on 2 of 3 nodes; it is kept"));

    // Both cut off: a quorum read cannot be served; once they are back, it merges and repairs.
    switches[1].store(false, Ordering::SeqCst);
    let err = engine.read_quorum(&a.space, b"k", Instant::now() + Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    switches[1].store(true, Ordering::SeqCst);
    switches[2].store(true, Ordering::SeqCst);
    let read = engine.read_quorum(&a.space, b"k", deadline()).await.unwrap();
    assert_eq!(read.entry.unwrap().read(), Read::Bytes(b"w".to_vec()));
    // The cut-off peer catches up (push retries, anti-entropy) without another write.
    let caught_up = Instant::now() + Duration::from_secs(10);
    while c.replica.get(&c.space, b"k").unwrap().unwrap().read() != Read::Bytes(b"w".to_vec()) {
        assert!(Instant::now() < caught_up, "node 3 never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let links = engine.link_status();
    assert_eq!(links.iter().map(|l| (l.node_id, l.address.as_str())).collect::<Vec<_>>(), [(2, "n2"), (3, "n3")]);
}

#[tokio::test]
async fn a_quorum_scan_merges_a_majority_and_repairs_the_replicas_behind() {
    let (a, b, c) = (node(1, 1_000).await, node(2, 1_000).await, node(3, 1_000).await);
    let up = Arc::new(AtomicBool::new(true));
    let down = Arc::new(AtomicBool::new(false));
    let transport = Local(vec![(b.replica.clone(), up), (c.replica.clone(), down)]);
    let members = Fixed(1, (1..=3).map(|id| (id, format!("n{id}"))).collect());
    let (_stop, stopping) = watch::channel(false);
    let engine = Replication::start(a.replica.clone(), transport, members, options(), stopping);
    // States that reach a replica by merge only (merged states are never pushed): "x" on node
    // 1, "y" on node 2; node 3 (cut off) wrote them.
    for (key, holder) in [(&b"x"[..], &a), (&b"y"[..], &b)] {
        c.replica.apply(&c.space, key, Op::Put(key.to_vec())).await.unwrap();
        let state = c.replica.get_bytes(&c.space, key).unwrap().unwrap();
        holder.replica.merge(&holder.space, key, &state).unwrap();
    }
    let scan = engine
        .scan_quorum(&a.space, std::ops::Bound::Unbounded, None, 100, Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(scan.rows.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(), [&b"x"[..], b"y"]);
    assert_eq!(scan.replicas, 2);
    // Both answering replicas now hold both keys: node 1 at once, node 2 in the background.
    assert!(a.replica.get(&a.space, b"y").unwrap().is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.replica.get(&b.space, b"x").unwrap().is_none() {
        assert!(Instant::now() < deadline, "node 2 was not repaired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
