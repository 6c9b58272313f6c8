//! Exactly-once writes: a bounded table of recent results per client.
//!
//! A client library gives each write a [`RequestId`] (a random client id and a sequence number)
//! and reuses it when it retries. The state machine remembers the [`Outcome`] of the most recent
//! writes of each client; a retry of a write it remembers gets the first outcome back instead of
//! being applied again. A retry that is older than anything remembered for its client cannot be
//! told apart from a write that never arrived, so it is refused with [`Error::Expired`] (the
//! client then reports an unknown outcome) rather than applied a second time.
//!
//! The table is replicated state: it changes only in `apply`, in the same transaction as the
//! data, and travels in snapshots, so every replica answers a retry the same way. Its size is
//! bounded by [`MAX_RESULTS_PER_CLIENT`] and [`MAX_RESULTS`]; when the whole table is full the
//! client that wrote least recently is forgotten (a retry from it would be applied again, like a
//! write without an id).
//!
//! Stored in the `sm/sessions` tree: key `client ‖ seq` (big-endian) → encoded [`Outcome`], and
//! `client ‖ 0` → the client's floor (sequence numbers below it are expired).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::command::{Outcome, RequestId};
use crate::error::{decode, encode};
use crate::Error;

/// Results remembered per client: at least as many as a client has writes in flight.
pub const MAX_RESULTS_PER_CLIENT: usize = 1024;
/// Results remembered in all.
pub const MAX_RESULTS: usize = 65_536;

/// What the table knows about a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never applied (or forgotten with its client): apply it.
    New,
    /// Applied before, with this outcome.
    Done(Outcome),
    /// Older than every remembered result of its client: the outcome cannot be told.
    Expired,
}

#[derive(Debug, Default, Clone)]
struct Client {
    /// Sequence numbers below this were forgotten.
    floor: u64,
    results: BTreeMap<u64, Outcome>,
    /// Revision of the client's latest write, for least-recently-written eviction.
    last: u64,
}

/// A change to the stored table, written in the apply transaction.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// The in-memory table, mirrored in the `sm/sessions` tree.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sessions {
    clients: HashMap<u64, Client>,
    by_age: BTreeSet<(u64, u64)>,
    results: usize,
}

fn key(client: u64, seq: u64) -> Vec<u8> {
    crate::keycode::encode_u64_pair(client, seq).to_vec()
}

impl Sessions {
    /// Rebuilds the table from the stored tree.
    pub(crate) fn load(tree: &sled::Tree) -> Result<Self, Error> {
        let mut s = Sessions::default();
        for item in tree.iter() {
            let (k, v) = item?;
            let Ok(bytes) = <[u8; 16]>::try_from(k.as_ref()) else {
                return Err(Error::Corrupt(format!("session key of {} bytes", k.len())));
            };
            let (client, seq) = crate::keycode::split_u64_pair(bytes);
            let entry = s.clients.entry(client).or_default();
            if seq == 0 {
                entry.floor = decode(&v)?;
            } else {
                let outcome: Outcome = decode(&v)?;
                entry.last = entry.last.max(outcome.revision);
                entry.results.insert(seq, outcome);
                s.results += 1;
            }
        }
        s.by_age = s.clients.iter().map(|(id, c)| (c.last, *id)).collect();
        Ok(s)
    }

    /// What is known about `id`.
    pub(crate) fn check(&self, id: RequestId) -> Seen {
        let Some(client) = self.clients.get(&id.client) else { return Seen::New };
        if let Some(outcome) = client.results.get(&id.seq) {
            return Seen::Done(outcome.clone());
        }
        if id.seq < client.floor {
            Seen::Expired
        } else {
            Seen::New
        }
    }

