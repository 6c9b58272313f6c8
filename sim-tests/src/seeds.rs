//! Running many seeds: on several threads at once (each turmoil world lives on one thread), with
//! a summary of what ran, which nemeses were exercised, and which seeds failed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::nemesis::Nemesis;
use crate::run::{run, Failure};
use crate::workload::Workload;
use crate::world::WorldOptions;

/// What a batch of seeds did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: usize,
    /// Wall-clock time of the batch.
    pub elapsed: Duration,
    /// Operations completed with a result.
    pub ok: usize,
    /// Operations whose fate is unknown.
    pub unknown: usize,
    /// Operations refused.
    pub failed: usize,
    /// How many seeds used each nemesis.
    pub nemeses: BTreeMap<Nemesis, usize>,
    /// The failures, in the order they were found.
    pub failures: Vec<Box<Failure>>,
}

impl Summary {
    /// The seeds that failed, ascending.
    pub fn failing_seeds(&self) -> Vec<u64> {
        let mut seeds: Vec<u64> = self.failures.iter().map(|f| f.seed).collect();
        seeds.sort_unstable();
        seeds
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} seeds in {:.1}s: {} operations completed, {} refused, {} with unknown outcome, {} failing seeds",
            self.seeds,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.failed,
            self.unknown,
            self.failures.len()
        )?;
        let used: Vec<String> = self.nemeses.iter().map(|(n, c)| format!("{n:?} {c}")).collect();
        write!(f, "seeds per nemesis: {}", used.join(", "))
    }
}

/// The number of threads to run seeds on: `LEDGE_SIM_THREADS`, else one per core.
pub fn threads_from_env() -> usize {
    std::env::var("LEDGE_SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Runs every seed of `seeds` (options from `options`, a fresh workload from `workload` for each)
/// on [`threads_from_env`] threads. A failure is printed as soon as it is found.
pub fn run_seeds<W, O, F>(seeds: &[u64], options: O, workload: F) -> Summary
where
    W: Workload,
    O: Fn(u64) -> WorldOptions + Sync,
    F: Fn() -> W + Sync,
{
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let summary = Mutex::new(Summary { seeds: seeds.len(), ..Summary::default() });
    let progress_every = (seeds.len() / 20).max(50);
    std::thread::scope(|scope| {
        for _ in 0..threads_from_env().min(seeds.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else { return };
                let result = run(&options(seed), &workload());
                let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(report) => {
                        s.ok += report.ok;
                        s.failed += report.failed;
                        s.unknown += report.unknown;
                        for n in report.schedule.nemeses {
                            *s.nemeses.entry(n).or_default() += 1;
                        }
                    }
                    Err(failure) => {
                        eprintln!("{failure}");
                        for n in &failure.schedule.nemeses {
                            *s.nemeses.entry(*n).or_default() += 1;
                        }
                        s.failures.push(failure);
                    }
                }
                if (i + 1).is_multiple_of(progress_every) {
                    eprintln!(
                        "... {} of {} seeds started, {:.0}s, {} failing so far",
                        i + 1,
                        seeds.len(),
                        started.elapsed().as_secs_f64(),
                        s.failures.len()
                    );
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    summary.elapsed = started.elapsed();
    summary
}
