//! Nemeses: the faults a run injects, and the schedule a seed picks for them.
//!
//! Each nemesis turns into timed actions on the simulation: network partitions (halves, leader
//! isolation, a bridge node that sees both sides, one-way), crashes with later restarts, bounces,
//! message loss and latency spikes on links, a membership change (a spare node joining while
//! faults are active), clock skew (a node's physical clock ahead or behind, then stepped back),
//! and a follower down long enough for the leader to compact its log past it, so that it catches
//! up by a snapshot install while eventual writes go on. Every schedule ends in a heal phase
//! that repairs every link, restores loss and latency, and restarts every crashed node, after
//! which liveness is checked.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Nemesis {
    /// Split a region's nodes into two halves that cannot talk.
    PartitionHalves,
    /// Cut the current leader off from every other node.
    IsolateLeader,
    /// Three groups where the middle node sees both sides but the sides do not see each other.
    Bridge,
    /// One node can send to another but not receive from it.
    OneWayPartition,
    /// Crash a node (its process dies) and restart it later from its data dir.
    CrashRestart,
    /// Crash and immediately restart a node.
    Bounce,
    /// Drop a fraction of the messages on some links.
    MessageLoss,
    /// Slow some links down sharply.
    LatencySpike,
    /// A spare node joins the region while faults are active (membership change).
    MembershipChange,
    /// A node's physical clock runs ahead or behind (up to 6 s either way), then jumps back.
    ClockSkew,
    /// A follower is down for 2.5–4.5 s: with the simulation's small snapshot threshold the
    /// leader compacts its log past it, and the restarted node catches up by a snapshot install.
    /// (Down rather than cut off: openraft does not purge log entries that a retried append to
    /// an unreachable follower still holds in flight.)
    LagPastCompaction,
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Nemesis; 11] = [
        Nemesis::PartitionHalves,
        Nemesis::IsolateLeader,
        Nemesis::Bridge,
        Nemesis::OneWayPartition,
        Nemesis::CrashRestart,
        Nemesis::Bounce,
        Nemesis::MessageLoss,
        Nemesis::LatencySpike,
        Nemesis::MembershipChange,
        Nemesis::ClockSkew,
        Nemesis::LagPastCompaction,
    ];
}

/// One timed step of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Cut every link between the two groups.
    Partition(Vec<String>, Vec<String>),
    /// Cut messages from the first host to the second only.
    PartitionOneway(String, String),
    /// Cut the current leader (found at run time) from the rest of `region`.
    IsolateLeader(Vec<String>),
    /// Crash a host.
    Crash(String),
    /// Crash a host of `region` that is not its leader (found at run time), unless one of its
    /// hosts is down already.
    CrashFollower(Vec<String>),
    /// Restart every crashed host.
    RestartCrashed,
    /// Restart a crashed host.
    Restart(String),
    /// Crash and restart a host.
    Bounce(String),
    /// Drop this fraction of messages between two hosts.
    Loss(String, String, f64),
    /// Delay messages between two hosts by this much.
    Latency(String, String, Duration),
    /// Start the region's spare node, which joins the running region.
    StartSpare(String),
    /// Set a host's clock this many milliseconds ahead of true time (negative: behind; 0: back
    /// to true time).
    Skew(String, i64),
    /// Repair everything and restart every crashed host.
    HealAll,
}

/// A timed action.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When, in simulated time since the start.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// The faults of one run.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// The nemeses chosen.
    pub nemeses: Vec<Nemesis>,
    /// Their steps, in time order, ending with `HealAll`.
    pub steps: Vec<Step>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nemeses: {:?}", self.nemeses)?;
        for s in &self.steps {
            writeln!(f, "  {:>7.3}s  {:?}", s.at.as_secs_f64(), s.action)?;
        }
        Ok(())
    }
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo..hi))
}

