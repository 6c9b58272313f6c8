//! The eventual-keyspace workload: clients increment counters, add and remove set members, and
//! put and delete last-writer-wins keys of an eventual keyspace through every node, whichever side
//! of a partition it is on. After the run, one client reads every key from every node until the
//! replicas agree (or a deadline passes) and records what each node holds; [`crate::convergence`]
//! then checks it against what was acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ledge_proto::v1 as pb;
use ledge_proto::v1::kv_client::KvClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::checker::CheckFailure;
use crate::history::Outcome;
use crate::workload::{call, request, ClientContext, ClientFuture, Recorded, Workload};

/// The eventual keyspace the workload creates and uses.
pub const KEYSPACE: &str = "sim_ev";

/// An HLC timestamp as (physical ms, logical, node), in its total order.
pub type Stamp = (u64, u32, u64);

fn stamp(hlc: Option<pb::Hlc>) -> Option<Stamp> {
    hlc.map(|h| (h.physical_ms, h.logical, h.node_id))
}

/// One operation on an eventual key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvOp {
    /// Counter increment by a delta (negative: decrement).
    Incr(i64),
    /// Set add of a member unique to the run.
    SetAdd(String),
    /// Set remove of a member this client added before.
    SetRemove(String),
    /// Last-writer-wins put of a value unique to the run.
    Put(String),
    /// Last-writer-wins delete.
    Delete,
}

/// How an eventual operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvOutcome {
    /// Acknowledged, at this HLC timestamp.
    Ok(Option<Stamp>),
    /// Refused with an error that guarantees it was not applied.
    Failed(String),
    /// Refused because the write level was not reached in time, but stored on at least the
    /// coordinating node, which promises it will still spread: it must not be lost.
    Stored(String),
    /// Fate unknown: it may or may not have been applied (and may still spread).
    Unknown(String),
}

/// One recorded operation.
#[derive(Debug, Clone)]
pub struct EvRecord {
    /// Client that made it.
    pub client: usize,
    /// Node it went to.
    pub node: String,
    /// Key.
    pub key: String,
    /// Operation.
    pub op: EvOp,
    /// Write level asked for.
    pub level: &'static str,
    /// When it was invoked (simulated time).
    pub invoked: Duration,
    /// When it ended.
    pub completed: Duration,
    /// How it ended.
    pub outcome: EvOutcome,
}

/// What a node held for a key at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalValue {
    /// A counter's merged value (0 when absent).
    Counter(i64),
    /// A set's members (empty when absent).
    Set(BTreeSet<String>),
    /// A last-writer-wins value and the timestamp of the write that set it.
    Lww(String, Option<Stamp>),
    /// A last-writer-wins key that is absent or deleted.
    Absent,
    /// The node could not answer the read.
    Error(String),
}

/// What the eventual clients of one run recorded.
#[derive(Debug, Clone, Default)]
pub struct EvLog {
    /// Every operation, in completion order.
    pub records: Vec<EvRecord>,
    /// Each answering node's final state, by host, then key.
    pub finals: BTreeMap<String, BTreeMap<String, FinalValue>>,
    /// When the final reads first saw every node agree.
    pub converged_at: Option<Duration>,
    /// The hosts that had to answer the final reads (the region's bootstrap nodes).
    pub required: Vec<String>,
}

/// The shared, append-only record of a run's eventual operations.
#[derive(Debug, Clone, Default)]
pub struct EventualRecorder(Arc<Mutex<EvLog>>);

impl EventualRecorder {
    fn with<T>(&self, f: impl FnOnce(&mut EvLog) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records one finished operation.
    pub fn record(&self, record: EvRecord) {
        self.with(|log| log.records.push(record));
    }

    /// A copy of everything recorded.
    pub fn snapshot(&self) -> EvLog {
        self.with(|log| log.clone())
    }
}

/// Counters, sets and last-writer-wins keys of an eventual keyspace, written through random
/// nodes at write level `one` (mostly) or `quorum`.
#[derive(Debug, Clone)]
pub struct EventualWorkload {
    /// Number of clients.
    pub clients: usize,
    /// Keys of each kind (counter, set, lww).
    pub keys: usize,
    /// Deadline of each call.
    pub deadline: Duration,
    /// Pause between a client's calls.
    pub think: Duration,
    /// How long after the end of the run the final reads may wait for the replicas to agree.
    pub converge_within: Duration,
}

impl Default for EventualWorkload {
    fn default() -> Self {
        Self {
            clients: 3,
            keys: 2,
            deadline: Duration::from_millis(1_500),
            think: Duration::from_millis(100),
            converge_within: Duration::from_secs(6),
        }
    }
}

impl EventualWorkload {
    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for kind in ["counter", "set", "lww"] {
            keys.extend((0..self.keys).map(|i| format!("{kind}-{i}")));
        }
        keys
    }

