//! Conversions between the client's domain types and the generated `ledge.v1` messages.
//!
//! This is the only module that names generated types besides the request plumbing in
//! `client.rs`. Requests convert infallibly. Replies convert leniently where the proto defines a
//! default (an absent `AsOf` is all zeros, an unspecified scope is `region`) and fail with
//! [`Error::InvalidResponse`] only where the server broke the contract (an unknown mode).

use std::time::Duration;

use ledge_proto::v1 as pb;

use crate::{
    AsOf, BatchResult, Condition, Consistency, DeleteResult, DiskUsage, Error, EventKind, GetResult, Hlc,
    IncrementResult, KeyValue, Keyspace, Member, MemoryPart, Mode, NodeStatus, Op, PutResult, ReadOptions, Result,
    ScanOptions, ScanPage, Scope, SetResult, ValueKind, WatchEvent, WatchMessage, WatchOptions, WriteLevel,
};

// ----------------------------------------------------------------------------------------------
// Requests
// ----------------------------------------------------------------------------------------------

pub(crate) fn read_options(options: &ReadOptions) -> pb::ReadOptions {
    let consistency = match options.consistency {
        None => pb::ReadConsistency::Unspecified,
        Some(Consistency::Linearizable) => pb::ReadConsistency::Linearizable,
        Some(Consistency::Stale) => pb::ReadConsistency::Stale,
        Some(Consistency::One) => pb::ReadConsistency::One,
        Some(Consistency::Quorum) => pb::ReadConsistency::Quorum,
    };
    pb::ReadOptions {
        consistency: consistency.into(),
        max_staleness_ms: options.max_staleness.map_or(0, duration_to_bound_ms),
        min_revision: options.min_revision.unwrap_or(0),
    }
}

/// Milliseconds for a staleness bound. Zero means "no bound" on the wire, so a positive bound
/// below one millisecond rounds up rather than silently becoming unbounded.
fn duration_to_bound_ms(bound: Duration) -> u64 {
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 && !bound.is_zero() {
        1
    } else {
        ms
    }
}

pub(crate) fn write_level(level: Option<WriteLevel>) -> i32 {
    let level = match level {
        None => pb::WriteLevel::Unspecified,
        Some(WriteLevel::One) => pb::WriteLevel::One,
        Some(WriteLevel::Quorum) => pb::WriteLevel::Quorum,
        Some(WriteLevel::All) => pb::WriteLevel::All,
    };
    level.into()
}

pub(crate) fn scan_request(options: &ScanOptions) -> pb::ScanRequest {
    pb::ScanRequest {
        keyspace: options.keyspace.clone(),
        prefix: options.prefix.clone(),
        start: options.start.clone(),
        end: options.end.clone(),
        limit: options.limit,
        page_token: options.page_token.clone(),
        options: Some(read_options(&options.read)),
        keys_only: options.keys_only,
    }
}

pub(crate) fn watch_request(options: &WatchOptions) -> pb::WatchRequest {
    pb::WatchRequest {
        keyspace: options.keyspace.clone(),
        key: options.key.clone(),
        prefix: options.prefix,
        from_revision: options.from_revision,
        from_cursor: options.from_cursor.map(wire_hlc),
    }
}

pub(crate) fn condition(condition: Condition) -> pb::Condition {
    use pb::condition::Test;
    let (key, test) = match condition {
        Condition::RevisionEquals { key, revision } => (key, Test::RevisionEquals(revision)),
        Condition::ValueEquals { key, value } => (key, Test::ValueEquals(value)),
        Condition::Absent { key } => (key, Test::Absent(true)),
        Condition::Present { key } => (key, Test::Present(true)),
    };
    pb::Condition { key, test: Some(test) }
}

pub(crate) fn op(op: Op) -> pb::Op {
    let op = match op {
        Op::Put { key, value } => pb::op::Op::Put(pb::PutOp { key, value }),
        Op::Delete { key } => pb::op::Op::Delete(pb::DeleteOp { key }),
        Op::Increment { key, delta } => pb::op::Op::Increment(pb::IncrementOp { key, delta }),
    };
    pb::Op { op: Some(op) }
}

pub(crate) fn mode(mode: Mode) -> i32 {
    match mode {
        Mode::Strong => pb::Mode::Strong.into(),
        Mode::Eventual => pb::Mode::Eventual.into(),
    }
}

pub(crate) fn scope(scope: Scope) -> i32 {
    match scope {
        Scope::Region => pb::Scope::Region.into(),
        Scope::Global => pb::Scope::Global.into(),
    }
}

// ----------------------------------------------------------------------------------------------
// Replies
// ----------------------------------------------------------------------------------------------

