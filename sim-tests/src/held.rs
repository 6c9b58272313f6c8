//! What each node held of the eventual keyspace, and when: every state a node made durable (a
//! local write once flushed, a peer's pushed states once merged and flushed), as the node itself
//! reports it through its `Environment`'s durable listener. [`check`] holds acknowledged
//! `quorum` writes against it: each must have been durable on a majority of the region when its
//! acknowledgement reached the client — the nodes' own account, not the client's.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ledge_crdt::{DurableListener, Entry, Kind};

use crate::checker::CheckFailure;
use crate::eventual::{EvLog, EvOp, EvOutcome, Stamp, KEYSPACE};

/// One state that became durable on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The node's id.
    pub node: u64,
    /// The key.
    pub key: String,
    /// For a last-writer-wins key: the timestamp of the write the state holds.
    pub lww: Option<Stamp>,
    /// When (simulated time).
    pub at: Duration,
}

/// The shared record of what every node held, filled by the nodes' durable listeners.
#[derive(Debug, Clone, Default)]
pub struct HeldLog(Arc<Mutex<Vec<Held>>>);

impl HeldLog {
    /// A listener for a node's `Environment` that records into this log.
    pub fn listener(&self) -> DurableListener {
        let log = self.0.clone();
        Arc::new(move |node, states| {
            let at = turmoil::elapsed();
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            for state in states.iter().filter(|s| s.space.name == KEYSPACE) {
                let Ok(entry) = Entry::from_bytes(&state.state) else { continue };
                let ts = entry.timestamp();
                let lww = (entry.kind() == Kind::Lww).then_some((ts.physical_ms, ts.logical, ts.node));
                let key = String::from_utf8_lossy(&state.key).into_owned();
                log.push(Held { node, key, lww, at });
            }
        })
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> Vec<Held> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Members that must hold a `quorum` write: a majority of the region's three voters. (A spare
/// that joins mid-run raises the real quorum to three of four; the check stays at two, which
/// still catches a write acknowledged on one copy.)
const QUORUM: usize = 2;

/// Checks that every acknowledged `quorum` put or delete of `clients` was durable on at least a
/// majority of nodes when it was acknowledged.
pub fn check(log: &EvLog, held: &[Held], clients: Range<usize>) -> Result<(), CheckFailure> {
    for r in log.records.iter().filter(|r| clients.contains(&r.client) && r.level == "quorum") {
        let (EvOp::Put(_) | EvOp::Delete, EvOutcome::Ok(Some(stamp))) = (&r.op, &r.outcome) else { continue };
        let mut holders: Vec<u64> = held
            .iter()
            .filter(|h| h.key == r.key && h.at <= r.completed && h.lww.is_some_and(|ts| ts >= *stamp))
            .map(|h| h.node)
            .collect();
        holders.sort_unstable();
        holders.dedup();
        if holders.len() < QUORUM {
            let history = held
                .iter()
                .filter(|h| h.key == r.key)
                .map(|h| format!("  {:>9.3}s node {} durably holds {:?}\n", h.at.as_secs_f64(), h.node, h.lww))
                .collect();
            return Err(CheckFailure {
                reason: format!(
                    "a quorum write to {:?} through {} at {stamp:?}, acknowledged at {:.3}s, was durable on {} node(s) \
                     {holders:?} by then; a quorum needs {QUORUM}",
                    r.key,
                    r.node,
                    r.completed.as_secs_f64(),
                    holders.len()
                ),
                history,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventual::EvRecord;

    fn write(level: &'static str, completed: u64) -> EvLog {
        let record = EvRecord {
            client: 0,
            node: "r1n1".into(),
            key: "lww-1".into(),
            op: EvOp::Put("c0-1".into()),
            level,
            invoked: Duration::from_millis(completed - 5),
            completed: Duration::from_millis(completed),
            outcome: EvOutcome::Ok(Some((1_000, 0, 101))),
        };
        EvLog { records: vec![record], ..EvLog::default() }
    }

    fn held(node: u64, at: u64, physical: u64) -> Held {
        Held { node, key: "lww-1".into(), lww: Some((physical, 0, 101)), at: Duration::from_millis(at) }
    }

    #[test]
    fn a_quorum_write_must_be_durable_on_a_majority_when_acknowledged() {
        let log = write("quorum", 100);
        // Held by the coordinator and one peer (a later write counts: it supersedes this one).
        assert!(check(&log, &[held(101, 90, 1_000), held(102, 99, 1_005)], 0..1).is_ok());
        // Acknowledged on one copy: the peer stored it only after the acknowledgement, or an
        // older state, or nothing.
        for peer in [held(102, 101, 1_000), held(102, 50, 999)] {
            let err = check(&log, &[held(101, 90, 1_000), peer], 0..1).unwrap_err();
            assert!(err.reason.contains("durable on 1 node(s) [101]"), "{}", err.reason);
        }
        // A `one` write needs nothing more; other clients' records are not this check's.
        assert!(check(&write("one", 100), &[held(101, 90, 1_000)], 0..1).is_ok());
        assert!(check(&log, &[], 1..2).is_ok());
    }
}
