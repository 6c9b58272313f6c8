//! The checker of eventual keyspaces: after the heal every replica holds the same state, and that
//! state keeps every acknowledged operation. An operation refused because its write level was not
//! reached in time was still stored on the node that took it, and the reply promises it will
//! spread: it counts as acknowledged.
//!
//! - **Convergence**: every bootstrap node answered the final reads, and all answering nodes hold
//!   equal values for every key.
//! - **Counters**: the value is the sum of the acknowledged increments plus some of the ones
//!   whose fate is unknown: it lies between the sums that take all the unknown negative, or all
//!   the unknown positive deltas.
//! - **Sets**: every member is one that was added (acknowledged or unknown, never refused); every
//!   acknowledged add that no remove targeted is present; a member whose acknowledged remove ran
//!   on the node that had acknowledged its add, after that add, is absent (the remove observed it).
//! - **Last-writer-wins**: the surviving write is the acknowledged write with the highest HLC, or
//!   one with an unknown fate that is at least as high; a value nobody wrote is a violation.
//! - **Errors**: only the documented ones (see [`crate::checker::unexpected_error`]).
//! - **Liveness**: every client completed an operation after the heal settled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::time::Duration;

use crate::checker::{unexpected_error, CheckFailure};
use crate::eventual::{EvLog, EvOp, EvOutcome, EvRecord, FinalValue, Stamp};

/// Checks the eventual records of clients `clients` (client numbers) after a run.
pub fn check(log: &EvLog, clients: Range<usize>, settled: Duration) -> Result<(), CheckFailure> {
    let fail = |reason: String, key: Option<&str>| Err(CheckFailure { reason, history: render(log, key) });
    for r in &log.records {
        if let EvOutcome::Failed(text) | EvOutcome::Unknown(text) = &r.outcome {
            if unexpected_error(text) {
                return fail(
                    format!(
                        "{} on {:?} through {} failed with an undocumented error: {text}",
                        op_name(&r.op),
                        r.key,
                        r.node
                    ),
                    Some(&r.key),
                );
            }
        }
    }
    if log.finals.is_empty() {
        return fail("no node answered the final reads".into(), None);
    }
    if let Some(missing) = log.required.iter().find(|h| !log.finals.contains_key(*h)) {
        return fail(format!("node {missing} could not be reached for the final reads after the heal"), None);
    }
    let (first_host, first) = log.finals.iter().next().expect("finals is not empty");
    for (host, state) in &log.finals {
        for (key, value) in state {
            if let FinalValue::Error(e) = value {
                return fail(format!("final read of {key:?} on {host} failed: {e}"), Some(key));
            }
            if first.get(key) != Some(value) {
                let states: Vec<String> = log.finals.iter().map(|(h, s)| format!("{h}: {:?}", s.get(key))).collect();
                return fail(
                    format!(
                        "replicas did not converge on {key:?} ({first_host} and {host} differ): {}",
                        states.join("; ")
                    ),
                    Some(key),
                );
            }
        }
    }
    for (key, value) in first {
        let records: Vec<&EvRecord> = log.records.iter().filter(|r| &r.key == key).collect();
        if let Err(reason) = check_key(value, &records) {
            return fail(format!("{key:?}: {reason}"), Some(key));
        }
    }
    for client in clients {
        let live = log
            .records
            .iter()
            .any(|r| r.client == client && r.invoked >= settled && matches!(r.outcome, EvOutcome::Ok(_)));
        if !live {
            return fail(
                format!("liveness: eventual client {client} completed no operation after the heal (from {settled:?})"),
                None,
            );
        }
    }
    Ok(())
}

fn check_key(value: &FinalValue, records: &[&EvRecord]) -> Result<(), String> {
    match value {
        FinalValue::Counter(v) => check_counter(*v, records),
        FinalValue::Set(members) => check_set(members, records),
        FinalValue::Lww(v, ts) => check_lww(Some((v, *ts)), records),
        FinalValue::Absent => check_lww(None, records),
        FinalValue::Error(e) => Err(format!("final read failed: {e}")),
    }
}

fn check_counter(value: i64, records: &[&EvRecord]) -> Result<(), String> {
    let (mut acked, mut low, mut high) = (0i64, 0i64, 0i64);
    for r in records {
        let EvOp::Incr(d) = r.op else { continue };
        match r.outcome {
            EvOutcome::Ok(_) | EvOutcome::Stored(_) => acked += d,
            EvOutcome::Unknown(_) if d < 0 => low += d,
            EvOutcome::Unknown(_) => high += d,
            EvOutcome::Failed(_) => {}
        }
    }
    if (acked + low..=acked + high).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "counter is {value}, but acknowledged increments sum to {acked} and unknown ones allow [{}, {}]",
            acked + low,
            acked + high
        ))
    }
}

