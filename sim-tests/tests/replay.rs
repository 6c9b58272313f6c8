//! A seed replays exactly: two runs of one seed record the same history, operation for operation,
//! with the same results at the same simulated times.

use ledge_sim_tests::{exact_replay, run, EventualWorkload, Mixed, Nemesis, RegisterWorkload, WorldOptions};

fn digest(opts: &WorldOptions) -> u64 {
    let workload = Mixed(vec![Box::new(RegisterWorkload::default()), Box::new(EventualWorkload::default())]);
    match run(opts, &workload) {
        Ok(report) => report.digest,
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn a_seed_replays_the_same_history() {
    assert!(
        exact_replay(),
        "built without --cfg tokio_unstable (a RUSTFLAGS variable replaces the one in .cargo/config.toml): \
         add `--cfg tokio_unstable` to RUSTFLAGS for exact replays"
    );
    // Crashes and bounces (sled files reopened), a join mid-fault and skewed clocks: the faults
    // with the most for real threads and real files to get out of step.
    let mut opts = WorldOptions::new(353);
    opts.nemeses = Some(vec![Nemesis::CrashRestart, Nemesis::Bounce, Nemesis::MembershipChange, Nemesis::ClockSkew]);
    let first = digest(&opts);
    let second = digest(&opts);
    assert_eq!(first, second, "seed 353 recorded a different history on its replay");
    opts.seed = 354;
    assert_ne!(digest(&opts), first, "another seed records another history");
}
