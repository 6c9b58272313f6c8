//! Applying committed entries to the state machine.
//!
//! Every command of a [`Proposal`] gets the next revision from a counter the state machine keeps
//! (as etcd's revision), so revisions are identical on every replica however the leader batched
//! the writes. A retried command the session table remembers gets its first [`Outcome`] back and
//! takes no revision.
//!
//! The common case, a run of entries that carry only [`Command::Batch`] (and blank entries), is
//! applied in one pass: reads go through an overlay of this run's own writes, and everything the
//! run wrote (data, change-log records, session results, the last applied log id and revision) is
//! committed in one sled transaction at the end, with no flush: the Raft log is the durability
//! point until the next checkpoint. Catalog and membership entries are applied one at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use openraft::{Entry, EntryPayload};
use sled::Transactional;

use crate::command::{
    Applied, BatchOutcome, Change, Command, Condition, Event, KeyspaceDef, Op, Outcome, Request, RequestId, Response,
    StoredMembership, TypeConfig, Versioned, DEFAULT_KEYSPACE,
};
use crate::error::{decode, encode};
use crate::session::{Seen, Sessions, Write};
use crate::state::{data_tree_name, StateMachine, LAST_APPLIED, MEMBERSHIP, REVISION};
use crate::Error;

/// Positions of the fixed trees in a run's tree list.
const META: usize = 0;
const SESSIONS: usize = 1;

/// The writes of one run, per tree, over the trees' stored contents.
struct Overlay {
    trees: Vec<sled::Tree>,
    writes: Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl Overlay {
    fn new(trees: Vec<sled::Tree>) -> Self {
        let writes = vec![BTreeMap::new(); trees.len()];
        Self { trees, writes }
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.writes[tree].get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.trees[tree].get(key)?.map(|v| v.to_vec())),
        }
    }

    fn versioned(&self, tree: usize, key: &[u8]) -> Result<Option<Versioned>, Error> {
        self.get(tree, key)?.map(|b| decode(&b)).transpose()
    }

    fn put(&mut self, tree: usize, key: &[u8], value: Vec<u8>) {
        self.writes[tree].insert(key.to_vec(), Some(value));
    }

    fn remove(&mut self, tree: usize, key: &[u8]) {
        self.writes[tree].insert(key.to_vec(), None);
    }

    fn session(&mut self, writes: Vec<Write>) {
        for w in writes {
            match w {
                Write::Put(k, v) => self.put(SESSIONS, &k, v),
                Write::Remove(k) => self.remove(SESSIONS, &k),
            }
        }
    }

    /// Commits every write atomically.
    fn commit(self) -> Result<(), Error> {
        let Overlay { trees, writes } = self;
        trees
            .as_slice()
            .transaction(|t| {
                for (tree, writes) in t.iter().zip(&writes) {
                    for (k, v) in writes {
                        match v {
                            Some(v) => tree.insert(k.as_slice(), v.as_slice())?,
                            None => tree.remove(k.as_slice())?,
                        };
                    }
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<Error>| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => e.into(),
            })
    }
}

/// Whether an entry can join a run applied in one transaction.
fn in_run(entry: &Entry<TypeConfig>) -> bool {
    match &entry.payload {
        EntryPayload::Blank => true,
        EntryPayload::Normal(p) => p.0.iter().all(|r| matches!(r.command, Command::Batch { .. })),
        EntryPayload::Membership(_) => false,
    }
}