fn check_set(members: &BTreeSet<String>, records: &[&EvRecord]) -> Result<(), String> {
    let mut added: BTreeMap<&str, &EvRecord> = BTreeMap::new();
    let mut maybe_added: BTreeSet<&str> = BTreeSet::new();
    let mut removes: BTreeMap<&str, Vec<&EvRecord>> = BTreeMap::new();
    for r in records {
        match (&r.op, &r.outcome) {
            (EvOp::SetAdd(m), EvOutcome::Ok(_) | EvOutcome::Stored(_)) => {
                added.insert(m, r);
            }
            (EvOp::SetAdd(m), EvOutcome::Unknown(_)) => {
                maybe_added.insert(m);
            }
            (EvOp::SetRemove(m), EvOutcome::Ok(_) | EvOutcome::Unknown(_) | EvOutcome::Stored(_)) => {
                removes.entry(m).or_default().push(r)
            }
            _ => {}
        }
    }
    if let Some(m) = members.iter().find(|m| !added.contains_key(m.as_str()) && !maybe_added.contains(m.as_str())) {
        return Err(format!("set holds {m:?}, which no add that may have applied wrote"));
    }
    for (m, add) in &added {
        let present = members.contains(*m);
        let rs = removes.get(m).map(Vec::as_slice).unwrap_or_default();
        if rs.is_empty() && !present {
            return Err(format!("acknowledged add of {m:?} (via {}) is lost", add.node));
        }
        let observed = rs
            .iter()
            .any(|r| matches!(r.outcome, EvOutcome::Ok(_)) && r.node == add.node && r.invoked >= add.completed);
        if observed && present {
            return Err(format!("{m:?} is present although a remove on {} observed its add", add.node));
        }
    }
    Ok(())
}

fn check_lww(value: Option<(&String, Option<Stamp>)>, records: &[&EvRecord]) -> Result<(), String> {
    let latest = records
        .iter()
        .filter_map(|r| match r.outcome {
            EvOutcome::Ok(Some(ts)) => Some((ts, *r)),
            _ => None,
        })
        .max_by_key(|(ts, _)| *ts);
    // A write stored without reaching its level has no timestamp in its reply: like an unknown
    // one, it may be the latest.
    let unknown = |want_delete: bool| {
        records.iter().any(|r| {
            matches!(r.outcome, EvOutcome::Unknown(_) | EvOutcome::Stored(_))
                && matches!(r.op, EvOp::Delete) == want_delete
        })
    };
    match value {
        Some((v, ts)) => {
            let Some(writer) = records.iter().find(|r| r.op == EvOp::Put(v.clone())) else {
                return Err(format!("holds {v:?}, which nobody wrote"));
            };
            if matches!(writer.outcome, EvOutcome::Failed(_)) {
                return Err(format!("holds {v:?}, whose write was refused"));
            }
            match (latest, ts) {
                (Some((top, r)), Some(ts)) if ts < top => Err(format!(
                    "holds {v:?} at {ts:?}, but {} at {top:?} was acknowledged later in HLC order",
                    op_name(&r.op)
                )),
                (Some((top, r)), Some(ts)) if ts == top && r.op != EvOp::Put(v.clone()) => {
                    Err(format!("holds {v:?} at {ts:?}, the timestamp of another write ({})", op_name(&r.op)))
                }
                _ => Ok(()),
            }
        }
        None => match latest {
            Some((top, r)) if matches!(r.op, EvOp::Put(_)) && !unknown(true) => {
                Err(format!("is absent, but the acknowledged {} at {top:?} is the latest write", op_name(&r.op)))
            }
            _ => Ok(()),
        },
    }
}

fn op_name(op: &EvOp) -> String {
    match op {
        EvOp::Incr(d) => format!("incr({d})"),
        EvOp::SetAdd(m) => format!("sadd({m})"),
        EvOp::SetRemove(m) => format!("srem({m})"),
        EvOp::Put(v) => format!("put({v})"),
        EvOp::Delete => "del".into(),
    }
}

