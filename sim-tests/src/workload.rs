//! Workloads: what clients do during a run. A workload gives each client a future that runs on
//! its own turmoil host, talks to the nodes over simulated gRPC, and records what it did in the
//! shared [`History`].
//!
//! [`RegisterWorkload`] is the built-in strong-keyspace workload: every client reads, writes and
//! compare-and-sets a few keys through random nodes, with a deadline on every call.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ledge_consensus::Dialer;
use ledge_proto::v1 as pb;
use ledge_proto::v1::admin_client::AdminClient;
use ledge_proto::v1::kv_client::KvClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

use crate::checker::{self, CheckFailure};
use crate::eventual::{EvLog, EventualRecorder};
use crate::history::{Event, History, Outcome, RegisterOp, RegisterRet};
use crate::net::{SimDialer, PORT};

/// What a client of the simulation gets.
#[derive(Clone)]
pub struct ClientContext {
    /// Client number, unique in the run (the history records it).
    pub id: usize,
    /// This client's number among its own workload's clients (0 for the first), which differs
    /// from `id` when workloads are combined with [`Mixed`].
    pub rank: usize,
    /// Seed for this client's choices.
    pub seed: u64,
    /// Hosts of the region this client works against (spare included).
    pub hosts: Vec<String>,
    /// The region's bootstrap nodes (the first hosts of `hosts`; the spare may never start).
    pub nodes: Vec<String>,
    /// Where to record register operations.
    pub history: History,
    /// Where to record eventual-keyspace operations and final states.
    pub eventual: EventualRecorder,
    /// When the fault phase ends (everything is healed then).
    pub fault_end: Duration,
    /// When the run ends.
    pub end: Duration,
}

impl ClientContext {
    /// A KV client for a node host, over simulated TCP.
    pub fn kv(&self, host: &str) -> Result<KvClient<Channel>, String> {
        Ok(KvClient::new(SimDialer::default().channel(&format!("{host}:{PORT}"))?))
    }

    /// A KV client for every host of the region, with the host's name.
    pub fn kv_clients(&self) -> Result<Vec<(String, KvClient<Channel>)>, String> {
        self.hosts.iter().map(|host| Ok((host.clone(), self.kv(host)?))).collect()
    }

    /// An Admin client for a node host, over simulated TCP.
    pub fn admin(&self, host: &str) -> Result<AdminClient<Channel>, String> {
        Ok(AdminClient::new(SimDialer::default().channel(&format!("{host}:{PORT}"))?))
    }
}

/// What a run recorded, handed to [`Workload::check`] after it.
#[derive(Clone, Copy)]
pub struct Recorded<'a> {
    /// The register history of every client.
    pub history: &'a [Event],
    /// The eventual operations and final states.
    pub eventual: &'a EvLog,
    /// What each node reported durable of the eventual keyspace, and when.
    pub held: &'a [crate::held::Held],
    /// Number of this workload's first client (nonzero inside [`Mixed`]).
    pub first_client: usize,
    /// When the heal has settled: liveness counts operations invoked after it.
    pub settled: Duration,
}

/// A boxed client future.
pub type ClientFuture = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// A workload: how many clients, and what each does.
pub trait Workload {
    /// Number of clients.
    fn clients(&self) -> usize;
    /// The future client `ctx.id` runs.
    fn client(&self, ctx: ClientContext) -> ClientFuture;
    /// Checks what the run recorded. The default checks the register history: every key's
    /// history is linearizable, and every client completed an operation after the heal.
    fn check(&self, run: &Recorded<'_>) -> Result<(), CheckFailure> {
        checker::check_registers(run.history, run.first_client..run.first_client + self.clients(), run.settled)
    }
}

/// Several workloads in one world, each with its own clients and its own checks.
pub struct Mixed(pub Vec<Box<dyn Workload + Send + Sync>>);

impl Mixed {
    /// The part client `id` belongs to, and the number of that part's first client.
    fn part(&self, id: usize) -> Option<(&dyn Workload, usize)> {
        let mut first = 0;
        for w in &self.0 {
            if id < first + w.clients() {
                return Some((w.as_ref(), first));
            }
            first += w.clients();
        }
        None
    }
}

impl Workload for Mixed {
    fn clients(&self) -> usize {
        self.0.iter().map(|w| w.clients()).sum()
    }

    fn client(&self, mut ctx: ClientContext) -> ClientFuture {
        match self.part(ctx.id) {
            Some((w, first)) => {
                ctx.rank = ctx.id - first;
                w.client(ctx)
            }
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn check(&self, run: &Recorded<'_>) -> Result<(), CheckFailure> {
        let mut first = run.first_client;
        for w in &self.0 {
            w.check(&Recorded { first_client: first, ..*run })?;
            first += w.clients();
        }
        Ok(())
    }
}

/// Reads, writes and compare-and-sets on a few keys of the `default` keyspace.
#[derive(Debug, Clone)]
pub struct RegisterWorkload {
    /// Number of clients.
    pub clients: usize,
    /// Number of keys.
    pub keys: usize,
    /// Deadline of each call.
    pub deadline: Duration,
    /// Pause between a client's calls.
    pub think: Duration,
}

impl Default for RegisterWorkload {
    fn default() -> Self {
        Self { clients: 3, keys: 3, deadline: Duration::from_millis(1_500), think: Duration::from_millis(100) }
    }
}

/// Whether an error code guarantees the request was not applied.
fn refused(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::ResourceExhausted
    )
}

pub(crate) fn outcome_of_status(s: &tonic::Status) -> Outcome {
    let text = format!("{:?}: {}", s.code(), s.message());
    // A status the server sent is final; a transport failure is final only when the connection
    // was never established (the request was never delivered).
    // A status the server sent is final; a transport failure is final only when the request
    // never left (the connection could not be established).
    let transport = std::error::Error::source(s).is_some();
    let never_connected = ledge_consensus::never_sent(s);
    if refused(s.code()) && (!transport || never_connected) {
        Outcome::Failed(text)
    } else {
        Outcome::Unknown(text)
    }
}

/// Runs one call with a client-side deadline and classifies its failure.
pub(crate) async fn call<T>(
    deadline: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Outcome> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(outcome_of_status(&s)),
        Err(_) => Err(Outcome::Unknown("client deadline".into())),
    }
}

