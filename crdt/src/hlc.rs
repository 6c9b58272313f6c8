//! Hybrid logical clock: timestamps that follow physical time but respect causality.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The default bound on how far ahead of the local physical clock a remote timestamp may be
/// and still be adopted.
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(60);

/// A point in hybrid logical time: physical milliseconds since the Unix epoch, a logical counter
/// that orders events within one millisecond, and the id of the node that issued it.
///
/// Timestamps are totally ordered by `(physical_ms, logical, node)`; the node id breaks ties
/// between nodes, so no two nodes ever issue equal timestamps. Displayed as
/// `physical.logical@node`, e.g. `1700000000000.3@42`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch (or the clock's notion of it).
    pub physical_ms: u64,
    /// Orders events that share a physical millisecond.
    pub logical: u32,
    /// The node that issued the timestamp.
    pub node: u64,
}

impl Timestamp {
    /// The length of [`Timestamp::to_bytes`].
    pub const ENCODED_LEN: usize = 20;

    /// Creates a timestamp.
    pub fn new(physical_ms: u64, logical: u32, node: u64) -> Self {
        Self { physical_ms, logical, node }
    }

    /// Encodes the timestamp big-endian, so that byte order equals timestamp order (usable as a
    /// key prefix in an ordered store).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.physical_ms.to_be_bytes());
        out[8..12].copy_from_slice(&self.logical.to_be_bytes());
        out[12..].copy_from_slice(&self.node.to_be_bytes());
        out
    }

    /// Decodes [`Timestamp::to_bytes`]; any other length is [`Error::InvalidData`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let invalid = || Error::InvalidData(format!("HLC timestamp must be 20 bytes, got {}", bytes.len()));
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().map_err(|_| invalid())?;
        let mut physical = [0; 8];
        let mut logical = [0; 4];
        let mut node = [0; 8];
        physical.copy_from_slice(&bytes[..8]);
        logical.copy_from_slice(&bytes[8..12]);
        node.copy_from_slice(&bytes[12..]);
        Ok(Self {
            physical_ms: u64::from_be_bytes(physical),
            logical: u32::from_be_bytes(logical),
            node: u64::from_be_bytes(node),
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms, self.logical, self.node)
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    /// Parses the [`Display`](fmt::Display) form `physical.logical@node`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidInput(format!("HLC timestamp {s:?} is not of the form physical.logical@node"));
        let (time, node) = s.split_once('@').ok_or_else(invalid)?;
        let (physical, logical) = time.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            physical_ms: physical.parse().map_err(|_| invalid())?,
            logical: logical.parse().map_err(|_| invalid())?,
            node: node.parse().map_err(|_| invalid())?,
        })
    }
}

/// A source of physical time, injected so that simulations and tests control it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock; what production nodes use.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 reads as 0: the HLC still moves forward by its logical part.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to, for tests and simulations (skew, jumps backwards).
/// Share it through an `Arc` to keep steering it after handing it to an [`Hlc`].
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `now_ms` until moved.
    pub fn new(now_ms: u64) -> Self {
        Self { now_ms: AtomicU64::new(now_ms) }
    }

    /// Sets the time, possibly backwards.
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self.now_ms.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| Some(now.saturating_add(by)));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A remote timestamp that was further ahead of the local physical clock than allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "remote HLC timestamp {remote} is {} ms ahead of the local clock ({local_ms}), more than the {max_drift_ms} ms allowed",
    remote.physical_ms.saturating_sub(*local_ms)
)]
pub struct DriftError {
    /// The rejected remote timestamp.
    pub remote: Timestamp,
    /// The local physical clock when it was rejected.
    pub local_ms: u64,
    /// The configured bound.
    pub max_drift_ms: u64,
}

/// A hybrid logical clock for one node: a thin cloneable handle, safe to share between threads.
///
/// [`Hlc::tick`] issues a timestamp for a local event; it is strictly greater than every
/// timestamp this clock issued or observed before, even if the physical clock goes backwards.
/// [`Hlc::observe`] folds in a timestamp received from a peer, so that the next local event is
/// ordered after it — unless the peer is further ahead than `max_drift`, in which case the
/// timestamp is refused (logged and counted) instead of dragging this node's clock into the
/// future.
#[derive(Clone, Debug)]
pub struct Hlc {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: u64,
    clock: Arc<dyn Clock>,
    max_drift_ms: u64,
    /// The greatest timestamp issued or observed. Held only for a few comparisons, never across
    /// a call out of this module.
    last: Mutex<Timestamp>,
    drift_rejections: AtomicU64,
}