/// The operations on `key` (all of them when `None`), and every node's final value for it.
fn render(log: &EvLog, key: Option<&str>) -> String {
    let mut out = String::new();
    for r in log.records.iter().filter(|r| key.is_none_or(|k| r.key == k)) {
        let _ = writeln!(
            out,
            "{:>9.3}s..{:>7.3}s  client {:<2} {:<8} {:<14} via {} ({}) -> {:?}",
            r.invoked.as_secs_f64(),
            r.completed.as_secs_f64(),
            r.client,
            r.key,
            op_name(&r.op),
            r.node,
            r.level,
            r.outcome
        );
    }
    for (host, state) in &log.finals {
        let values: Vec<String> = state
            .iter()
            .filter(|(k, _)| key.is_none_or(|want| k.as_str() == want))
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        let _ = writeln!(out, "final on {host}: {}", values.join(", "));
    }
    match log.converged_at {
        Some(at) => {
            let _ = writeln!(out, "replicas agreed at {:.3}s", at.as_secs_f64());
        }
        None => {
            let _ = writeln!(out, "replicas never agreed");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, node: &str, op: EvOp, outcome: EvOutcome, at: u64) -> EvRecord {
        EvRecord {
            client: 0,
            node: node.into(),
            key: key.into(),
            op,
            level: "one",
            invoked: Duration::from_millis(at),
            completed: Duration::from_millis(at + 1),
            outcome,
        }
    }

    fn log(records: Vec<EvRecord>, finals: &[(&str, &str, FinalValue)]) -> EvLog {
        let mut log = EvLog { records, required: vec!["n1".into()], ..EvLog::default() };
        for (host, key, v) in finals {
            log.finals.entry(host.to_string()).or_default().insert(key.to_string(), v.clone());
        }
        log
    }

    const OK: EvOutcome = EvOutcome::Ok(Some((1, 0, 1)));

    #[test]
    fn counters_keep_every_acknowledged_increment() {
        let records = vec![
            rec("counter-0", "n1", EvOp::Incr(3), OK, 0),
            rec("counter-0", "n2", EvOp::Incr(2), EvOutcome::Unknown("client deadline".into()), 5),
        ];
        let ok = |v| check(&log(records.clone(), &[("n1", "counter-0", FinalValue::Counter(v))]), 0..0, Duration::ZERO);
        assert!(ok(3).is_ok());
        assert!(ok(5).is_ok());
        let lost = ok(2).unwrap_err();
        assert!(lost.reason.contains("acknowledged increments sum to 3"), "{}", lost.reason);
        assert!(lost.history.contains("incr(3)"));
    }

    #[test]
    fn divergent_replicas_fail() {
        let finals = [("n1", "counter-0", FinalValue::Counter(1)), ("n2", "counter-0", FinalValue::Counter(0))];
        let records = vec![rec("counter-0", "n1", EvOp::Incr(1), OK, 0)];
        let err = check(&log(records, &finals), 0..0, Duration::ZERO).unwrap_err();
        assert!(err.reason.contains("did not converge"), "{}", err.reason);
    }

    #[test]
    fn sets_keep_acknowledged_adds_and_observed_removes() {
        let add = rec("set-0", "n1", EvOp::SetAdd("a".into()), OK, 0);
        let set = |ms: &[&str]| FinalValue::Set(ms.iter().map(|m| m.to_string()).collect());
        assert!(check(&log(vec![add.clone()], &[("n1", "set-0", set(&["a"]))]), 0..0, Duration::ZERO).is_ok());
        assert!(check(&log(vec![add.clone()], &[("n1", "set-0", set(&[]))]), 0..0, Duration::ZERO).is_err());
        assert!(check(&log(vec![add.clone()], &[("n1", "set-0", set(&["a", "z"]))]), 0..0, Duration::ZERO).is_err());
        let remove = rec("set-0", "n1", EvOp::SetRemove("a".into()), OK, 10);
        let both = vec![add.clone(), remove];
        assert!(check(&log(both.clone(), &[("n1", "set-0", set(&[]))]), 0..0, Duration::ZERO).is_ok());
        assert!(check(&log(both, &[("n1", "set-0", set(&["a"]))]), 0..0, Duration::ZERO).is_err());
        // A remove on another node may not have seen the add: either outcome is allowed.
        let elsewhere = vec![add, rec("set-0", "n2", EvOp::SetRemove("a".into()), OK, 10)];
        assert!(check(&log(elsewhere, &[("n1", "set-0", set(&["a"]))]), 0..0, Duration::ZERO).is_ok());
    }

    #[test]
    fn lww_keeps_the_highest_timestamp() {
        let records = vec![
            rec("lww-0", "n1", EvOp::Put("x".into()), EvOutcome::Ok(Some((5, 0, 1))), 0),
            rec("lww-0", "n2", EvOp::Put("y".into()), EvOutcome::Ok(Some((7, 0, 2))), 0),
        ];
        let lww = |v: &str, ts| FinalValue::Lww(v.into(), Some(ts));
        assert!(check(&log(records.clone(), &[("n1", "lww-0", lww("y", (7, 0, 2)))]), 0..0, Duration::ZERO).is_ok());
        let err = check(&log(records.clone(), &[("n1", "lww-0", lww("x", (5, 0, 1)))]), 0..0, Duration::ZERO);
        assert!(err.unwrap_err().reason.contains("acknowledged later"));
        assert!(check(&log(records.clone(), &[("n1", "lww-0", FinalValue::Absent)]), 0..0, Duration::ZERO).is_err());
        let mut with_delete = records;
        with_delete.push(rec("lww-0", "n1", EvOp::Delete, EvOutcome::Ok(Some((9, 0, 1))), 20));
        assert!(check(&log(with_delete, &[("n1", "lww-0", FinalValue::Absent)]), 0..0, Duration::ZERO).is_ok());
    }
}
