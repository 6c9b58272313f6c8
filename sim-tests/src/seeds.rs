//! Running many seeds, with a summary of what ran, which nemeses were exercised, and which seeds
//! failed.
//!
//! Seeds run in parallel in separate worker processes, not threads: sled keeps process-wide
//! state (a global concurrency-control lock and I/O thread pool), and two simulated worlds
//! sharing one process can deadlock each other through it. A worker is the same test binary
//! started again with `LEDGE_SIM_WORKER=k/n`: it runs every n-th seed starting at the k-th, one
//! after another, and writes its counts to the file named by `LEDGE_SIM_REPORT`.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::nemesis::Nemesis;
use crate::run::run;
use crate::workload::Workload;
use crate::world::WorldOptions;

const WORKER_ENV: &str = "LEDGE_SIM_WORKER";
const REPORT_ENV: &str = "LEDGE_SIM_REPORT";

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
    pub nemeses: BTreeMap<String, usize>,
    /// Seeds that failed (each failure was printed when found).
    pub failing: Vec<u64>,
    /// Worker processes that ended without a report (a hang the watchdog stopped, a crash).
    pub broken_workers: Vec<String>,
}

impl Summary {
    /// Whether every seed passed and every worker reported.
    pub fn passed(&self) -> bool {
        self.failing.is_empty() && self.broken_workers.is_empty()
    }

    fn merge(&mut self, other: Summary) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.unknown += other.unknown;
        for (n, c) in other.nemeses {
            *self.nemeses.entry(n).or_default() += c;
        }
        self.failing.extend(other.failing);
        self.failing.sort_unstable();
    }

    fn encode(&self) -> String {
        let mut out = format!("counts {} {} {}\n", self.ok, self.failed, self.unknown);
        for (n, c) in &self.nemeses {
            let _ = writeln!(out, "nemesis {n} {c}");
        }
        for s in &self.failing {
            let _ = writeln!(out, "failing {s}");
        }
        out
    }

    fn decode(text: &str) -> Option<Summary> {
        let mut s = Summary::default();
        let mut counted = false;
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["counts", ok, failed, unknown] => {
                    (s.ok, s.failed, s.unknown) = (ok.parse().ok()?, failed.parse().ok()?, unknown.parse().ok()?);
                    counted = true;
                }
                ["nemesis", n, c] => {
                    s.nemeses.insert(n.to_string(), c.parse().ok()?);
                }
                ["failing", seed] => s.failing.push(seed.parse().ok()?),
                _ => return None,
            }
        }
        counted.then_some(s)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} seeds in {:.1}s: {} operations completed, {} refused, {} with unknown outcome; failing seeds: {:?}",
            self.seeds,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.failed,
            self.unknown,
            self.failing
        )?;
        for w in &self.broken_workers {
            writeln!(f, "worker without a report: {w}")?;
        }
        for seed in &self.failing {
            writeln!(f, "replay: LEDGE_SIM_SEED={seed} cargo test -p ledge-sim-tests --test seeds")?;
        }
        let used: Vec<String> = self.nemeses.iter().map(|(n, c)| format!("{n} {c}")).collect();
        write!(f, "seeds per nemesis: {}", used.join(", "))
    }
}

/// The number of worker processes: `LEDGE_SIM_THREADS`, else one per core.
pub fn threads_from_env() -> usize {
    std::env::var("LEDGE_SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Runs every seed of `seeds` (options from `options`, a fresh workload from `workload` for
/// each), in [`threads_from_env`] worker processes when that is more than one. Must be called
/// from a test (workers re-run the calling test by its name). A failure is printed as soon as it
/// is found; per-seed lines are printed when `LEDGE_SIM_PROGRESS` is set.
pub fn run_seeds<W, O, F>(seeds: &[u64], options: O, workload: F) -> Summary
where
    W: Workload,
    O: Fn(u64) -> WorldOptions,
    F: Fn() -> W,
{
    let started = Instant::now();
    if !crate::exact_replay() && seeds.len() == 1 && worker_slot().is_none() {
        eprintln!(
            "built without --cfg tokio_unstable (is RUSTFLAGS set?): this replay can differ from the run it repeats"
        );
    }
    let workers = threads_from_env().min(seeds.len().max(1));
    if let Some((k, n)) = worker_slot() {
        let mine: Vec<u64> = seeds.iter().copied().skip(k).step_by(n).collect();
        let summary = run_here(&mine, &options, &workload);
        if let Some(path) = std::env::var_os(REPORT_ENV) {
            if let Err(e) = std::fs::write(&path, summary.encode()) {
                eprintln!("worker {k}/{n}: cannot write its report: {e}");
            }
        }
        return Summary { elapsed: started.elapsed(), ..summary };
    }
    // Workers re-run the calling test by its name, which libtest gives the test's thread.
    let named = std::thread::current().name().is_some_and(|n| n != "main");
    let mut summary =
        if workers > 1 && named { run_in_workers(seeds.len(), workers) } else { run_here(seeds, &options, &workload) };
    summary.seeds = seeds.len();
    summary.elapsed = started.elapsed();
    summary
}

/// `LEDGE_SIM_WORKER=k/n` in a worker process.
fn worker_slot() -> Option<(usize, usize)> {
    let v = std::env::var(WORKER_ENV).ok()?;
    let (k, n) = v.split_once('/')?;
    let (k, n) = (k.parse().ok()?, n.parse().ok()?);
    (k < n).then_some((k, n))
}

/// Starts `workers` copies of the calling test with a share of the seeds each and merges their
/// reports.
fn run_in_workers(seeds: usize, workers: usize) -> Summary {
    let mut summary = Summary { seeds, ..Summary::default() };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            summary.broken_workers.push(format!("cannot find the test binary: {e}"));
            return summary;
        }
    };
    let test = std::thread::current().name().unwrap_or_default().to_string();
    let reports = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            summary.broken_workers.push(format!("no directory for reports: {e}"));
            return summary;
        }
    };
    let mut children = Vec::new();
    for k in 0..workers {
        let report = reports.path().join(format!("worker-{k}"));
        let mut cmd = Command::new(&exe);
        cmd.args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, format!("{k}/{workers}"))
            .env(REPORT_ENV, &report);
        match cmd.spawn() {
            Ok(child) => children.push((k, child, report)),
            Err(e) => summary.broken_workers.push(format!("worker {k}: cannot start: {e}")),
        }
    }
    for (k, mut child, report) in children {
        let status = child.wait();
        match std::fs::read_to_string(&report).ok().as_deref().and_then(Summary::decode) {
            Some(part) => summary.merge(part),
            None => summary.broken_workers.push(format!("worker {k}/{workers} ended with {status:?}")),
        }
    }
    summary
}