fn wire_hlc(hlc: Hlc) -> pb::Hlc {
    pb::Hlc { physical_ms: hlc.physical_ms, logical: hlc.logical, node_id: hlc.node_id }
}

pub(crate) fn hlc(hlc: pb::Hlc) -> Hlc {
    Hlc { physical_ms: hlc.physical_ms, logical: hlc.logical, node_id: hlc.node_id }
}

/// An entry. An unknown value kind is read as plain bytes: the `value` field is still right.
pub(crate) fn key_value(kv: pb::KeyValue) -> KeyValue {
    let kind = match pb::ValueKind::try_from(kv.kind) {
        Ok(pb::ValueKind::Lww) => Some(ValueKind::Lww),
        Ok(pb::ValueKind::Counter) => Some(ValueKind::Counter),
        Ok(pb::ValueKind::Set) => Some(ValueKind::Set),
        Ok(pb::ValueKind::Unspecified) | Err(_) => None,
    };
    KeyValue {
        key: kv.key,
        value: kv.value,
        revision: kv.revision,
        create_revision: kv.create_revision,
        version: kv.version,
        hlc: kv.hlc.map(hlc),
        kind,
        counter: (kind == Some(ValueKind::Counter)).then_some(kv.counter),
        members: kv.members,
    }
}

pub(crate) fn as_of(as_of: Option<pb::AsOf>) -> AsOf {
    let as_of = as_of.unwrap_or_default();
    AsOf {
        revision: as_of.revision,
        stale: as_of.stale,
        staleness: Duration::from_millis(as_of.staleness_ms),
        node_id: as_of.node_id,
        hlc: as_of.hlc.map(hlc),
        stable_hlc: as_of.stable_hlc.map(hlc),
        replicas: as_of.replicas,
    }
}

pub(crate) fn put_result(reply: pb::PutResponse) -> PutResult {
    PutResult { revision: reply.revision, hlc: reply.hlc.map(hlc) }
}

/// The timestamp every eventual write reply must carry.
fn required_hlc(reply: Option<pb::Hlc>, what: &str) -> Result<Hlc> {
    reply.map(hlc).ok_or_else(|| Error::invalid_response(format!("{what} reply carries no HLC timestamp")))
}

pub(crate) fn increment_result(reply: pb::IncrementResponse) -> Result<IncrementResult> {
    Ok(IncrementResult { hlc: required_hlc(reply.hlc, "increment")?, value: reply.value })
}

pub(crate) fn set_result(reply: pb::SetResponse) -> Result<SetResult> {
    Ok(SetResult { hlc: required_hlc(reply.hlc, "set")?, size: reply.size })
}

pub(crate) fn get_result(reply: pb::GetResponse) -> GetResult {
    GetResult { kv: reply.kv.map(key_value), as_of: as_of(reply.as_of) }
}

pub(crate) fn delete_result(reply: pb::DeleteResponse) -> DeleteResult {
    DeleteResult { revision: reply.revision, deleted: reply.deleted, hlc: reply.hlc.map(hlc) }
}

pub(crate) fn scan_page(reply: pb::ScanResponse) -> ScanPage {
    let next_page_token = Some(reply.next_page_token).filter(|token| !token.is_empty());
    ScanPage { kvs: reply.kvs.into_iter().map(key_value).collect(), next_page_token, as_of: as_of(reply.as_of) }
}

pub(crate) fn batch_result(reply: pb::BatchResponse) -> BatchResult {
    BatchResult {
        succeeded: reply.succeeded,
        revision: reply.revision,
        failed_conditions: reply.failed_conditions,
        hlc: reply.hlc.map(hlc),
    }
}

pub(crate) fn keyspace(keyspace: pb::Keyspace) -> Result<Keyspace> {
    let mode = match pb::Mode::try_from(keyspace.mode) {
        Ok(pb::Mode::Strong) => Mode::Strong,
        Ok(pb::Mode::Eventual) => Mode::Eventual,
        Ok(pb::Mode::Unspecified) | Err(_) => {
            return Err(Error::invalid_response(format!(
                "keyspace {:?} has unknown mode {}",
                keyspace.name, keyspace.mode
            )))
        }
    };
    let scope = match pb::Scope::try_from(keyspace.scope) {
        Ok(pb::Scope::Unspecified | pb::Scope::Region) => Scope::Region,
        Ok(pb::Scope::Global) => Scope::Global,
        Err(_) => {
            return Err(Error::invalid_response(format!(
                "keyspace {:?} has unknown scope {}",
                keyspace.name, keyspace.scope
            )))
        }
    };
    Ok(Keyspace { name: keyspace.name, mode, scope, created_revision: keyspace.created_revision })
}

pub(crate) fn member(member: pb::Member) -> Member {
    Member {
        id: member.id,
        address: member.address,
        role: member.role,
        last_applied: member.last_applied,
        applied_revision: member.applied_revision,
    }
}

