//! Checkers over a run's history.
//!
//! **Linearizability** of strong keyspaces: the history is split per key (each key is an
//! independent register, so a violation always shows on one key's history alone), and each key's
//! history goes to stateright's `LinearizabilityTester` with a compare-and-set register as the
//! sequential specification. An operation refused with an error that guarantees it was not applied
//! is left out; an operation whose fate is unknown stays in flight forever (it may take effect at
//! any point after its invocation, or never), and its client continues as a new logical thread,
//! as Jepsen does for crashed processes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::time::Duration;

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use crate::history::{Event, Outcome, RegisterOp, RegisterRet};

/// The sequential specification: a register that may be absent, with compare-and-set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CasRegister(Option<u64>);

impl SequentialSpec for CasRegister {
    type Op = RegisterOp;
    type Ret = RegisterRet;

    fn invoke(&mut self, op: &RegisterOp) -> RegisterRet {
        match *op {
            RegisterOp::Read => RegisterRet::ReadOk(self.0),
            RegisterOp::Write(v) => {
                self.0 = Some(v);
                RegisterRet::WriteOk
            }
            RegisterOp::Cas { expected, new } => {
                if self.0 == expected {
                    self.0 = Some(new);
                    RegisterRet::CasOk(true)
                } else {
                    RegisterRet::CasOk(false)
                }
            }
        }
    }
}

/// A key whose history is not linearizable.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// That key's history, one line per event, in real-time order.
    pub history: String,
}

/// Why a run's checks failed.
#[derive(Debug, Clone)]
pub struct CheckFailure {
    /// What was violated.
    pub reason: String,
    /// The shortest history that shows it.
    pub history: String,
}

/// Whether an error text (`Code: message`) is one Ledge does not document for these calls under
/// faults. Expected: `Unavailable` (no leader, a node unreachable, a write level not reached),
/// `DeadlineExceeded`, `Cancelled`, `Unknown` (a broken connection) and `NotFound` (a node that
/// has not applied the keyspace's creation yet). Anything else is a bug.
pub fn unexpected_error(text: &str) -> bool {
    let code = text.trim_start_matches('"').split(':').next().unwrap_or_default();
    !matches!(code, "Unavailable" | "DeadlineExceeded" | "Cancelled" | "Unknown" | "NotFound" | "client deadline")
}

/// The register checks for clients `clients`: only documented errors, every key's history is
/// linearizable, and every client completed an operation invoked after `settled`.
pub fn check_registers(events: &[Event], clients: Range<usize>, settled: Duration) -> Result<(), CheckFailure> {
    for e in events {
        if let Event::Complete { outcome: Outcome::Failed(text) | Outcome::Unknown(text), .. } = e {
            if unexpected_error(text) {
                return Err(CheckFailure {
                    reason: format!("a call failed with an undocumented error: {text}"),
                    history: String::new(),
                });
            }
        }
    }
    if let Err(Violation { key, history }) = check_linearizable(events) {
        return Err(CheckFailure { reason: format!("history of key {key:?} is not linearizable"), history });
    }
    check_liveness(events, clients.clone(), settled).map_err(|(client, reason)| {
        // The stuck client's calls from a while before the deadline on, to show what it got.
        let mut ops = BTreeMap::new();
        let mut recent = Vec::new();
        for e in events {
            if let Event::Invoke { id, client: c, key, node, op, at } = e {
                ops.insert(*id, (*c, key.clone(), node.clone(), *op));
                if *c == client && *at + Duration::from_secs(4) >= settled {
                    recent.push(e.clone());
                }
            } else if let Event::Complete { id, .. } = e {
                if recent.iter().any(|r| matches!(r, Event::Invoke { id: i, .. } if i == id)) {
                    recent.push(e.clone());
                }
            }
        }
        CheckFailure { reason, history: render(&recent, &ops) }
    })
}

/// After `since`, every client of `clients` must have completed an operation successfully; the
/// error names the first that did not.
fn check_liveness(events: &[Event], clients: Range<usize>, since: Duration) -> Result<(), (usize, String)> {
    let mut client_of = BTreeMap::new();
    let mut live = BTreeMap::new();
    for e in events {
        match e {
            Event::Invoke { id, client, at, .. } => {
                client_of.insert(*id, (*client, *at));
            }
            Event::Complete { id, outcome: Outcome::Ok(_), .. } => {
                if let Some((client, at)) = client_of.get(id) {
                    if *at >= since {
                        live.insert(*client, true);
                    }
                }
            }
            Event::Complete { .. } => {}
        }
    }
    match clients.into_iter().find(|c| !live.contains_key(c)) {
        Some(c) => Err((c, format!("liveness: client {c} completed no operation after the heal (from {since:?})"))),
        None => Ok(()),
    }
}

/// Checks every key's history for linearizability.
pub fn check_linearizable(events: &[Event]) -> Result<usize, Violation> {
    let mut ops: BTreeMap<usize, (usize, String, String, RegisterOp)> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for e in events {
        match e {
            Event::Invoke { id, client, key, node, op, .. } => {
                ops.insert(*id, (*client, key.clone(), node.clone(), *op));
                per_key.entry(key.clone()).or_default().push(e.clone());
            }
            Event::Complete { id, .. } => {
                if let Some((_, key, _, _)) = ops.get(id) {
                    per_key.entry(key.clone()).or_default().push(e.clone());
                }
            }
        }
    }
    let mut checked = 0;
    for (key, events) in per_key {
        checked += events.len();
        // Grow the history one result at a time and stop at the first prefix that cannot be
        // linearized: that prefix is the shortest history showing the violation, and searching
        // it stays cheap, where proving a whole long history invalid means trying every order of
        // the operations left in flight.
        for (end, e) in events.iter().enumerate() {
            if !matches!(e, Event::Complete { outcome: Outcome::Ok(_), .. }) {
                continue;
            }
            let prefix = &events[..=end];
            if !key_is_linearizable(prefix, &ops) {
                return Err(Violation { key: key.clone(), history: render(prefix, &ops) });
            }
        }
    }
    Ok(checked)
}