/// A request with a gRPC deadline.
pub(crate) fn request<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(deadline);
    r
}

fn decode(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl RegisterWorkload {
    /// Runs `op`; writes carry `id` (a request id), so that resending one is safe.
    async fn one(
        &self,
        kv: &mut KvClient<Channel>,
        key: &str,
        op: RegisterOp,
        id: Option<pb::RequestId>,
    ) -> Result<RegisterRet, Outcome> {
        let d = self.deadline;
        match op {
            RegisterOp::Read => {
                let options =
                    pb::ReadOptions { consistency: pb::ReadConsistency::Linearizable as i32, ..Default::default() };
                let req =
                    pb::GetRequest { keyspace: String::new(), key: key.as_bytes().to_vec(), options: Some(options) };
                let reply = call(d, kv.get(request(req, d))).await?;
                Ok(RegisterRet::ReadOk(reply.kv.and_then(|kv| decode(&kv.value))))
            }
            RegisterOp::Write(v) => {
                let req = pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: v.to_string().into_bytes(),
                    request_id: id,
                    ..Default::default()
                };
                call(d, kv.put(request(req, d))).await?;
                Ok(RegisterRet::WriteOk)
            }
            RegisterOp::Cas { expected, new } => {
                use pb::condition::Test;
                let test = match expected {
                    Some(e) => Test::ValueEquals(e.to_string().into_bytes()),
                    None => Test::Absent(true),
                };
                let req = pb::BatchRequest {
                    keyspace: String::new(),
                    conditions: vec![pb::Condition { key: key.as_bytes().to_vec(), test: Some(test) }],
                    ops: vec![pb::Op {
                        op: Some(pb::op::Op::Put(pb::PutOp {
                            key: key.as_bytes().to_vec(),
                            value: new.to_string().into_bytes(),
                        })),
                    }],
                    request_id: id,
                    level: 0,
                };
                let reply = call(d, kv.batch(request(req, d))).await?;
                Ok(RegisterRet::CasOk(reply.succeeded))
            }
        }
    }
}

impl Workload for RegisterWorkload {
    fn clients(&self) -> usize {
        self.clients
    }

    fn client(&self, ctx: ClientContext) -> ClientFuture {
        let me = self.clone();
        Box::pin(async move {
            let mut rng = StdRng::seed_from_u64(ctx.seed);
            let mut clients = ctx.kv_clients()?;
            let mut last_seen: Vec<Option<u64>> = vec![None; me.keys];
            let mut counter = 0u64;
            while turmoil::elapsed() < ctx.end {
                let k = rng.gen_range(0..me.keys);
                let key = format!("reg-{k}");
                counter += 1;
                let value = (ctx.id as u64 + 1) * 1_000_000 + counter;
                let op = match rng.gen_range(0..10) {
                    0..=4 => RegisterOp::Read,
                    5..=7 => RegisterOp::Write(value),
                    _ => RegisterOp::Cas { expected: last_seen[k], new: value },
                };
                let (host, kv) = &mut clients[rng.gen_range(0..ctx.hosts.len())];
                let id = ctx.history.invoke(ctx.id, &key, host, op, turmoil::elapsed());
                // Writes carry a request id: a write whose outcome is unknown (a connection lost
                // mid-call, a deadline) is resent once, on another node, with the same id. The
                // region answers it with the first outcome, so a success here is the first
                // attempt's; had the region applied it twice, a CAS would report a failure for
                // a write that took effect and the checker would see it.
                let request_id = match op {
                    RegisterOp::Read => None,
                    _ => Some(pb::RequestId { client_id: ctx.id as u64 + 1, sequence: counter }),
                };
                let mut result = me.one(kv, &key, op, request_id).await;
                if request_id.is_some() && matches!(result, Err(Outcome::Unknown(_))) && turmoil::elapsed() < ctx.end {
                    let (_, kv) = &mut clients[rng.gen_range(0..ctx.hosts.len())];
                    if let Ok(ret) = me.one(kv, &key, op, request_id).await {
                        result = Ok(ret);
                    }
                }
                match result {
                    Ok(ret) => {
                        match (op, ret) {
                            (_, RegisterRet::ReadOk(v)) => last_seen[k] = v,
                            (RegisterOp::Write(v), _) | (RegisterOp::Cas { new: v, .. }, RegisterRet::CasOk(true)) => {
                                last_seen[k] = Some(v)
                            }
                            _ => {}
                        }
                        ctx.history.complete(id, Outcome::Ok(ret), turmoil::elapsed());
                    }
                    Err(outcome) => ctx.history.complete(id, outcome, turmoil::elapsed()),
                }
                tokio::time::sleep(me.think).await;
            }
            Ok(())
        })
    }
}