/// A watch message. An event whose kind this client does not know fails the whole message:
/// guessing would misreport a delete as a put or the reverse.
pub(crate) fn watch_message(reply: pb::WatchResponse) -> Result<WatchMessage> {
    let cursor = reply.cursor.map(hlc);
    if reply.snapshot {
        let kvs = reply.kvs.into_iter().map(key_value).collect();
        return Ok(WatchMessage::Snapshot { revision: reply.revision, kvs, cursor });
    }
    let events = reply.events.into_iter().map(watch_event).collect::<Result<Vec<_>>>()?;
    Ok(WatchMessage::Events { revision: reply.revision, events, cursor })
}

fn watch_event(event: pb::WatchEvent) -> Result<WatchEvent> {
    let kind = match pb::watch_event::Kind::try_from(event.kind) {
        Ok(pb::watch_event::Kind::Put) => EventKind::Put,
        Ok(pb::watch_event::Kind::Delete) => EventKind::Delete,
        Ok(pb::watch_event::Kind::Unspecified) | Err(_) => {
            return Err(Error::invalid_response(format!(
                "watch event at revision {} has unknown kind {}",
                event.revision, event.kind
            )))
        }
    };
    // The state arrives without the value, which the event carries once.
    let state = event.kv.map(|kv| KeyValue { value: event.value.clone(), ..key_value(kv) });
    Ok(WatchEvent { kind, key: event.key, value: event.value, revision: event.revision, state })
}

pub(crate) fn members(reply: pb::ListMembersResponse) -> Vec<Member> {
    reply.members.into_iter().map(member).collect()
}