impl StateMachine {
    /// Applies committed entries in order; returns one [`Applied`] per entry. An error is a
    /// storage failure (the node must stop), never a command's deterministic refusal.
    pub(crate) fn apply_entries(&self, entries: Vec<Entry<TypeConfig>>) -> Result<Vec<Applied>, Error> {
        let bytes: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(p) => p.0.iter().map(Request::size).sum(),
                _ => 0,
            })
            .sum();
        self.inner.applied_bytes.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        let mut out = Vec::with_capacity(entries.len());
        let mut run = Vec::new();
        for entry in entries {
            if in_run(&entry) {
                run.push(entry);
                continue;
            }
            if !run.is_empty() {
                out.extend(self.apply_run(std::mem::take(&mut run))?);
            }
            out.push(self.apply_single(entry)?);
        }
        if !run.is_empty() {
            out.extend(self.apply_run(run)?);
        }
        Ok(out)
    }

    /// Applies entries that carry only batches, in one transaction.
    fn apply_run(&self, entries: Vec<Entry<TypeConfig>>) -> Result<Vec<Applied>, Error> {
        let Some(last) = entries.last().map(|e| e.log_id) else { return Ok(Vec::new()) };
        let mut trees = vec![self.inner.meta.clone(), self.inner.sessions_tree.clone()];
        let mut spaces: HashMap<String, Result<usize, Error>> = HashMap::new();
        for entry in &entries {
            let EntryPayload::Normal(p) = &entry.payload else { continue };
            for r in &p.0 {
                let Command::Batch { keyspace, .. } = &r.command else { continue };
                if spaces.contains_key(keyspace) {
                    continue;
                }
                let slot = match self.data_tree(keyspace) {
                    Ok(tree) => {
                        trees.push(tree);
                        Ok(trees.len() - 1)
                    }
                    Err(e) if e.is_deterministic() => Err(e),
                    Err(e) => return Err(e),
                };
                spaces.insert(keyspace.clone(), slot);
            }
        }
        let mut overlay = Overlay::new(trees);
        let mut sessions = self.sessions()?;
        let mut revision = self.applied_revision();
        let mut changes = Vec::new();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let EntryPayload::Normal(proposal) = entry.payload else {
                out.push(Applied::default());
                continue;
            };
            let mut outcomes = Vec::with_capacity(proposal.0.len());
            for Request { id, command } in proposal.0 {
                let outcome = settle(&mut sessions, &mut overlay, &mut revision, id, |overlay, revision| {
                    let Command::Batch { keyspace, conditions, ops } = command else {
                        return Err(Error::Corrupt("a catalog command in a batch run".into()));
                    };
                    match spaces.get(&keyspace) {
                        Some(Ok(tree)) => {
                            let (outcome, events) = batch(overlay, *tree, revision, &conditions, &ops)?;
                            if !events.is_empty() {
                                changes.push(Arc::new(Change { revision, keyspace, events }));
                            }
                            Ok(Response::Batch(outcome))
                        }
                        Some(Err(e)) => Ok(Response::Rejected(e.clone())),
                        None => Err(Error::Corrupt(format!("keyspace \"{keyspace}\" not resolved"))),
                    }
                })?;
                outcomes.push(outcome);
            }
            out.push(Applied(outcomes));
        }
        overlay.put(META, LAST_APPLIED, encode(&Some(last))?);
        overlay.put(META, REVISION, encode(&revision)?);
        overlay.commit()?;
        drop(sessions);
        self.set_applied(last.index, revision);
        for change in changes {
            self.inner.history.push(change.clone());
            self.inner.events.send(change);
        }
        Ok(out)
    }

    /// Applies a membership entry or a catalog command on its own.
    fn apply_single(&self, entry: Entry<TypeConfig>) -> Result<Applied, Error> {
        let log_id = entry.log_id;
        let mut revision = self.applied_revision();
        let mut overlay =
            Overlay::new(vec![self.inner.meta.clone(), self.inner.catalog.clone(), self.inner.sessions_tree.clone()]);
        const CATALOG: usize = 1;
        let mut dropped = None;
        let mut catalog_changed = false;
        let applied = match entry.payload {
            EntryPayload::Blank => Applied::default(),
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(log_id), m);
                overlay.put(META, MEMBERSHIP, encode(&stored)?);
                Applied::default()
            }
            EntryPayload::Normal(proposal) => {
                let mut sessions = self.sessions()?;
                let alone = proposal.0.len() == 1;
                let mut outcomes = Vec::new();
                for Request { id, command } in proposal.0 {
                    let outcome = settle(&mut sessions, &mut overlay, &mut revision, id, |overlay, revision| {
                        if !alone {
                            return Ok(Response::Rejected(Error::InvalidInput(
                                "a catalog change must be proposed on its own".into(),
                            )));
                        }
                        let (response, drop_def) = catalog(overlay, CATALOG, revision, command)?;
                        catalog_changed = matches!(response, Response::Keyspace(_) | Response::Dropped(_));
                        dropped = drop_def;
                        Ok(response)
                    })?;
                    outcomes.push(outcome);
                }
                Applied(outcomes)
            }
        };
        overlay.put(META, LAST_APPLIED, encode(&Some(log_id))?);
        overlay.put(META, REVISION, encode(&revision)?);
        overlay.commit()?;
        if catalog_changed {
            self.invalidate_catalog();
        }
        if let Some(def) = dropped {
            // The catalog no longer names the tree; if this drop is interrupted, `open` collects
            // the orphan.
            self.inner.db.drop_tree(data_tree_name(&def).as_bytes())?;
        }
        self.set_applied(log_id.index, revision);
        Ok(applied)
    }
}

