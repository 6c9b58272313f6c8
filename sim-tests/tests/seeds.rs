//! Many seeds of the register workload under random nemeses. `LEDGE_SIM_SEEDS=N` runs more,
//! `LEDGE_SIM_SEED=S` replays one.

use ledge_sim_tests::{run, seeds_from_env, RegisterWorkload, WorldOptions};

#[test]
fn strong_keyspaces_stay_linearizable_under_nemeses() {
    if let Ok(filter) = std::env::var("LEDGE_SIM_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let seeds = seeds_from_env(3);
    let workload = RegisterWorkload::default();
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    let (mut ok, mut unknown) = (0, 0);
    for seed in &seeds {
        match run(&WorldOptions::new(*seed), &workload) {
            Ok(report) => {
                ok += report.ok;
                unknown += report.unknown;
            }
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(failure.seed);
            }
        }
    }
    eprintln!(
        "{} seeds in {:.1}s: {ok} operations completed, {unknown} with unknown outcome",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}
