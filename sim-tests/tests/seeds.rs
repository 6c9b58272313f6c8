//! Many seeds of the register and eventual workloads together under random nemeses (200 by
//! default). `LEDGE_SIM_SEEDS=N` runs more, `LEDGE_SIM_SEED=S` replays one, `LEDGE_SIM_THREADS=T`
//! sets how many worker processes run seeds at once (default: one per core), and
//! `LEDGE_SIM_EXTRA_SEEDS=M` with `LEDGE_SIM_EXTRA_FROM=TEXT` adds `M` seeds drawn from `TEXT`
//! (CI: 100 from the commit hash).

use ledge_sim_tests::{run_seeds, seeds_from_env, EventualWorkload, Mixed, RegisterWorkload, WorldOptions};

#[test]
fn strong_and_eventual_keyspaces_hold_up_under_nemeses() {
    if let Ok(filter) = std::env::var("LEDGE_SIM_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let seeds = seeds_from_env(200);
    let summary = run_seeds(&seeds, WorldOptions::new, || {
        Mixed(vec![Box::new(RegisterWorkload::default()), Box::new(EventualWorkload::default())])
    });
    eprintln!("{summary}");
    assert!(summary.passed(), "failing seeds: {:?} {:?}", summary.failing, summary.broken_workers);
}

#[test]
fn extra_seeds_follow_the_text_and_miss_the_fixed_range() {
    let a = ledge_sim_tests::extra_seeds("3f2a9c", 100);
    assert_eq!(a.len(), 100);
    assert_eq!(a, ledge_sim_tests::extra_seeds("3f2a9c", 100));
    assert_ne!(a, ledge_sim_tests::extra_seeds("3f2a9d", 100));
    assert!(a.iter().all(|s| *s > 1_000));
}