/// Runs `seeds` one after another in this process, under a watchdog.
fn run_here<W: Workload>(seeds: &[u64], options: &dyn Fn(u64) -> WorldOptions, workload: &dyn Fn() -> W) -> Summary {
    let mut summary = Summary { seeds: seeds.len(), ..Summary::default() };
    let progress = std::env::var_os("LEDGE_SIM_PROGRESS").is_some();
    let current = Arc::new(std::sync::Mutex::new(None::<(u64, Instant)>));
    let finished = Arc::new(AtomicBool::new(false));
    let dog = {
        let (current, finished) = (current.clone(), finished.clone());
        std::thread::spawn(move || watchdog(&current, &finished))
    };
    for &seed in seeds {
        let seed_started = Instant::now();
        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some((seed, seed_started));
        let result = run(&options(seed), &workload());
        let took = seed_started.elapsed().as_secs_f64();
        match result {
            Ok(report) => {
                if progress || seeds.len() == 1 {
                    eprintln!(
                        "seed {seed} ok in {took:.1}s: {} operations, {:?}, history {:016x}",
                        report.ok, report.schedule.nemeses, report.digest
                    );
                }
                summary.ok += report.ok;
                summary.failed += report.failed;
                summary.unknown += report.unknown;
                count_nemeses(&mut summary, &report.schedule.nemeses);
            }
            Err(failure) => {
                eprintln!("{failure}");
                count_nemeses(&mut summary, &failure.schedule.nemeses);
                summary.failing.push(seed);
            }
        }
    }
    finished.store(true, Ordering::SeqCst);
    let _ = dog.join();
    summary
}

fn count_nemeses(summary: &mut Summary, nemeses: &[Nemesis]) {
    for n in nemeses {
        *summary.nemeses.entry(format!("{n:?}")).or_default() += 1;
    }
}

/// Ends the process when a seed has run longer than `LEDGE_SIM_SEED_TIMEOUT` seconds of real time
/// (default 300): a simulated run is bounded in simulated time, so only something blocking a
/// thread outside the simulation can make it hang, and a hung CI run would tell nothing.
fn watchdog(current: &std::sync::Mutex<Option<(u64, Instant)>>, finished: &AtomicBool) {
    let limit =
        Duration::from_secs(std::env::var("LEDGE_SIM_SEED_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(300));
    while !finished.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let current = *current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seed, started)) = current.filter(|(_, started)| started.elapsed() > limit) {
            eprintln!(
                "simulation hung: seed {seed} has run {:.0}s of real time (replay with LEDGE_SIM_SEED={seed})",
                started.elapsed().as_secs_f64()
            );
            // With LEDGE_SIM_HANG_DUMP=FILE, every thread's stack goes to FILE.PID (needs gdb).
            if let Some(path) = std::env::var_os("LEDGE_SIM_HANG_DUMP") {
                let pid = std::process::id();
                let out = std::fs::File::create(format!("{}.{pid}", path.to_string_lossy()));
                if let Ok(out) = out {
                    let dumped = Command::new("gdb")
                        .args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 50"])
                        .stdout(out)
                        .status();
                    eprintln!("thread stacks of the hung process: {dumped:?}");
                }
            }
            std::process::exit(101);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let mut s = Summary { ok: 5, failed: 2, unknown: 1, failing: vec![7, 9], ..Summary::default() };
        s.nemeses.insert("Bounce".into(), 3);
        let back = Summary::decode(&s.encode()).expect("decodes");
        assert_eq!((back.ok, back.failed, back.unknown), (5, 2, 1));
        assert_eq!(back.failing, vec![7, 9]);
        assert_eq!(back.nemeses.get("Bounce"), Some(&3));
        assert!(Summary::decode("garbage").is_none());
    }
}