    /// Creates the keyspace (idempotently) through any node that can; gives up at `until`.
    async fn create_keyspace(&self, ctx: &ClientContext, rng: &mut StdRng) -> Result<bool, String> {
        while turmoil::elapsed() < ctx.end {
            let host = &ctx.hosts[rng.gen_range(0..ctx.nodes.len())];
            let mut admin = ctx.admin(host)?;
            let req = pb::CreateKeyspaceRequest {
                name: KEYSPACE.into(),
                mode: pb::Mode::Eventual as i32,
                if_not_exists: true,
                ..Default::default()
            };
            if call(self.deadline, admin.create_keyspace(request(req, self.deadline))).await.is_ok() {
                return Ok(true);
            }
            tokio::time::sleep(self.think).await;
        }
        Ok(false)
    }

    /// One random operation through one node.
    async fn one(&self, ctx: &ClientContext, rng: &mut StdRng, kv: &mut KvClient<Channel>, state: &mut ClientState) {
        let k = rng.gen_range(0..self.keys);
        let level = if rng.gen_bool(0.2) { pb::WriteLevel::Quorum } else { pb::WriteLevel::One };
        let d = self.deadline;
        let ks = || KEYSPACE.to_string();
        state.counter += 1;
        let unique = format!("c{}-{}", ctx.id, state.counter);
        let (key, op) = match rng.gen_range(0..10) {
            0..=3 => {
                let key = format!("counter-{k}");
                let delta = if rng.gen_bool(0.25) { -rng.gen_range(1..=3) } else { rng.gen_range(1..=5) };
                (key, EvOp::Incr(delta))
            }
            4..=6 => {
                let key = format!("set-{k}");
                match state.added.get_mut(&key).filter(|m| !m.is_empty() && rng.gen_bool(0.3)) {
                    Some(members) => {
                        let member = members.remove(rng.gen_range(0..members.len()));
                        (key, EvOp::SetRemove(member))
                    }
                    None => (key, EvOp::SetAdd(unique)),
                }
            }
            7 => (format!("lww-{k}"), EvOp::Delete),
            _ => (format!("lww-{k}"), EvOp::Put(unique)),
        };
        let invoked = turmoil::elapsed();
        let bytes = key.as_bytes().to_vec();
        let level_i = level as i32;
        let result = match &op {
            EvOp::Incr(delta) => {
                let req = pb::IncrementRequest { keyspace: ks(), key: bytes, delta: *delta, level: level_i };
                call(d, kv.increment(request(req, d))).await.map(|r| r.hlc)
            }
            EvOp::SetAdd(m) | EvOp::SetRemove(m) => {
                let req = pb::SetRequest { keyspace: ks(), key: bytes, member: m.clone().into_bytes(), level: level_i };
                let reply = if matches!(op, EvOp::SetAdd(_)) {
                    call(d, kv.set_add(request(req, d))).await
                } else {
                    call(d, kv.set_remove(request(req, d))).await
                };
                reply.map(|r| r.hlc)
            }
            EvOp::Put(v) => {
                let req = pb::PutRequest {
                    keyspace: ks(),
                    key: bytes,
                    value: v.clone().into_bytes(),
                    level: level_i,
                    request_id: None,
                };
                call(d, kv.put(request(req, d))).await.map(|r| r.hlc)
            }
            EvOp::Delete => {
                let req = pb::DeleteRequest { keyspace: ks(), key: bytes, level: level_i, request_id: None };
                call(d, kv.delete(request(req, d))).await.map(|r| r.hlc)
            }
        };
        let outcome = match result {
            Ok(hlc) => EvOutcome::Ok(stamp(hlc)),
            Err(Outcome::Failed(text)) if text.contains("the write will still spread") => EvOutcome::Stored(text),
            Err(Outcome::Failed(text)) => EvOutcome::Failed(text),
            Err(Outcome::Unknown(text)) => EvOutcome::Unknown(text),
            Err(Outcome::Ok(ret)) => EvOutcome::Unknown(format!("{ret:?}")),
        };
        if let (EvOp::SetAdd(m), EvOutcome::Ok(_)) = (&op, &outcome) {
            state.added.entry(key.clone()).or_default().push(m.clone());
        }
        ctx.eventual.record(EvRecord {
            client: ctx.id,
            node: state.host.clone(),
            key,
            op,
            level: if level == pb::WriteLevel::Quorum { "quorum" } else { "one" },
            invoked,
            completed: turmoil::elapsed(),
            outcome,
        });
    }

