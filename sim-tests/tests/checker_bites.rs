//! The checker must catch a real bug: with linearizable reads served from local state (no
//! leadership check), an isolated old leader returns stale values, and the harness must fail
//! with a readable counterexample.

use ledge_sim_tests::{run, Nemesis, RegisterWorkload, WorldOptions};

#[test]
fn stale_local_reads_are_caught() {
    if let Ok(filter) = std::env::var("LEDGE_SIM_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    // Small histories: proving a history is NOT linearizable means searching every order of its
    // concurrent operations, which grows fast with their number.
    let workload = RegisterWorkload { clients: 2, keys: 1, ..RegisterWorkload::default() };
    for seed in 1..=6u64 {
        let mut opts = WorldOptions::new(seed);
        opts.unsafe_local_reads = true;
        opts.fault_phase = std::time::Duration::from_secs(5);
        opts.heal_phase = std::time::Duration::from_secs(2);
        opts.nemeses = Some(vec![Nemesis::IsolateLeader, Nemesis::PartitionHalves]);
        if let Err(failure) = run(&opts, &workload) {
            let text = failure.to_string();
            eprintln!("{text}");
            assert!(text.contains("not linearizable"), "the failure is the checker's: {text}");
            assert!(text.contains(&format!("LEDGE_SIM_SEED={seed}")), "it names the seed");
            assert!(text.contains("history:"), "it shows the history");
            return;
        }
    }
    panic!("no seed exposed stale local reads: the linearizability checker does not bite");
}
