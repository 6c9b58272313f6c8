//! Property tests of the CRDT values: random executions on three nodes with skewed clocks, where
//! each step is either a write on one node or a one-way sync (state merge) between two nodes.
//! Every state a node passes through is recorded; the laws are checked on those states, and the
//! converged state against a model of what the operations mean.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ledge_crdt::{Hlc, Kind, ManualClock, Op, Read, Timestamp, Value, DEFAULT_MAX_DRIFT};
use proptest::prelude::*;
use proptest::sample::Index;

const NODES: usize = 3;
const MAX_STEPS: usize = 40;

#[derive(Clone, Debug)]
enum Step {
    Write { node: usize, op: Op, advance_ms: u64 },
    Sync { from: usize, to: usize },
}

fn member() -> impl Strategy<Value = Vec<u8>> {
    (0u8..4).prop_map(|b| vec![b'a' + b])
}

fn op(kind: Kind) -> BoxedStrategy<Op> {
    match kind {
        Kind::Lww => prop_oneof![3 => member().prop_map(Op::Put), 1 => Just(Op::Delete)].boxed(),
        Kind::Counter => (-1_000i64..1_000).prop_map(Op::Add).boxed(),
        Kind::Set => prop_oneof![member().prop_map(Op::SetAdd), member().prop_map(Op::SetRemove)].boxed(),
    }
}

fn steps(kind: Kind) -> impl Strategy<Value = Vec<Step>> {
    let write = (0..NODES, op(kind), 0u64..3).prop_map(|(node, op, advance_ms)| Step::Write { node, op, advance_ms });
    let sync = (0..NODES, 0..NODES).prop_map(|(from, to)| Step::Sync { from, to });
    prop::collection::vec(prop_oneof![3 => write, 2 => sync], 1..MAX_STEPS)
}

/// Physical clock offsets of the three nodes, up to ten seconds apart.
fn skews() -> impl Strategy<Value = [u64; NODES]> {
    [0u64..10_000, 0u64..10_000, 0u64..10_000]
}

struct Node {
    hlc: Hlc,
    clock: Arc<ManualClock>,
    value: Option<Value>,
    /// The greatest timestamp this node has issued or received.
    seen: Timestamp,
    /// Set model: the adds this node knows of (id → member) and the ids it knows were removed.
    adds: BTreeMap<usize, Vec<u8>>,
    removed: BTreeSet<usize>,
}

impl Node {
    fn expected_members(&self) -> Vec<Vec<u8>> {
        let live = self.adds.iter().filter(|(id, _)| !self.removed.contains(id));
        live.map(|(_, member)| member.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    }
}

/// What an execution produced.
struct Run {
    /// Every state any node passed through, in execution order.
    states: Vec<Value>,
    /// Every write with its timestamp.
    writes: Vec<(Op, Timestamp)>,
    /// The set model merged over all nodes: what a fully synced set must hold.
    expected_members: Vec<Vec<u8>>,
}

fn run(steps: &[Step], skews: [u64; NODES]) -> Result<Run, TestCaseError> {
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let clock = Arc::new(ManualClock::new(1_700_000_000_000 + skews[i]));
            Node {
                hlc: Hlc::new(i as u64 + 1, clock.clone(), DEFAULT_MAX_DRIFT),
                clock,
                value: None,
                seen: Timestamp::default(),
                adds: BTreeMap::new(),
                removed: BTreeSet::new(),
            }
        })
        .collect();
    let mut run = Run { states: vec![], writes: vec![], expected_members: vec![] };
    let mut next_add_id = 0;

    for step in steps {
        match step {
            Step::Write { node, op, advance_ms } => {
                let node = &mut nodes[*node];
                node.clock.advance(Duration::from_millis(*advance_ms));
                let ts = node.hlc.tick();
                prop_assert!(ts > node.seen, "write at {ts} must follow everything seen ({})", node.seen);
                node.seen = ts;
                match op {
                    Op::SetAdd(member) => {
                        node.adds.insert(next_add_id, member.clone());
                        next_add_id += 1;
                    }
                    Op::SetRemove(member) => {
                        let observed = node.adds.iter().filter(|(_, m)| *m == member).map(|(id, _)| *id);
                        node.removed.extend(observed.collect::<Vec<_>>());
                    }
                    _ => {}
                }
                match &mut node.value {
                    None => node.value = Some(Value::from_op(op.clone(), ts)),
                    Some(value) => value.apply(op.clone(), ts).map_err(|e| TestCaseError::fail(e.to_string()))?,
                }
                run.writes.push((op.clone(), ts));
                if let Some(value) = &node.value {
                    run.states.push(value.clone());
                }
            }
            Step::Sync { from, to } => {
                let Some(sent) = nodes[*from].value.clone() else { continue };
                let (adds, removed, from_seen) =
                    (nodes[*from].adds.clone(), nodes[*from].removed.clone(), nodes[*from].seen);
                let node = &mut nodes[*to];
                prop_assert!(node.hlc.observe(sent.timestamp()).is_ok());
                node.seen = node.seen.max(from_seen);
                node.adds.extend(adds);
                node.removed.extend(removed);
                match &mut node.value {
                    None => node.value = Some(sent),
                    Some(value) => value.merge(&sent).map_err(|e| TestCaseError::fail(e.to_string()))?,
                }
                if let Some(value) = &node.value {
                    run.states.push(value.clone());
                }
            }
        }
        // Between syncs, every set replica holds exactly the adds it knows and has not seen removed.
        for node in &nodes {
            if let Some(Value::Set(set)) = &node.value {
                prop_assert_eq!(set.members(), node.expected_members());
            }
        }
    }

    let mut all = nodes.pop().ok_or_else(|| TestCaseError::fail("no nodes"))?;
    for node in nodes {
        all.adds.extend(node.adds);
        all.removed.extend(node.removed);
    }
    run.expected_members = all.expected_members();
    Ok(run)
}