pub(crate) fn node_status(reply: pb::StatusResponse) -> NodeStatus {
    NodeStatus {
        node_id: reply.node_id,
        region: reply.region,
        role: reply.role,
        address: reply.address,
        raft_state: reply.raft_state,
        leader_id: Some(reply.leader_id).filter(|id| *id != 0),
        leader_address: Some(reply.leader_address).filter(|address| !address.is_empty()),
        term: reply.term,
        last_log_index: reply.last_log_index,
        applied_revision: reply.applied_revision,
        members: reply.members.into_iter().map(member).collect(),
        version: reply.version,
        keyspaces: reply.keyspaces,
        eventual_keys: reply.eventual_keys,
        tombstones: reply.tombstones,
        hlc: reply.hlc.map(hlc),
        stable_hlc: reply.stable_hlc.map(hlc),
        memory_budget: reply.memory_budget_bytes,
        memory: reply
            .memory
            .into_iter()
            .map(|p| MemoryPart { name: p.name, limit: p.limit_bytes, used: p.used_bytes })
            .collect(),
        rss: reply.rss_bytes,
        disk: reply
            .disk
            .map(|d| DiskUsage { log: d.log_bytes, db: d.db_bytes, snapshots: d.snapshot_bytes })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_options_map_to_the_wire() {
        let wire = read_options(&ReadOptions::default());
        assert_eq!(wire.consistency(), pb::ReadConsistency::Unspecified);
        assert_eq!((wire.max_staleness_ms, wire.min_revision), (0, 0));

        let options = ReadOptions::session(7).max_staleness(Duration::from_millis(1500));
        let wire = read_options(&options);
        assert_eq!(wire.consistency(), pb::ReadConsistency::Stale);
        assert_eq!((wire.max_staleness_ms, wire.min_revision), (1500, 7));
    }

    #[test]
    fn sub_millisecond_staleness_bounds_stay_bounded() {
        let wire = read_options(&ReadOptions::stale().max_staleness(Duration::from_micros(10)));
        assert_eq!(wire.max_staleness_ms, 1);
    }

    #[test]
    fn conditions_and_ops_map_to_oneofs() {
        use pb::condition::Test;
        assert_eq!(condition(Condition::absent("k")).test, Some(Test::Absent(true)));
        assert_eq!(condition(Condition::revision_equals("k", 3)).test, Some(Test::RevisionEquals(3)));
        let put = op(Op::put("k", "v"));
        assert_eq!(put.op, Some(pb::op::Op::Put(pb::PutOp { key: b"k".to_vec(), value: b"v".to_vec() })));
    }

    #[test]
    fn keyspace_modes_are_checked() {
        let wire = pb::Keyspace { name: "a".into(), mode: 2, scope: 0, created_revision: 4 };
        let keyspace = keyspace(wire);
        assert_eq!(
            keyspace,
            Ok(Keyspace { name: "a".into(), mode: Mode::Eventual, scope: Scope::Region, created_revision: 4 })
        );
        let bad = pb::Keyspace { name: "b".into(), mode: 0, scope: 1, created_revision: 1 };
        assert!(matches!(super::keyspace(bad), Err(Error::InvalidResponse { .. })));
    }

    #[test]
    fn empty_tokens_and_zero_leaders_become_none() {
        let page = scan_page(pb::ScanResponse::default());
        assert_eq!(page.next_page_token, None);
        assert_eq!(page.as_of, AsOf::default());
        let status = node_status(pb::StatusResponse::default());
        assert_eq!((status.leader_id, status.leader_address), (None, None));
    }

    #[test]
    fn watch_requests_carry_the_range_and_start() {
        let wire = watch_request(&WatchOptions::prefix("ks", "a/").from_revision(12));
        assert_eq!(
            wire,
            pb::WatchRequest {
                keyspace: "ks".into(),
                key: b"a/".to_vec(),
                prefix: true,
                from_revision: 12,
                from_cursor: None
            }
        );
        assert!(!watch_request(&WatchOptions::key("ks", "a")).prefix);
    }

    fn wire_event(kind: pb::watch_event::Kind, key: &str, value: &str) -> pb::WatchEvent {
        pb::WatchEvent { kind: kind.into(), key: key.into(), value: value.into(), revision: 8, kv: None }
    }

    #[test]
    fn eventual_watch_events_carry_their_state_and_cursor() {
        let wire_hlc = pb::Hlc { physical_ms: 10, logical: 2, node_id: 3 };
        let kv = pb::KeyValue {
            key: b"c".to_vec(),
            kind: pb::ValueKind::Counter.into(),
            counter: 5,
            hlc: Some(wire_hlc),
            ..Default::default()
        };
        let event = pb::WatchEvent { kv: Some(kv), ..wire_event(pb::watch_event::Kind::Put, "c", "5") };
        let reply = pb::WatchResponse { events: vec![event], cursor: Some(wire_hlc), ..Default::default() };
        let Ok(WatchMessage::Events { events, cursor, .. }) = watch_message(reply) else { panic!() };
        assert_eq!(cursor, Some(hlc(wire_hlc)));
        let state = events[0].state.clone().unwrap();
        assert_eq!((state.value.as_slice(), state.counter, state.kind), (&b"5"[..], Some(5), Some(ValueKind::Counter)));
        assert_eq!(watch_request(&WatchOptions::key("ev", "c").from_cursor(hlc(wire_hlc))).from_cursor, Some(wire_hlc));
    }

    #[test]
    fn watch_event_messages_keep_kinds_and_order() {
        use pb::watch_event::Kind;
        let reply = pb::WatchResponse {
            events: vec![wire_event(Kind::Put, "b", "2"), wire_event(Kind::Delete, "a", "")],
            revision: 8,
            ..Default::default()
        };
        let expected = WatchMessage::Events {
            revision: 8,
            events: vec![
                WatchEvent { kind: EventKind::Put, key: b"b".to_vec(), value: b"2".to_vec(), revision: 8, state: None },
                WatchEvent { kind: EventKind::Delete, key: b"a".to_vec(), value: Vec::new(), revision: 8, state: None },
            ],
            cursor: None,
        };
        assert_eq!(watch_message(reply), Ok(expected));
    }

    #[test]
    fn watch_snapshots_carry_the_range() {
        let kv = pb::KeyValue { key: b"a".to_vec(), value: b"1".to_vec(), revision: 3, ..Default::default() };
        let reply = pb::WatchResponse {
            snapshot: true,
            kvs: vec![kv.clone()],
            events: Vec::new(),
            revision: 5,
            more: false,
            cursor: None,
        };
        assert_eq!(
            watch_message(reply),
            Ok(WatchMessage::Snapshot { revision: 5, kvs: vec![key_value(kv)], cursor: None })
        );
    }

    #[test]
    fn unknown_watch_event_kinds_are_invalid_responses() {
        for kind in [0, 7] {
            let event = pb::WatchEvent { kind, key: b"k".to_vec(), value: Vec::new(), revision: 2, kv: None };
            let reply = pb::WatchResponse { events: vec![event], revision: 2, ..Default::default() };
            assert!(matches!(watch_message(reply), Err(Error::InvalidResponse { .. })), "kind {kind}");
        }
    }

    #[test]
    fn member_lists_keep_every_field() {
        let wire = pb::Member {
            id: 3,
            address: "127.0.0.1:7713".into(),
            role: "learner".into(),
            last_applied: 17,
            applied_revision: Some(12),
        };
        let reply = pb::ListMembersResponse { members: vec![wire], leader_id: 1 };
        assert_eq!(
            members(reply),
            vec![Member {
                id: 3,
                address: "127.0.0.1:7713".into(),
                role: "learner".into(),
                last_applied: 17,
                applied_revision: Some(12)
            }]
        );
    }
}
