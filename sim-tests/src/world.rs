//! A world: one or more regions of real Ledge nodes on turmoil hosts, workload clients, a
//! monitor that tracks each region's leader, and the driver that steps the simulation and plays
//! the nemesis schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap_args::node_args;
use ledge_api::{Args, Config, Environment};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::Clocks;
use crate::held::HeldLog;
use crate::nemesis::{self, Action, Nemesis, Schedule};
use crate::net::{self, SimDialer, PORT};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// The seed: it fixes the network's randomness, the nemesis schedule, the workload and
    /// each node's election timeout.
    pub seed: u64,
    /// Number of regions.
    pub regions: usize,
    /// Voters per region at bootstrap.
    pub nodes: usize,
    /// Length of the fault phase.
    pub fault_phase: Duration,
    /// Length of the heal phase that follows it.
    pub heal_phase: Duration,
    /// Nemeses to use; `None` picks one to three at random from the seed.
    pub nemeses: Option<Vec<Nemesis>>,
    /// Test-only fault in every node: linearizable reads served from local state.
    pub unsafe_local_reads: bool,
    /// Test-only fault in every node: each merge of peers' eventual states drops its first one.
    pub unsafe_drop_first_merge: bool,
    /// Simulated time per step of the simulation (turmoil's tick).
    pub tick: Duration,
}

impl WorldOptions {
    /// Defaults for `seed`: one region of three nodes, 6 s of faults, 6 s of healing.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            regions: 1,
            nodes: 3,
            fault_phase: Duration::from_secs(6),
            heal_phase: Duration::from_secs(6),
            nemeses: None,
            unsafe_local_reads: false,
            unsafe_drop_first_merge: false,
            tick: Duration::from_millis(2),
        }
    }
}

/// A temporary directory for the nodes' sled files: in `LEDGE_SIM_DATA` when set, else in
/// `/dev/shm` where it exists (real files, without a disk's flush latency: a simulated crash
/// loses a process, not the machine), else in the system's temporary directory.
fn data_dir() -> std::io::Result<tempfile::TempDir> {
    let base = match std::env::var_os("LEDGE_SIM_DATA") {
        Some(dir) => std::path::PathBuf::from(dir),
        None if std::path::Path::new("/dev/shm").is_dir() => "/dev/shm".into(),
        None => std::env::temp_dir(),
    };
    tempfile::Builder::new().prefix("ledge-sim-").tempdir_in(base)
}

/// Hosts of one region.
#[derive(Debug, Clone)]
pub struct RegionHosts {
    /// Region name.
    pub name: String,
    /// Bootstrap voters' host names.
    pub nodes: Vec<String>,
    /// The spare node that joins during a membership-change nemesis.
    pub spare: String,
}

impl RegionHosts {
    /// Every host of the region, spare included.
    pub fn all(&self) -> Vec<String> {
        let mut all = self.nodes.clone();
        all.push(self.spare.clone());
        all
    }
}

/// Leader host of each region, as the monitor last saw it.
pub type Leaders = Arc<Mutex<BTreeMap<String, String>>>;

mod clap_args {
    /// The `ledged` flags of a simulated node.
    pub fn node_args(
        region: &str,
        host: &str,
        seeds: &str,
        expect: usize,
        data: &str,
        election: (u64, u64),
        compacting: bool,
    ) -> Vec<String> {
        // Small when the lag-past-compaction nemesis plays, so that a node down for a second or
        // two is compacted past and catches up by a snapshot install.
        let (snapshot_after, log_keep) = if compacting { ("5", "2") } else { ("300", "50") };
        let mut args: Vec<String> = vec![
            "ledged".into(),
            "--region".into(),
            region.into(),
            "--data-dir".into(),
            data.into(),
            "--listen".into(),
            format!("0.0.0.0:{}", super::PORT),
            "--advertise".into(),
            format!("{host}:{}", super::PORT),
            "--join".into(),
            seeds.into(),
            "--heartbeat-ms".into(),
            "100".into(),
            "--election-timeout-ms".into(),
            format!("{}-{}", election.0, election.1),
            "--request-timeout-ms".into(),
            "1500".into(),
            "--snapshot-after".into(),
            snapshot_after.into(),
            "--log-keep".into(),
            log_keep.into(),
            "--anti-entropy-ms".into(),
            "500".into(),
            // Below the clock-skew nemesis's largest skew, so refused remote clocks happen.
            "--max-clock-drift-ms".into(),
            "3000".into(),
        ];
        if expect > 0 {
            args.push("--bootstrap-expect".into());
            args.push(expect.to_string());
        }
        args
    }
}

/// A built simulation and what the driver needs to play faults on it.
pub struct World<'a> {
    /// The turmoil simulation.
    pub sim: turmoil::Sim<'a>,
    /// The regions' hosts.
    pub regions: Vec<RegionHosts>,
    /// The fault schedule.
    pub schedule: Schedule,
    /// Current leaders, kept by the monitor.
    pub leaders: Leaders,
    /// Every host's clock skew.
    pub clocks: Clocks,
    /// What each node reported durable of the eventual keyspace.
    pub held: HeldLog,
    spares: Arc<Mutex<BTreeSet<String>>>,
    crashed: BTreeSet<String>,
    next_step: usize,
    links: Vec<(String, String)>,
    _data: tempfile::TempDir,
}