fn merge_all<'a>(states: impl IntoIterator<Item = &'a Value>) -> Result<Option<Value>, TestCaseError> {
    let mut merged: Option<Value> = None;
    for state in states {
        match &mut merged {
            None => merged = Some(state.clone()),
            Some(value) => value.merge(state).map_err(|e| TestCaseError::fail(e.to_string()))?,
        }
    }
    Ok(merged)
}

fn merged(a: &Value, b: &Value) -> Result<Value, TestCaseError> {
    let mut out = a.clone();
    out.merge(b).map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(out)
}

/// Merge is commutative, associative and idempotent on states from one execution, and the digest
/// agrees with equality.
fn check_laws(kind: Kind, steps: &[Step], skews: [u64; NODES], picks: [Index; 3]) -> Result<(), TestCaseError> {
    let run = run(steps, skews)?;
    if run.states.is_empty() {
        return Ok(());
    }
    let [a, b, c] = picks.map(|pick| pick.get(&run.states).clone());
    prop_assert_eq!(a.kind(), kind);

    let ab = merged(&a, &b)?;
    prop_assert_eq!(&ab, &merged(&b, &a)?, "commutative");
    prop_assert_eq!(ab.digest(), merged(&b, &a)?.digest());
    let left = merged(&ab, &c)?;
    let right = merged(&a, &merged(&b, &c)?)?;
    prop_assert_eq!(&left, &right, "associative");
    prop_assert_eq!(left.digest(), right.digest());
    prop_assert_eq!(&merged(&a, &a)?, &a, "idempotent");
    prop_assert_eq!(&merged(&ab, &b)?, &ab, "merging a state already included changes nothing");

    for state in [&a, &b, &c, &ab, &left] {
        let decoded = Value::from_bytes(&state.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded, state, "encoding roundtrips");
        prop_assert_eq!(decoded.digest(), state.digest());
    }
    prop_assert_eq!(a == b, a.digest() == b.digest(), "digests tell states apart");
    Ok(())
}