fn key_is_linearizable(events: &[Event], ops: &BTreeMap<usize, (usize, String, String, RegisterOp)>) -> bool {
    // Outcomes first: refused operations are dropped, unknown writes never return, unknown
    // reads are dropped (a read that may not have happened constrains nothing).
    let outcome: BTreeMap<usize, &Outcome> = events
        .iter()
        .filter_map(|e| match e {
            Event::Complete { id, outcome, .. } => Some((*id, outcome)),
            _ => None,
        })
        .collect();
    let mut tester = LinearizabilityTester::new(CasRegister::default());
    // Logical thread per client; a client whose operation was left in flight moves on to a new one.
    let mut thread: BTreeMap<usize, usize> = BTreeMap::new();
    let mut next_thread = 1_000_000;
    for e in events {
        match e {
            Event::Invoke { id, client, op, .. } => {
                let keep = match outcome.get(id) {
                    Some(Outcome::Failed(_)) => false,
                    Some(Outcome::Unknown(_)) | None => !matches!(op, RegisterOp::Read),
                    Some(Outcome::Ok(_)) => true,
                };
                if keep {
                    let t = *thread.entry(*client).or_insert(*client);
                    if tester.on_invoke(t, *op).is_err() {
                        return false;
                    }
                }
            }
            Event::Complete { id, outcome: o, .. } => {
                let Some((client, ..)) = ops.get(id) else { continue };
                let t = *thread.entry(*client).or_insert(*client);
                match o {
                    Outcome::Ok(ret) if tester.on_return(t, *ret).is_err() => return false,
                    Outcome::Ok(_) => {}
                    Outcome::Unknown(_) if !matches!(ops[id].3, RegisterOp::Read) => {
                        thread.insert(*client, next_thread);
                        next_thread += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    tester.is_consistent()
}

fn render(events: &[Event], ops: &BTreeMap<usize, (usize, String, String, RegisterOp)>) -> String {
    let mut out = String::new();
    for e in events {
        let _ = match e {
            Event::Invoke { id, client, node, op, at, .. } => {
                writeln!(out, "{:>9.3}s  client {client:<2} invoke   #{id:<5} {op} via {node}", at.as_secs_f64())
            }
            Event::Complete { id, outcome, at } => {
                let (client, _, _, op) = &ops[id];
                writeln!(out, "{:>9.3}s  client {client:<2} complete #{id:<5} {op} -> {outcome:?}", at.as_secs_f64())
            }
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn inv(id: usize, client: usize, op: RegisterOp) -> Event {
        Event::Invoke { id, client, key: "k".into(), node: "n1".into(), op, at: Duration::ZERO }
    }
    fn ok(id: usize, ret: RegisterRet) -> Event {
        Event::Complete { id, outcome: Outcome::Ok(ret), at: Duration::ZERO }
    }

    #[test]
    fn accepts_a_linearizable_history() {
        let h = vec![
            inv(0, 0, RegisterOp::Write(1)),
            inv(1, 1, RegisterOp::Read),
            ok(0, RegisterRet::WriteOk),
            ok(1, RegisterRet::ReadOk(Some(1))),
            inv(2, 1, RegisterOp::Cas { expected: Some(1), new: 2 }),
            ok(2, RegisterRet::CasOk(true)),
        ];
        assert!(check_linearizable(&h).is_ok());
    }

    #[test]
    fn rejects_a_stale_read() {
        let h = vec![
            inv(0, 0, RegisterOp::Write(1)),
            ok(0, RegisterRet::WriteOk),
            inv(1, 1, RegisterOp::Read),
            ok(1, RegisterRet::ReadOk(None)),
        ];
        let v = check_linearizable(&h).unwrap_err();
        assert_eq!(v.key, "k");
        assert!(v.history.contains("read"));
    }

    #[test]
    fn an_unknown_write_may_or_may_not_apply() {
        let unknown = |id| Event::Complete { id, outcome: Outcome::Unknown("deadline".into()), at: Duration::ZERO };
        // Seen later: fine.
        let h = vec![
            inv(0, 0, RegisterOp::Write(7)),
            unknown(0),
            inv(1, 0, RegisterOp::Read),
            ok(1, RegisterRet::ReadOk(Some(7))),
        ];
        assert!(check_linearizable(&h).is_ok());
        // Never seen: fine too.
        let h = vec![
            inv(0, 0, RegisterOp::Write(7)),
            unknown(0),
            inv(1, 0, RegisterOp::Read),
            ok(1, RegisterRet::ReadOk(None)),
        ];
        assert!(check_linearizable(&h).is_ok());
        // A refused write must not be seen.
        let h = vec![
            inv(0, 0, RegisterOp::Write(7)),
            Event::Complete { id: 0, outcome: Outcome::Failed("Unavailable".into()), at: Duration::ZERO },
            inv(1, 0, RegisterOp::Read),
            ok(1, RegisterRet::ReadOk(Some(7))),
        ];
        assert!(check_linearizable(&h).is_err());
    }
}