    /// Reads every key from every host that answers, until all agree or the deadline passes;
    /// records the last states seen.
    async fn final_reads(&self, ctx: &ClientContext) -> Result<(), String> {
        let until = ctx.end + self.converge_within;
        let keys = self.keys();
        let mut clients = ctx.kv_clients()?;
        ctx.eventual.with(|log| log.required = ctx.nodes.clone());
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let mut states = BTreeMap::new();
            for (host, kv) in &mut clients {
                let state = self.read_all(kv, &keys).await;
                // A host outside the bootstrap set that answers nothing is a spare that never
                // started; one that answers anything is a member and must converge too.
                let silent = state.values().all(|v| matches!(v, FinalValue::Error(_)));
                if !silent || ctx.nodes.contains(host) {
                    states.insert(host.clone(), state);
                }
            }
            let required = ctx.nodes.iter().all(|h| states.contains_key(h));
            let agree = states.values().all(|s| states.values().next() == Some(s));
            let done = required && agree;
            if done || turmoil::elapsed() >= until {
                let now = turmoil::elapsed();
                ctx.eventual.with(|log| {
                    log.finals = states;
                    log.converged_at = done.then_some(now);
                });
                return Ok(());
            }
        }
    }

    /// Every key of one node.
    async fn read_all(&self, kv: &mut KvClient<Channel>, keys: &[String]) -> BTreeMap<String, FinalValue> {
        let d = Duration::from_millis(500);
        let mut state = BTreeMap::new();
        for key in keys {
            let options = pb::ReadOptions { consistency: pb::ReadConsistency::One as i32, ..Default::default() };
            let req =
                pb::GetRequest { keyspace: KEYSPACE.into(), key: key.as_bytes().to_vec(), options: Some(options) };
            let value = match call(d, kv.get(request(req, d))).await {
                Ok(reply) => final_value(key, reply.kv),
                Err(other) => FinalValue::Error(format!("{other:?}")),
            };
            state.insert(key.clone(), value);
        }
        state
    }
}

/// A node's answer for `key`, normalised by the key's kind.
fn final_value(key: &str, kv: Option<pb::KeyValue>) -> FinalValue {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match (key.split('-').next(), kv) {
        (Some("counter"), kv) => FinalValue::Counter(kv.map_or(0, |kv| kv.counter)),
        (Some("set"), kv) => {
            FinalValue::Set(kv.map(|kv| kv.members.iter().map(|m| lossy(m)).collect()).unwrap_or_default())
        }
        (_, Some(kv)) => FinalValue::Lww(lossy(&kv.value), stamp(kv.hlc)),
        (_, None) => FinalValue::Absent,
    }
}

/// A client's own memory: the node it talks to now, members it added, a counter for unique
/// values.
struct ClientState {
    host: String,
    counter: u64,
    added: BTreeMap<String, Vec<String>>,
}

impl Workload for EventualWorkload {
    fn clients(&self) -> usize {
        self.clients
    }

    fn client(&self, ctx: ClientContext) -> ClientFuture {
        let me = self.clone();
        Box::pin(async move {
            let mut rng = StdRng::seed_from_u64(ctx.seed);
            if me.create_keyspace(&ctx, &mut rng).await? {
                let mut clients = ctx.kv_clients()?;
                let mut state = ClientState { host: String::new(), counter: 0, added: BTreeMap::new() };
                while turmoil::elapsed() < ctx.end {
                    // Eventual writes go to the bootstrap nodes; the spare may never start.
                    let (host, kv) = &mut clients[rng.gen_range(0..ctx.nodes.len())];
                    state.host.clone_from(host);
                    me.one(&ctx, &mut rng, kv, &mut state).await;
                    tokio::time::sleep(me.think).await;
                }
            }
            if ctx.rank == 0 {
                me.final_reads(&ctx).await?;
            }
            Ok(())
        })
    }

    fn check(&self, run: &Recorded<'_>) -> Result<(), CheckFailure> {
        let clients = run.first_client..run.first_client + self.clients;
        crate::convergence::check(run.eventual, clients.clone(), run.settled)?;
        crate::held::check(run.eventual, run.held, clients)
    }
}
