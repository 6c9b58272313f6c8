//! Property tests of [`Entry`], the per-key state that keeps one value per type: random
//! executions on three nodes where each node may create the key with a different type (a
//! cross-partition type conflict), then writes and syncs at random. The merge laws must hold on
//! every state any node passed through, and every merge order must end in the same entry whose
//! visible type is the one created first.

use std::sync::Arc;
use std::time::Duration;

use ledge_crdt::{Entry, Hlc, Kind, ManualClock, Op, Timestamp, DEFAULT_MAX_DRIFT};
use proptest::prelude::*;
use proptest::sample::Index;

const NODES: usize = 3;

#[derive(Clone, Debug)]
enum Step {
    /// A node writes; an operation of another type than the key's is refused and skipped.
    Write {
        node: usize,
        op: Op,
        advance_ms: u64,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let member = (0u8..3).prop_map(|b| vec![b'a' + b]);
    prop_oneof![
        member.clone().prop_map(Op::Put),
        Just(Op::Delete),
        (-100i64..100).prop_map(Op::Add),
        member.clone().prop_map(Op::SetAdd),
        member.prop_map(Op::SetRemove),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let write = (0..NODES, op(), 0u64..3).prop_map(|(node, op, advance_ms)| Step::Write { node, op, advance_ms });
    let sync = (0..NODES, 0..NODES).prop_map(|(from, to)| Step::Sync { from, to });
    prop::collection::vec(prop_oneof![3 => write, 2 => sync], 1..40)
}

/// Runs the steps; returns every state any node passed through and the first write of each
/// node that created the key there (its timestamp and type).
fn run(steps: &[Step]) -> (Vec<Entry>, Vec<(Timestamp, Kind)>) {
    let clocks: Vec<Arc<ManualClock>> = (0..NODES).map(|i| Arc::new(ManualClock::new(1_000 + i as u64 * 7))).collect();
    let hlcs: Vec<Hlc> = (0..NODES).map(|i| Hlc::new(i as u64 + 1, clocks[i].clone(), DEFAULT_MAX_DRIFT)).collect();
    let mut entries: Vec<Option<Entry>> = vec![None; NODES];
    let (mut states, mut creations) = (Vec::new(), Vec::new());
    for step in steps {
        match step {
            Step::Write { node, op, advance_ms } => {
                clocks[*node].advance(Duration::from_millis(*advance_ms));
                let ts = hlcs[*node].tick();
                match &mut entries[*node] {
                    None => {
                        creations.push((ts, op.kind()));
                        entries[*node] = Some(Entry::from_op(op.clone(), ts));
                    }
                    Some(entry) => {
                        if entry.apply(op.clone(), ts).is_err() {
                            continue;
                        }
                    }
                }
            }
            Step::Sync { from, to } => {
                let Some(sent) = entries[*from].clone() else { continue };
                let _ = hlcs[*to].observe(sent.timestamp());
                match &mut entries[*to] {
                    None => entries[*to] = Some(sent),
                    Some(entry) => entry.merge(&sent),
                }
            }
        }
        states.extend(entries.iter().flatten().cloned());
    }
    (states, creations)
}

fn merged(a: &Entry, b: &Entry) -> Entry {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #[test]
    fn entry_merge_laws(steps in steps(), picks in [any::<Index>(), any::<Index>(), any::<Index>()]) {
        let (states, _) = run(&steps);
        if states.is_empty() {
            return Ok(());
        }
        let [a, b, c] = picks.map(|pick| pick.get(&states).clone());
        prop_assert_eq!(merged(&a, &b), merged(&b, &a), "commutative");
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)), "associative");
        prop_assert_eq!(merged(&a, &a), a.clone(), "idempotent");
        prop_assert_eq!(a == b, a.digest() == b.digest(), "digests tell entries apart");
        let bytes = a.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Entry::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?, a);
    }

    #[test]
    fn every_merge_order_agrees_and_the_first_created_type_wins(
        steps in steps(),
        order in prop::collection::vec(any::<u64>(), 200),
    ) {
        let (states, creations) = run(&steps);
        let Some(first) = states.first() else { return Ok(()) };
        let in_order = states.iter().fold(first.clone(), |acc, s| merged(&acc, s));
        let mut shuffled: Vec<(u64, &Entry)> = order.iter().copied().zip(&states).collect();
        shuffled.sort_by_key(|(key, _)| *key);
        let any_order = shuffled.iter().fold(first.clone(), |acc, (_, s)| merged(&acc, s));
        prop_assert_eq!(any_order.to_bytes().ok(), in_order.to_bytes().ok());
        let earliest = creations.iter().min().map(|(_, kind)| *kind);
        prop_assert_eq!(Some(in_order.kind()), earliest, "the type created first is the key's type");
    }
}