impl Hlc {
    /// A clock for `node` reading physical time from `clock`; remote timestamps more than
    /// `max_drift` ahead of it are refused ([`DEFAULT_MAX_DRIFT`] is the usual choice).
    pub fn new(node: u64, clock: Arc<dyn Clock>, max_drift: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                clock,
                max_drift_ms: u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX),
                last: Mutex::new(Timestamp::new(0, 0, node)),
                drift_rejections: AtomicU64::new(0),
            }),
        }
    }

    /// The node id stamped on every timestamp this clock issues.
    pub fn node(&self) -> u64 {
        self.inner.node
    }

    /// The physical clock's current reading, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The configured drift bound.
    pub fn max_drift(&self) -> Duration {
        Duration::from_millis(self.inner.max_drift_ms)
    }

    /// Issues a timestamp for a local event, strictly greater than any issued or observed so far.
    pub fn tick(&self) -> Timestamp {
        let now = self.inner.clock.now_ms();
        let mut last = self.last();
        *last = if now > last.physical_ms {
            Timestamp::new(now, 0, self.inner.node)
        } else {
            self.successor(last.physical_ms, last.logical.checked_add(1))
        };
        *last
    }

    /// Folds in a timestamp received from a peer: afterwards every [`Hlc::tick`] is greater than
    /// `remote`. A remote timestamp more than `max_drift` ahead of the local physical clock is not
    /// adopted: the call logs a warning, counts it in [`Hlc::drift_rejections`] and fails.
    pub fn observe(&self, remote: Timestamp) -> Result<(), DriftError> {
        let now = self.inner.clock.now_ms();
        if remote.physical_ms > now.saturating_add(self.inner.max_drift_ms) {
            let rejections = self.inner.drift_rejections.fetch_add(1, Ordering::Relaxed) + 1;
            let err = DriftError { remote, local_ms: now, max_drift_ms: self.inner.max_drift_ms };
            tracing::warn!(node = self.inner.node, %remote, local_ms = now, rejections, "{err}");
            return Err(err);
        }
        let mut last = self.last();
        let physical = last.physical_ms.max(remote.physical_ms).max(now);
        let logical = match (physical == last.physical_ms, physical == remote.physical_ms) {
            (true, true) => last.logical.max(remote.logical).checked_add(1),
            (true, false) => last.logical.checked_add(1),
            (false, true) => remote.logical.checked_add(1),
            (false, false) => Some(0),
        };
        *last = self.successor(physical, logical);
        Ok(())
    }

    /// Adopts a timestamp this node issued or adopted before a restart (read back from storage),
    /// without the drift check: a node must never reissue a timestamp even if its wall clock went
    /// back. What is stored never holds a peer's timestamp this clock refused, so a restart does
    /// not let one in.
    pub fn restore(&self, issued: Timestamp) {
        let issued = Timestamp::new(issued.physical_ms, issued.logical, self.inner.node);
        let mut last = self.last();
        *last = (*last).max(issued);
    }

    /// The greatest timestamp issued or observed so far (the node's HLC watermark).
    pub fn latest(&self) -> Timestamp {
        *self.last()
    }

    /// How many remote timestamps were refused for being too far ahead.
    pub fn drift_rejections(&self) -> u64 {
        self.inner.drift_rejections.load(Ordering::Relaxed)
    }

    fn last(&self) -> MutexGuard<'_, Timestamp> {
        // The guarded value is a plain timestamp that is always valid, so a panic elsewhere while
        // holding the lock cannot leave it half-written.
        self.inner.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `(physical, logical)`, or the next millisecond if the logical counter overflowed.
    fn successor(&self, physical: u64, logical: Option<u32>) -> Timestamp {
        match logical {
            Some(logical) => Timestamp::new(physical, logical, self.inner.node),
            None => Timestamp::new(physical.saturating_add(1), 0, self.inner.node),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn hlc(node: u64, now_ms: u64) -> (Hlc, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(now_ms));
        (Hlc::new(node, clock.clone(), DEFAULT_MAX_DRIFT), clock)
    }

    #[test]
    fn display_and_parse() {
        let ts = Timestamp::new(1_700_000_000_000, 3, 42);
        assert_eq!(ts.to_string(), "1700000000000.3@42");
        assert_eq!("1700000000000.3@42".parse::<Timestamp>(), Ok(ts));
        assert!(matches!("17.3".parse::<Timestamp>(), Err(Error::InvalidInput(_))));
        assert!(matches!("a.3@1".parse::<Timestamp>(), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn bytes_reject_wrong_length() {
        assert!(matches!(Timestamp::from_bytes(&[0; 19]), Err(Error::InvalidData(_))));
        assert!(matches!(Timestamp::from_bytes(&[0; 21]), Err(Error::InvalidData(_))));
    }

    #[test]
    fn tick_follows_physical_time() {
        let (hlc, clock) = hlc(7, 1_000);
        assert_eq!(hlc.tick(), Timestamp::new(1_000, 0, 7));
        assert_eq!(hlc.tick(), Timestamp::new(1_000, 1, 7));
        clock.advance(Duration::from_millis(5));
        assert_eq!(hlc.tick(), Timestamp::new(1_005, 0, 7));
    }

    #[test]
    fn clock_going_backwards_never_yields_a_smaller_timestamp() {
        let (hlc, clock) = hlc(1, 50_000);
        let before = hlc.tick();
        clock.set(40_000); // NTP stepped the clock back ten seconds
        let after = hlc.tick();
        assert!(after > before, "{after} must follow {before}");
        assert_eq!(after.physical_ms, 50_000);
        clock.set(50_001);
        assert!(hlc.tick() > after);
    }

    #[test]
    fn skewed_nodes_order_causally_related_events() {
        // b's clock runs five seconds behind a's, and then the other way round.
        let (a, a_clock) = hlc(1, 100_000);
        let (b, b_clock) = hlc(2, 95_000);
        let sent = a.tick();
        b.observe(sent).unwrap();
        let reply = b.tick();
        assert!(reply > sent, "b's reply {reply} must follow a's message {sent}");

        a_clock.set(90_000);
        b_clock.set(100_000);
        a.observe(reply).unwrap();
        let next = a.tick();
        assert!(next > reply, "a's next event {next} must follow b's reply {reply}");
        assert_eq!(a.drift_rejections() + b.drift_rejections(), 0);
    }

    #[test]
    fn remote_two_minutes_ahead_is_rejected_and_counted() {
        let (hlc, _clock) = hlc(1, 1_000_000);
        let local = hlc.tick();
        let remote = Timestamp::new(1_000_000 + 120_000, 0, 9);
        let err = hlc.observe(remote).unwrap_err();
        assert_eq!(err, DriftError { remote, local_ms: 1_000_000, max_drift_ms: 60_000 });
        assert_eq!(hlc.drift_rejections(), 1);
        let next = hlc.tick();
        assert!(next > local && next < remote, "{next} must not adopt {remote}");

        // Within the bound the remote is adopted.
        let near = Timestamp::new(1_000_000 + 59_000, 4, 9);
        hlc.observe(near).unwrap();
        assert!(hlc.tick() > near);
        assert_eq!(hlc.drift_rejections(), 1);
    }

    #[test]
    fn logical_overflow_moves_to_the_next_millisecond() {
        let (hlc, _clock) = hlc(3, 10);
        let remote = Timestamp::new(10, u32::MAX, 4);
        hlc.observe(remote).unwrap();
        let ts = hlc.tick();
        assert!(ts > remote);
        assert_eq!(ts, Timestamp::new(11, 1, 3));
    }

    #[test]
    fn restore_skips_the_drift_check() {
        let (hlc, _clock) = hlc(5, 1_000);
        let issued = Timestamp::new(500_000, 2, 5);
        hlc.restore(issued);
        assert!(hlc.tick() > issued);
        assert_eq!(hlc.drift_rejections(), 0);
    }

    #[test]
    fn concurrent_ticks_are_unique() {
        let (hlc, _clock) = hlc(1, 1);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let hlc = hlc.clone();
                std::thread::spawn(move || (0..1_000).map(|_| hlc.tick()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = BTreeSet::new();
        for thread in threads {
            all.extend(thread.join().unwrap());
        }
        assert_eq!(all.len(), 4_000);
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(p, l, n)| Timestamp::new(p, l, n))
    }

    proptest! {
        #[test]
        fn bytes_roundtrip_and_preserve_order(a in timestamp(), b in timestamp()) {
            prop_assert_eq!(Timestamp::from_bytes(&a.to_bytes()), Ok(a));
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
        }

        #[test]
        fn ticks_increase_whatever_the_clock_does(moves in prop::collection::vec(0u64..10_000, 1..100)) {
            let (hlc, clock) = hlc(1, 5_000);
            let mut last = hlc.tick();
            for now in moves {
                clock.set(now);
                let next = hlc.tick();
                prop_assert!(next > last);
                last = next;
            }
        }
    }
}
