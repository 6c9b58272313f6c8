//! The recorded history of a run: every operation a workload client invoked and how it ended,
//! in the order the simulation executed them (turmoil runs every host on one thread, so the
//! recording order is a real-time order).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An operation on one register (a key of a strong keyspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// Linearizable read.
    Read,
    /// Unconditional write of a unique value.
    Write(u64),
    /// Compare-and-set: write `new` if the register holds `expected` (`None`: absent).
    Cas {
        /// Expected current value.
        expected: Option<u64>,
        /// Value to write.
        new: u64,
    },
}

/// What an operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterRet {
    /// A read saw this value (`None`: absent).
    ReadOk(Option<u64>),
    /// A write was applied.
    WriteOk,
    /// A compare-and-set was evaluated; `true` when it applied.
    CasOk(bool),
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It completed with this result.
    Ok(RegisterRet),
    /// It was refused with an error that guarantees it was not applied (`Unavailable`...).
    Failed(String),
    /// Its fate is unknown (deadline, broken connection): it may or may not have applied.
    Unknown(String),
}

/// One entry of the history.
#[derive(Debug, Clone)]
pub enum Event {
    /// A client invoked an operation on a key through a node.
    Invoke {
        /// Operation id (index into the history's operations).
        id: usize,
        /// Client.
        client: usize,
        /// Key.
        key: String,
        /// Node the request went to.
        node: String,
        /// Operation.
        op: RegisterOp,
        /// Simulated time.
        at: Duration,
    },
    /// The operation with this id ended.
    Complete {
        /// Operation id.
        id: usize,
        /// How it ended.
        outcome: Outcome,
        /// Simulated time.
        at: Duration,
    },
}

/// A shared, append-only history.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<Vec<Event>>>);

impl History {
    /// Records an invocation; returns its id.
    pub fn invoke(&self, client: usize, key: &str, node: &str, op: RegisterOp, at: Duration) -> usize {
        let mut events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = events.len();
        events.push(Event::Invoke { id, client, key: key.to_string(), node: node.to_string(), op, at });
        id
    }

    /// Records how operation `id` ended.
    pub fn complete(&self, id: usize, outcome: Outcome, at: Duration) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(Event::Complete { id, outcome, at });
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl fmt::Display for RegisterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterOp::Read => write!(f, "read"),
            RegisterOp::Write(v) => write!(f, "write({v})"),
            RegisterOp::Cas { expected: Some(e), new } => write!(f, "cas({e} -> {new})"),
            RegisterOp::Cas { expected: None, new } => write!(f, "cas(absent -> {new})"),
        }
    }
}