/// Every state of the execution, merged in any order, gives one value (same bytes, same digest)
/// that means what the operations mean.
fn check_convergence(kind: Kind, steps: &[Step], skews: [u64; NODES], order: &[u64]) -> Result<(), TestCaseError> {
    let run = run(steps, skews)?;
    let Some(in_order) = merge_all(&run.states)? else { return Ok(()) };
    let mut shuffled: Vec<(u64, &Value)> = order.iter().copied().zip(&run.states).collect();
    shuffled.sort_by_key(|(key, _)| *key);
    let Some(any_order) = merge_all(shuffled.into_iter().map(|(_, state)| state))? else {
        return Err(TestCaseError::fail("states lost"));
    };
    prop_assert_eq!(&any_order, &in_order);
    prop_assert_eq!(any_order.digest(), in_order.digest());
    prop_assert_eq!(any_order.to_bytes().ok(), in_order.to_bytes().ok());

    let latest = run.writes.iter().map(|(_, ts)| *ts).max();
    prop_assert_eq!(Some(in_order.timestamp()), latest);
    match kind {
        Kind::Lww => {
            let winner = run.writes.iter().max_by_key(|(_, ts)| *ts).map(|(op, _)| op);
            let expected = match winner {
                Some(Op::Put(bytes)) => Read::Bytes(bytes.clone()),
                _ => Read::Absent,
            };
            prop_assert_eq!(in_order.read(), expected, "lww holds the write with the highest timestamp");
        }
        Kind::Counter => {
            let sum: i64 = run.writes.iter().map(|(op, _)| if let Op::Add(delta) = op { *delta } else { 0 }).sum();
            prop_assert_eq!(in_order.read(), Read::Counter(sum), "counter equals the sum of all deltas");
        }
        Kind::Set => {
            prop_assert_eq!(
                in_order.read(),
                Read::Set(run.expected_members.clone()),
                "set holds every add not causally followed by a remove of it"
            );
        }
    }
    Ok(())
}

fn picks() -> impl Strategy<Value = [Index; 3]> {
    [any::<Index>(), any::<Index>(), any::<Index>()]
}

fn order() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(any::<u64>(), 2 * MAX_STEPS)
}

proptest! {
    #[test]
    fn lww_merge_laws(steps in steps(Kind::Lww), skews in skews(), picks in picks()) {
        check_laws(Kind::Lww, &steps, skews, picks)?;
    }

    #[test]
    fn counter_merge_laws(steps in steps(Kind::Counter), skews in skews(), picks in picks()) {
        check_laws(Kind::Counter, &steps, skews, picks)?;
    }

    #[test]
    fn set_merge_laws(steps in steps(Kind::Set), skews in skews(), picks in picks()) {
        check_laws(Kind::Set, &steps, skews, picks)?;
    }

    #[test]
    fn lww_converges_to_the_latest_write(steps in steps(Kind::Lww), skews in skews(), order in order()) {
        check_convergence(Kind::Lww, &steps, skews, &order)?;
    }

    #[test]
    fn counter_converges_to_the_sum(steps in steps(Kind::Counter), skews in skews(), order in order()) {
        check_convergence(Kind::Counter, &steps, skews, &order)?;
    }

    #[test]
    fn set_converges_to_unremoved_adds(steps in steps(Kind::Set), skews in skews(), order in order()) {
        check_convergence(Kind::Set, &steps, skews, &order)?;
    }

    /// First writes of one key on many nodes at once, merged in any order, give the same value:
    /// every operation is concurrent with every other. (Each node writes once: a node applies
    /// later writes to the state it holds, never to a fresh one.)
    #[test]
    fn concurrent_single_op_states_commute(
        ops in prop::collection::vec((0..5_000u64, op(Kind::Set)), 1..20),
        order in order(),
    ) {
        let states: Vec<Value> = ops
            .iter()
            .enumerate()
            .map(|(node, (physical_ms, op))| Value::from_op(op.clone(), Timestamp::new(*physical_ms, 0, node as u64)))
            .collect();
        let in_order = merge_all(&states)?;
        let mut shuffled: Vec<(u64, &Value)> = order.iter().copied().zip(&states).collect();
        shuffled.sort_by_key(|(key, _)| *key);
        let any_order = merge_all(shuffled.into_iter().map(|(_, state)| state))?;
        prop_assert_eq!(any_order.as_ref().map(Value::digest), in_order.as_ref().map(Value::digest));
        prop_assert_eq!(&any_order, &in_order);
        // No remove observed any add, so every added member is present.
        let added: BTreeSet<Vec<u8>> = ops.iter().filter_map(|(_, op)| match op {
            Op::SetAdd(member) => Some(member.clone()),
            _ => None,
        }).collect();
        prop_assert_eq!(in_order.map(|v| v.read()), Some(Read::Set(added.into_iter().collect())));
    }
}
