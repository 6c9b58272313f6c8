//! Simulated physical clocks for the nodes' hybrid logical clocks: simulated time since the start
//! of the run plus a per-host skew that the clock-skew nemesis moves (forwards, backwards, and back
//! to zero at the heal, which makes a fast clock jump back).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use ledge_crdt::Clock;

/// The wall-clock reading at the start of every simulated run (2027-01-15), fixed so that runs
/// replay exactly.
pub const EPOCH_MS: u64 = 1_800_000_000_000;

/// The skews of every host's clock, shared by the driver (which moves them) and the nodes.
#[derive(Debug, Clone, Default)]
pub struct Clocks(Arc<Mutex<BTreeMap<String, i64>>>);

impl Clocks {
    /// The clock a node on `host` reads.
    pub fn clock(&self, host: &str) -> Arc<dyn Clock> {
        Arc::new(SimClock { host: host.to_string(), skews: self.clone() })
    }

    /// Sets `host`'s clock `skew_ms` milliseconds ahead of simulated time (negative: behind).
    pub fn skew(&self, host: &str, skew_ms: i64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(host.to_string(), skew_ms);
    }

    /// Puts every clock back on simulated time.
    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn skew_of(&self, host: &str) -> i64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(host).copied().unwrap_or(0)
    }
}

/// One host's clock.
#[derive(Debug)]
struct SimClock {
    host: String,
    skews: Clocks,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        EPOCH_MS.saturating_add(elapsed).saturating_add_signed(self.skews.skew_of(&self.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skews_move_one_host_only() {
        let clocks = Clocks::default();
        let a = clocks.clock("a");
        let b = clocks.clock("b");
        clocks.skew("a", 5_000);
        assert_eq!(a.now_ms(), EPOCH_MS + 5_000);
        assert_eq!(b.now_ms(), EPOCH_MS);
        clocks.skew("b", -2_000);
        assert_eq!(b.now_ms(), EPOCH_MS - 2_000);
        clocks.reset();
        assert_eq!(a.now_ms(), EPOCH_MS);
    }
}
