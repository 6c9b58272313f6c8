//! Ledge's partition-simulation harness.
//!
//! A *world* is one or more regions of real Ledge nodes — the same `ledge_api::serve` that
//! `ledged` runs, on real sled files in per-host temporary directories — placed on turmoil hosts,
//! so their gRPC traffic (client, Raft, forwarding) crosses turmoil's simulated network. The seed
//! fixes turmoil's network randomness, the nemesis schedule, the workload's choices and each
//! node's election timeout.
//!
//! A run goes:
//!
//! 1. [`World::build`] creates the hosts (and a spare per region for membership changes), a
//!    monitor client that tracks each region's leader, and the fault [`Schedule`] for the seed.
//! 2. The [`Workload`]'s clients start on their own hosts and record every call in a
//!    [`History`]: invocation, then a result, a refusal (not applied), or an unknown fate.
//! 3. The driver steps the simulation and plays the schedule: partitions, leader isolation,
//!    bridges, one-way cuts, crashes and restarts, bounces, message loss, latency spikes, a node
//!    joining mid-fault, skewed clocks. At the end of the fault phase everything is healed.
//! 4. Each workload checks what it recorded ([`Workload::check`]): [`checker::check_linearizable`]
//!    checks each strong key's history with stateright's linearizability tester,
//!    [`convergence::check`] checks that eventual replicas agree and kept every acknowledged
//!    operation, [`held::check`] that every acknowledged `quorum` write was durable on a majority
//!    of nodes by then (from the nodes' own reports), and liveness requires every client to
//!    complete work after the heal.
//!
//! A failure prints the seed (`LEDGE_SIM_SEED=<seed>` replays it), the schedule and the
//! offending key's history. A seed replays exactly: the same history, operation for operation, at
//! the same simulated times ([`Report::digest`] fingerprints it). That takes every source of
//! nondeterminism in the simulator's hands: turmoil seeds each host's tokio runtime (the workspace
//! builds with `--cfg tokio_unstable` for that), sled flushes run on the simulation's thread
//! (`FlushPolicy::Inline` in each node's `Environment`), and clocks and randomness come from the seed.
//!
//! Users run their own workloads by implementing [`Workload`] (see `docs/simulation.md`).

pub mod checker;
pub mod clock;
pub mod convergence;
pub mod eventual;
pub mod held;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod seeds;
pub mod workload;
pub mod world;

pub use checker::CheckFailure;
pub use clock::Clocks;
pub use eventual::EventualWorkload;
pub use history::{Event, History, Outcome, RegisterOp, RegisterRet};
pub use nemesis::{Nemesis, Schedule};
pub use run::{extra_seeds, run, seeds_from_env, Failure, Report};
pub use seeds::{run_seeds, threads_from_env, Summary};
pub use workload::{ClientContext, ClientFuture, Mixed, Recorded, RegisterWorkload, Workload};
pub use world::{World, WorldOptions};

/// Whether this build lets turmoil seed each host's tokio runtime: tokio built with
/// `--cfg tokio_unstable`, which the workspace's `.cargo/config.toml` sets and a `RUSTFLAGS`
/// variable replaces. Without it a seed still plays the same faults and choices, but two runs of
/// it can record different histories.
#[allow(unexpected_cfgs)]
pub fn exact_replay() -> bool {
    cfg!(tokio_unstable)
}