    /// Remembers `outcome` for `id`, forgetting what the bounds require; returns the changes to
    /// store.
    pub(crate) fn record(&mut self, id: RequestId, outcome: Outcome) -> Result<Vec<Write>, Error> {
        let mut writes = vec![Write::Put(key(id.client, id.seq), encode(&outcome)?)];
        let revision = outcome.revision;
        let client = self.clients.entry(id.client).or_default();
        self.by_age.remove(&(client.last, id.client));
        client.last = client.last.max(revision);
        self.by_age.insert((client.last, id.client));
        if client.results.insert(id.seq, outcome).is_none() {
            self.results += 1;
        }
        if client.results.len() > MAX_RESULTS_PER_CLIENT {
            if let Some((seq, _)) = client.results.pop_first() {
                self.results -= 1;
                client.floor = client.floor.max(seq + 1);
                writes.push(Write::Remove(key(id.client, seq)));
                writes.push(Write::Put(key(id.client, 0), encode(&client.floor)?));
            }
        }
        while self.results > MAX_RESULTS {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            if let Some(gone) = self.clients.remove(&oldest) {
                self.results -= gone.results.len();
                writes.push(Write::Remove(key(oldest, 0)));
                writes.extend(gone.results.keys().map(|seq| Write::Remove(key(oldest, *seq))));
            }
        }
        Ok(writes)
    }

    /// Number of remembered results.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Response;

    fn outcome(revision: u64) -> Outcome {
        Outcome { revision, response: Response::Dropped(revision) }
    }

    #[test]
    fn a_retry_gets_the_first_outcome() {
        let mut s = Sessions::default();
        let id = RequestId { client: 7, seq: 1 };
        assert_eq!(s.check(id), Seen::New);
        s.record(id, outcome(10)).unwrap();
        assert_eq!(s.check(id), Seen::Done(outcome(10)));
        assert_eq!(s.check(RequestId { client: 7, seq: 2 }), Seen::New);
        assert_eq!(s.check(RequestId { client: 8, seq: 1 }), Seen::New);
    }

    #[test]
    fn old_results_expire_per_client() {
        let mut s = Sessions::default();
        for seq in 1..=(MAX_RESULTS_PER_CLIENT as u64 + 5) {
            s.record(RequestId { client: 1, seq }, outcome(seq)).unwrap();
        }
        assert_eq!(s.len(), MAX_RESULTS_PER_CLIENT);
        assert_eq!(s.check(RequestId { client: 1, seq: 3 }), Seen::Expired);
        assert!(matches!(s.check(RequestId { client: 1, seq: 6 }), Seen::Done(_)));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent_client() {
        let mut s = Sessions::default();
        let clients = (MAX_RESULTS / MAX_RESULTS_PER_CLIENT) as u64 + 1;
        let mut revision = 0;
        for client in 1..=clients {
            for seq in 1..=MAX_RESULTS_PER_CLIENT as u64 {
                revision += 1;
                s.record(RequestId { client, seq }, outcome(revision)).unwrap();
            }
        }
        assert!(s.len() <= MAX_RESULTS);
        assert_eq!(s.check(RequestId { client: 1, seq: 5 }), Seen::New);
        assert!(matches!(s.check(RequestId { client: clients, seq: 5 }), Seen::Done(_)));
    }

    #[test]
    fn the_table_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("sessions").unwrap();
        let mut s = Sessions::default();
        for seq in 1..=(MAX_RESULTS_PER_CLIENT as u64 + 2) {
            for w in s.record(RequestId { client: 3, seq }, outcome(seq)).unwrap() {
                match w {
                    Write::Put(k, v) => tree.insert(k, v).unwrap(),
                    Write::Remove(k) => tree.remove(k).unwrap(),
                };
            }
        }
        let loaded = Sessions::load(&tree).unwrap();
        assert_eq!(loaded.len(), s.len());
        assert_eq!(loaded.check(RequestId { client: 3, seq: 1 }), Seen::Expired);
        assert_eq!(loaded.check(RequestId { client: 3, seq: 50 }), Seen::Done(outcome(50)));
    }
}