impl<'a> World<'a> {
    /// Builds the world: hosts for every node (sled data in a temp dir that survives crashes),
    /// the monitor, and the schedule. Workload clients are added by the caller.
    pub fn build(opts: &WorldOptions) -> Result<World<'a>, String> {
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let data = data_dir().map_err(|e| format!("temp dir: {e}"))?;
        let end = opts.fault_phase + opts.heal_phase;
        let mut sim = turmoil::Builder::new()
            .rng_seed(opts.seed)
            .simulation_duration(end + Duration::from_secs(30))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(5))
            .tcp_capacity(1 << 16)
            .tick_duration(opts.tick)
            .build();
        let spares: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let clocks = Clocks::default();
        let held = HeldLog::default();
        let chosen = opts.nemeses.clone().unwrap_or_else(|| nemesis::pick_nemeses(&mut rng));
        let compacting = chosen.contains(&Nemesis::LagPastCompaction);
        let mut regions = Vec::new();
        for r in 0..opts.regions {
            let name = format!("r{}", r + 1);
            let nodes: Vec<String> = (0..opts.nodes).map(|i| format!("{name}n{}", i + 1)).collect();
            let spare = format!("{name}n{}", opts.nodes + 1);
            let seeds = nodes.iter().map(|h| format!("{h}:{PORT}")).collect::<Vec<_>>().join(",");
            for (i, host) in nodes.iter().chain(std::iter::once(&spare)).enumerate() {
                // Distinct election timeouts from the seed make elections deterministic: openraft
                // draws from [min, max), and a one-millisecond range leaves it nothing to choose.
                let min = 250 + (i as u64) * 90 + rng.gen_range(0..60);
                let is_spare = host == &spare;
                let args = node_args(
                    &name,
                    host,
                    &seeds,
                    if is_spare { 0 } else { opts.nodes },
                    &data.path().join(host).display().to_string(),
                    (min, min + 1),
                    compacting,
                );
                let node_id = (r as u64 + 1) * 100 + i as u64 + 1;
                let config = Config::resolve(
                    <Args as clap::Parser>::try_parse_from(args).map_err(|e| format!("node flags: {e}"))?,
                )?;
                let unsafe_reads = opts.unsafe_local_reads;
                let drop_merges = opts.unsafe_drop_first_merge;
                let spares = spares.clone();
                let host_name = host.clone();
                let clock = clocks.clock(host);
                let durable = held.listener();
                sim.host(host.as_str(), move || {
                    let config = config.clone();
                    let durable = durable.clone();
                    let spares = spares.clone();
                    let host_name = host_name.clone();
                    let clock = clock.clone();
                    async move {
                        if is_spare {
                            // A spare waits until a membership-change nemesis starts it.
                            while !spares.lock().map(|s| s.contains(&host_name)).unwrap_or(false) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                        // After a crash, sled's own threads may still hold the data dir's
                        // lock for a moment (turmoil stops the host's tasks, not OS threads):
                        // like a supervisor restarting a process, try again shortly.
                        let mut attempts = 0;
                        loop {
                            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
                            let env = Environment {
                                dialer: Arc::new(SimDialer::default()),
                                new_node_id: Box::new(move || node_id),
                                flush: ledge_store::FlushPolicy::Inline,
                                unsafe_local_reads: unsafe_reads,
                                unsafe_drop_first_merge: drop_merges,
                                durable: Some(durable.clone()),
                            };
                            let incoming = net::incoming(listener);
                            let served = ledge_api::serve_with_clock(
                                config.clone(),
                                env,
                                clock.clone(),
                                incoming,
                                std::future::pending(),
                            )
                            .await;
                            match served {
                                Ok(()) => break,
                                Err(e) if attempts < 200 && format!("{e:#}").contains("could not acquire lock") => {
                                    attempts += 1;
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                Err(e) => return Err(format!("{host_name}: {e:#}").into()),
                            }
                        }
                        Ok(())
                    }
                });
            }
            regions.push(RegionHosts { name, nodes, spare });
        }
        let leaders: Leaders = Arc::default();
        spawn_monitor(&mut sim, &regions, leaders.clone(), end);

        let mut schedule = Schedule { nemeses: chosen.clone(), steps: Vec::new() };
        for region in &regions {
            let s = nemesis::schedule(&mut rng, &chosen, &region.nodes, &region.spare, opts.fault_phase);
            schedule.steps.extend(s.steps);
        }
        schedule.steps.sort_by_key(|s| s.at);
        schedule.steps.dedup_by(|a, b| a.at == b.at && a.action == Action::HealAll && b.action == Action::HealAll);
        Ok(World {
            sim,
            regions,
            schedule,
            leaders,
            clocks,
            held,
            spares,
            crashed: BTreeSet::new(),
            next_step: 0,
            links: Vec::new(),
            _data: data,
        })
    }

    /// Runs the simulation to the end, playing the schedule. Returns an error naming the host
    /// that failed (a node exiting with an error counts).
    pub fn run(&mut self) -> Result<(), String> {
        let mut next_report = Duration::ZERO;
        let started = std::time::Instant::now();
        loop {
            if self.sim.elapsed() >= next_report {
                tracing::debug!(sim = ?self.sim.elapsed(), real = ?started.elapsed(), "simulation progress");
                next_report += Duration::from_secs(1);
            }
            self.play_due_steps();
            match self.sim.step() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(format!("simulation failed at {:?}: {e}", self.sim.elapsed())),
            }
        }
    }

    fn play_due_steps(&mut self) {
        let now = self.sim.elapsed();
        while self.next_step < self.schedule.steps.len() && self.schedule.steps[self.next_step].at <= now {
            let action = self.schedule.steps[self.next_step].action.clone();
            self.next_step += 1;
            self.apply(action);
        }
    }

    fn cut(&mut self, a: &[String], b: &[String]) {
        for x in a {
            for y in b {
                if x != y {
                    self.sim.partition(x.as_str(), y.as_str());
                    self.links.push((x.clone(), y.clone()));
                }
            }
        }
    }

    fn apply(&mut self, action: Action) {
        tracing::info!(at = ?self.sim.elapsed(), ?action, "nemesis");
        match action {
            Action::Partition(a, b) => self.cut(&a, &b),
            Action::PartitionOneway(a, b) => {
                self.sim.partition_oneway(a.as_str(), b.as_str());
                self.links.push((a, b));
            }
            Action::IsolateLeader(region) => {
                let leader =
                    self.leaders.lock().ok().and_then(|l| l.values().find(|host| region.contains(host)).cloned());
                if let Some(leader) = leader {
                    let rest: Vec<String> = region.iter().filter(|h| **h != leader).cloned().collect();
                    self.cut(std::slice::from_ref(&leader), &rest);
                }
            }
            Action::Crash(host) => {
                if self.crashed.insert(host.clone()) {
                    self.sim.crash(host.as_str());
                }
            }
            Action::Restart(host) => {
                if self.crashed.remove(&host) {
                    self.sim.bounce(host.as_str());
                }
            }
            // One follower down at a time, so the rest keep a quorum and go on writing.
            Action::CrashFollower(region) if region.iter().any(|h| self.crashed.contains(h)) => {}
            Action::CrashFollower(region) => {
                let leader = self.leaders.lock().ok().and_then(|l| l.values().find(|h| region.contains(h)).cloned());
                let follower =
                    region.iter().find(|h| Some(*h) != leader.as_ref() && !self.crashed.contains(*h)).cloned();
                if let Some(host) = follower {
                    self.crashed.insert(host.clone());
                    self.sim.crash(host.as_str());
                }
            }
            Action::RestartCrashed => {
                for host in std::mem::take(&mut self.crashed) {
                    self.sim.bounce(host.as_str());
                }
            }
            Action::Bounce(host) => {
                if !self.crashed.contains(&host) {
                    self.sim.bounce(host.as_str());
                }
            }
            Action::Loss(a, b, rate) => {
                self.sim.set_link_fail_rate(a.as_str(), b.as_str(), rate);
                self.links.push((a, b));
            }
            Action::Latency(a, b, d) => {
                self.sim.set_link_latency(a.as_str(), b.as_str(), d);
                self.links.push((a, b));
            }
            Action::Skew(host, ms) => self.clocks.skew(&host, ms),
            Action::StartSpare(host) => {
                if let Ok(mut s) = self.spares.lock() {
                    s.insert(host);
                }
            }
            Action::HealAll => {
                for (a, b) in std::mem::take(&mut self.links) {
                    self.sim.repair(a.as_str(), b.as_str());
                    self.sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
                    self.sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(1));
                }
                for host in std::mem::take(&mut self.crashed) {
                    self.sim.bounce(host.as_str());
                }
                self.clocks.reset();
            }
        }
    }
}

/// Polls every node's status and records each region's leader host.
fn spawn_monitor(sim: &mut turmoil::Sim<'_>, regions: &[RegionHosts], leaders: Leaders, until: Duration) {
    let regions = regions.to_vec();
    sim.client("monitor", async move {
        let dialer = SimDialer::default();
        while turmoil::elapsed() < until {
            for region in &regions {
                for host in &region.all() {
                    let Ok(channel) = ledge_consensus::Dialer::channel(&dialer, &format!("{host}:{PORT}")) else {
                        continue;
                    };
                    let mut admin = ledge_proto::v1::admin_client::AdminClient::new(channel);
                    let mut req = tonic::Request::new(ledge_proto::v1::StatusRequest {});
                    req.set_timeout(Duration::from_millis(200));
                    let reply = tokio::time::timeout(Duration::from_millis(250), admin.status(req)).await;
                    if let Ok(Ok(status)) = reply {
                        let status = status.into_inner();
                        if status.raft_state == "leader" {
                            if let Ok(mut l) = leaders.lock() {
                                l.insert(region.name.clone(), host.clone());
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    });
}