/// Answers a request the session table remembers with its first outcome (or refuses one too old
/// to tell); otherwise runs `apply` with the next revision and remembers the outcome.
fn settle(
    sessions: &mut Sessions,
    overlay: &mut Overlay,
    revision: &mut u64,
    id: Option<RequestId>,
    apply: impl FnOnce(&mut Overlay, u64) -> Result<Response, Error>,
) -> Result<Outcome, Error> {
    match id.map(|id| sessions.check(id)).unwrap_or(Seen::New) {
        Seen::Done(outcome) => Ok(outcome),
        Seen::Expired => Ok(Outcome { revision: *revision, response: Response::Rejected(expired(id)) }),
        Seen::New => {
            *revision += 1;
            let outcome = Outcome { revision: *revision, response: apply(overlay, *revision)? };
            if let Some(id) = id {
                let writes = sessions.record(id, outcome.clone())?;
                overlay.session(writes);
            }
            Ok(outcome)
        }
    }
}

fn expired(id: Option<RequestId>) -> Error {
    let (client, seq) = id.map(|id| (id.client, id.seq)).unwrap_or_default();
    Error::Expired(format!(
        "write {seq} of client {client:x} is older than the results this region remembers for it; \
         whether it was applied cannot be told"
    ))
}

/// Applies a catalog command; returns its response and, for a drop, the dropped keyspace.
fn catalog(
    overlay: &mut Overlay,
    tree: usize,
    revision: u64,
    command: Command,
) -> Result<(Response, Option<KeyspaceDef>), Error> {
    match command {
        Command::CreateKeyspace { name, mode, scope, if_not_exists } => {
            if let Some(bytes) = overlay.get(tree, name.as_bytes())? {
                let existing: KeyspaceDef = decode(&bytes)?;
                if if_not_exists && existing.mode == mode && existing.scope == scope {
                    return Ok((Response::Keyspace(existing), None));
                }
                let e = Error::AlreadyExists(format!(
                    "keyspace \"{name}\" already exists ({:?}, {:?})",
                    existing.mode, existing.scope
                ));
                return Ok((Response::Rejected(e), None));
            }
            let def = KeyspaceDef { name: name.clone(), mode, scope, created_revision: revision };
            overlay.put(tree, name.as_bytes(), encode(&def)?);
            Ok((Response::Keyspace(def), None))
        }
        Command::DropKeyspace { name } => {
            if name == DEFAULT_KEYSPACE {
                let e = Error::InvalidInput("the default keyspace cannot be dropped".into());
                return Ok((Response::Rejected(e), None));
            }
            let Some(bytes) = overlay.get(tree, name.as_bytes())? else {
                let e = Error::NotFound(format!("keyspace \"{name}\" does not exist"));
                return Ok((Response::Rejected(e), None));
            };
            let def: KeyspaceDef = decode(&bytes)?;
            overlay.remove(tree, name.as_bytes());
            Ok((Response::Dropped(revision), Some(def)))
        }
        Command::Batch { .. } => Ok((
            Response::Rejected(Error::InvalidInput("a batch must not be proposed as a catalog change".into())),
            None,
        )),
    }
}

/// Evaluates conditions and applies the operations of one batch to the data tree `tree`.
fn batch(
    overlay: &mut Overlay,
    tree: usize,
    revision: u64,
    conditions: &[Condition],
    ops: &[Op],
) -> Result<(BatchOutcome, Vec<Event>), Error> {
    let mut failed = Vec::new();
    for (i, cond) in conditions.iter().enumerate() {
        let holds = match cond {
            Condition::RevisionEquals(k, rev) => overlay.versioned(tree, k)?.map(|v| v.revision) == Some(*rev),
            Condition::ValueEquals(k, value) => overlay.versioned(tree, k)?.is_some_and(|v| &v.value == value),
            Condition::Absent(k) => overlay.get(tree, k)?.is_none(),
            Condition::Present(k) => overlay.get(tree, k)?.is_some(),
        };
        if !holds {
            failed.push(i as u32);
        }
    }
    if !failed.is_empty() {
        let outcome = BatchOutcome { succeeded: false, revision, failed_conditions: failed, deleted: 0 };
        return Ok((outcome, Vec::new()));
    }
    let mut events = Vec::with_capacity(ops.len());
    let mut deleted = 0;
    for op in ops {
        let key = op.key();
        let current = overlay.versioned(tree, key)?;
        match op {
            Op::Put(_, value) => {
                let next = match current {
                    Some(prev) => Versioned {
                        value: value.clone(),
                        revision,
                        create_revision: prev.create_revision,
                        version: prev.version + 1,
                    },
                    None => Versioned { value: value.clone(), revision, create_revision: revision, version: 1 },
                };
                overlay.put(tree, key, encode(&next)?);
                events.push(Event { key: key.to_vec(), value: Some(value.clone()) });
            }
            Op::Delete(_) => {
                if current.is_some() {
                    deleted += 1;
                    overlay.remove(tree, key);
                    events.push(Event { key: key.to_vec(), value: None });
                }
            }
        }
    }
    Ok((BatchOutcome { succeeded: true, revision, failed_conditions: Vec::new(), deleted }, events))
}