/// Builds the schedule for `nemeses` over a region's `nodes` (plus its `spare`), with faults in
/// `[1 s, fault_phase)` and the heal at `fault_phase`.
pub fn schedule(
    rng: &mut StdRng,
    nemeses: &[Nemesis],
    nodes: &[String],
    spare: &str,
    fault_phase: Duration,
) -> Schedule {
    let mut steps = Vec::new();
    let end = fault_phase.as_millis() as u64;
    let pick = |rng: &mut StdRng| nodes[rng.gen_range(0..nodes.len())].clone();
    for &nemesis in nemeses {
        // Each nemesis strikes one to three times.
        for _ in 0..rng.gen_range(1..=3) {
            let start = ms(rng, 1_000, end.saturating_sub(1_500).max(1_001));
            let stop = (start + ms(rng, 500, 4_000)).min(Duration::from_millis(end.saturating_sub(200)));
            match nemesis {
                Nemesis::PartitionHalves => {
                    let mut shuffled = nodes.to_vec();
                    shuffled.shuffle(rng);
                    let cut = rng.gen_range(1..shuffled.len().max(2));
                    let (a, b) = shuffled.split_at(cut.min(shuffled.len() - 1));
                    steps.push(Step { at: start, action: Action::Partition(a.to_vec(), b.to_vec()) });
                    steps.push(Step { at: stop, action: Action::HealAll });
                }
                Nemesis::IsolateLeader => {
                    steps.push(Step { at: start, action: Action::IsolateLeader(nodes.to_vec()) });
                    steps.push(Step { at: stop, action: Action::HealAll });
                }
                Nemesis::Bridge if nodes.len() >= 3 => {
                    let mut shuffled = nodes.to_vec();
                    shuffled.shuffle(rng);
                    let (left, rest) = shuffled.split_at(1);
                    let right: Vec<String> = rest.iter().skip(1).cloned().collect();
                    steps.push(Step { at: start, action: Action::Partition(left.to_vec(), right) });
                    steps.push(Step { at: stop, action: Action::HealAll });
                }
                Nemesis::Bridge => {}
                Nemesis::OneWayPartition => {
                    let (a, b) = (pick(rng), pick(rng));
                    if a != b {
                        steps.push(Step { at: start, action: Action::PartitionOneway(a, b) });
                        steps.push(Step { at: stop, action: Action::HealAll });
                    }
                }
                Nemesis::CrashRestart => {
                    let host = pick(rng);
                    steps.push(Step { at: start, action: Action::Crash(host.clone()) });
                    steps.push(Step { at: stop, action: Action::Restart(host) });
                }
                Nemesis::Bounce => steps.push(Step { at: start, action: Action::Bounce(pick(rng)) }),
                Nemesis::MessageLoss => {
                    let (a, b) = (pick(rng), pick(rng));
                    if a != b {
                        let rate = rng.gen_range(0.05..0.4);
                        steps.push(Step { at: start, action: Action::Loss(a, b, rate) });
                        steps.push(Step { at: stop, action: Action::HealAll });
                    }
                }
                Nemesis::LatencySpike => {
                    let (a, b) = (pick(rng), pick(rng));
                    if a != b {
                        steps.push(Step { at: start, action: Action::Latency(a, b, ms(rng, 50, 600)) });
                        steps.push(Step { at: stop, action: Action::HealAll });
                    }
                }
                Nemesis::ClockSkew => {
                    let host = pick(rng);
                    let skew = rng.gen_range(100..6_000) * if rng.gen_bool(0.5) { 1 } else { -1 };
                    steps.push(Step { at: start, action: Action::Skew(host.clone(), skew) });
                    steps.push(Step { at: stop, action: Action::Skew(host, 0) });
                }
                Nemesis::LagPastCompaction => {
                    let stop = (start + ms(rng, 2_500, 4_500)).min(Duration::from_millis(end.saturating_sub(200)));
                    steps.push(Step { at: start, action: Action::CrashFollower(nodes.to_vec()) });
                    steps.push(Step { at: stop, action: Action::RestartCrashed });
                }
                Nemesis::MembershipChange => {
                    if !steps.iter().any(|s| matches!(s.action, Action::StartSpare(_))) {
                        steps.push(Step { at: start, action: Action::StartSpare(spare.to_string()) });
                    }
                }
            }
        }
    }
    steps.push(Step { at: fault_phase, action: Action::HealAll });
    steps.sort_by_key(|s| s.at);
    Schedule { nemeses: nemeses.to_vec(), steps }
}

/// A random non-empty set of one to three nemeses.
pub fn pick_nemeses(rng: &mut StdRng) -> Vec<Nemesis> {
    let mut all = Nemesis::ALL.to_vec();
    all.shuffle(rng);
    let n = rng.gen_range(1..=3);
    let mut chosen: Vec<Nemesis> = all.into_iter().take(n).collect();
    chosen.sort();
    chosen
}
