//! Running one seed: build the world, start the workload's clients, play the faults, then check
//! the history (linearizability) and liveness (after the heal every client completes work again).

use std::fmt;
use std::time::Duration;

use crate::checker::CheckFailure;
use crate::eventual::{EvOutcome, EventualRecorder};
use crate::history::{Event, History, Outcome};
use crate::nemesis::Schedule;
use crate::workload::{ClientContext, Recorded, Workload};
use crate::world::{World, WorldOptions};

/// Time after the heal before liveness is judged (an election, a catch-up).
const SETTLE: Duration = Duration::from_secs(3);

/// What a passing run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The faults played.
    pub schedule: Schedule,
    /// Operations completed with a result.
    pub ok: usize,
    /// Operations refused (not applied).
    pub failed: usize,
    /// Operations whose fate is unknown.
    pub unknown: usize,
    /// A fingerprint of everything the clients recorded (every operation with its node, result
    /// and simulated times, and every final read): two runs of one seed that print the same
    /// digest saw the same history.
    pub digest: u64,
}

/// Why a run failed, with everything needed to replay and understand it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed that replays the run (`LEDGE_SIM_SEED=<seed>`).
    pub seed: u64,
    /// The faults played.
    pub schedule: Schedule,
    /// What went wrong.
    pub reason: String,
    /// The shortest history that shows it (one key's history for a linearizability violation).
    pub history: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation failed: seed {} (replay with LEDGE_SIM_SEED={})", self.seed, self.seed)?;
        writeln!(f, "reason: {}", self.reason)?;
        write!(f, "{}", self.schedule)?;
        if !self.history.is_empty() {
            writeln!(f, "history:")?;
            write!(f, "{}", self.history)?;
        }
        Ok(())
    }
}

/// Runs `workload` in the world `opts` describes and checks the outcome.
pub fn run(opts: &WorldOptions, workload: &dyn Workload) -> Result<Report, Box<Failure>> {
    let fail = |schedule: &Schedule, reason: String, history: String| {
        Box::new(Failure { seed: opts.seed, schedule: schedule.clone(), reason, history })
    };
    let mut world = World::build(opts).map_err(|e| fail(&Schedule::default(), e, String::new()))?;
    let history = History::default();
    let eventual = EventualRecorder::default();
    let fault_end = opts.fault_phase;
    let end = opts.fault_phase + opts.heal_phase;
    for id in 0..workload.clients() {
        let region = &world.regions[id % world.regions.len()];
        let ctx = ClientContext {
            id,
            rank: id,
            seed: opts.seed.wrapping_mul(31).wrapping_add(id as u64),
            hosts: region.all(),
            nodes: region.nodes.clone(),
            history: history.clone(),
            eventual: eventual.clone(),
            fault_end,
            end,
        };
        let fut = workload.client(ctx);
        world.sim.client(format!("client{id}"), async move { fut.await.map_err(|e| e.into()) });
    }
    let result = world.run();
    let schedule = world.schedule.clone();
    let events = history.events();
    if let Err(e) = result {
        return Err(fail(&schedule, e, String::new()));
    }
    let eventual = eventual.snapshot();
    let held = world.held.snapshot();
    let recorded =
        Recorded { history: &events, eventual: &eventual, held: &held, first_client: 0, settled: fault_end + SETTLE };
    workload.check(&recorded).map_err(|CheckFailure { reason, history }| fail(&schedule, reason, history))?;
    let (mut ok, mut failed, mut unknown) = (0, 0, 0);
    for e in &events {
        if let Event::Complete { outcome, .. } = e {
            match outcome {
                Outcome::Ok(_) => ok += 1,
                Outcome::Failed(_) => failed += 1,
                Outcome::Unknown(_) => unknown += 1,
            }
        }
    }
    for r in &eventual.records {
        match r.outcome {
            EvOutcome::Ok(_) => ok += 1,
            EvOutcome::Failed(_) | EvOutcome::Stored(_) => failed += 1,
            EvOutcome::Unknown(_) => unknown += 1,
        }
    }
    let digest = fnv1a(format!("{events:?}{eventual:?}").as_bytes());
    if let Some(path) = std::env::var_os("LEDGE_SIM_HISTORY") {
        write_history(&path, &events, &eventual);
    }
    Ok(Report { seed: opts.seed, schedule, ok, failed, unknown, digest })
}

/// Writes every event of a run, one per line, to `path` (`LEDGE_SIM_HISTORY=FILE`): two replays
/// that print different digests can be compared with `diff`.
fn write_history(path: &std::ffi::OsStr, events: &[Event], eventual: &crate::eventual::EvLog) {
    use std::fmt::Write as _;
    let mut text = String::new();
    for e in events {
        let _ = writeln!(text, "{e:?}");
    }
    for r in &eventual.records {
        let _ = writeln!(text, "{r:?}");
    }
    let _ = writeln!(text, "final values: {:?}", eventual.finals);
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("cannot write the history to {}: {e}", path.to_string_lossy());
    }
}

/// 64-bit FNV-1a: a hash that is the same in every process and on every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The seeds a test run covers: `LEDGE_SIM_SEED=S` replays one; otherwise `LEDGE_SIM_SEEDS=N`
/// (default `default_count`) seeds starting at `LEDGE_SIM_FIRST_SEED` (default 1), plus
/// `LEDGE_SIM_EXTRA_SEEDS=M` (default 0) seeds drawn from the text of `LEDGE_SIM_EXTRA_FROM`
/// (CI passes the commit hash, so every landing explores seeds no earlier one ran).
pub fn seeds_from_env(default_count: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("LEDGE_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("LEDGE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
    let first = std::env::var("LEDGE_SIM_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut seeds: Vec<u64> = (first..first + count).collect();
    let extra: u64 = std::env::var("LEDGE_SIM_EXTRA_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    if extra > 0 {
        let from = std::env::var("LEDGE_SIM_EXTRA_FROM").unwrap_or_default();
        seeds.extend(extra_seeds(&from, extra));
    }
    seeds
}

/// `count` seeds drawn from `text`: consecutive, from a start above the fixed seeds' range that
/// an FNV-1a hash of `text` picks.
pub fn extra_seeds(text: &str, count: u64) -> Vec<u64> {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let start = 1_000_000 + hash % (1 << 40);
    (start..start + count).collect()
}
