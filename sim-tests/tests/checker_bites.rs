//! The checkers must catch real bugs, switched on deliberately in every node, and fail the run
//! with a readable counterexample.

use std::time::Duration;

use ledge_sim_tests::{run, EventualWorkload, Nemesis, RegisterWorkload, WorldOptions};

fn init_logs() {
    if let Ok(filter) = std::env::var("LEDGE_SIM_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// Linearizable reads served from local state (no leadership check): an isolated old leader
/// returns stale values, and the linearizability checker must say so.
#[test]
fn stale_local_reads_are_caught() {
    init_logs();
    // Small histories: proving a history is NOT linearizable means searching every order of its
    // concurrent operations, which grows fast with their number.
    let workload = RegisterWorkload { clients: 2, keys: 1, ..RegisterWorkload::default() };
    for seed in 1..=6u64 {
        let mut opts = WorldOptions::new(seed);
        opts.unsafe_local_reads = true;
        opts.fault_phase = Duration::from_secs(5);
        opts.heal_phase = Duration::from_secs(2);
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

/// Every merge of a peer's eventual states drops its first state (pushes and anti-entropy
/// repairs alike): replicas stay apart, and the convergence checker must say so.
#[test]
fn lost_repairs_are_caught() {
    init_logs();
    let workload = EventualWorkload { clients: 2, ..EventualWorkload::default() };
    for seed in 1..=4u64 {
        let mut opts = WorldOptions::new(seed);
        opts.unsafe_drop_first_merge = true;
        opts.fault_phase = Duration::from_secs(4);
        opts.heal_phase = Duration::from_secs(3);
        opts.nemeses = Some(vec![Nemesis::PartitionHalves]);
        if let Err(failure) = run(&opts, &workload) {
            let text = failure.to_string();
            eprintln!("{text}");
            assert!(text.contains("did not converge") || text.contains("lost"), "the failure is the checker's: {text}");
            assert!(text.contains(&format!("LEDGE_SIM_SEED={seed}")), "it names the seed");
            assert!(text.contains("final on r1n1"), "it shows every node's final state");
            return;
        }
    }
    panic!("no seed exposed lost repairs: the convergence checker does not bite");
}
