//! `--output json`: one object per result. Each result is a struct, so fields serialize in the
//! order written here (key first), which `serde_json::Value` maps would not keep.

use base64::{engine::general_purpose::STANDARD, Engine};
use ledge_client::{
    AsOf, DeleteResult, EventKind, Hlc, IncrementResult, KeyValue, Keyspace, Member, NodeStatus, PutResult, SetResult,
    WatchMessage,
};
use serde::Serialize;

use super::millis;

/// Bytes as lossy UTF-8, plus base64 of the exact bytes when they are not valid UTF-8.
fn text(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), Some(STANDARD.encode(bytes))),
    }
}

/// What state a read reflects: `revision`, `stale`, `staleness_ms`, `node_id` for a strong
/// keyspace; `node_id`, `hlc`, `stable_hlc`, `replicas` for an eventual one.
#[derive(Debug, Serialize)]
pub struct AsOfJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    staleness_ms: Option<u64>,
    node_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    hlc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stable_hlc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<u32>,
}

fn hlc_text(hlc: Option<Hlc>) -> Option<String> {
    hlc.map(|hlc| hlc.to_string())
}

/// `as_of` of a read.
pub fn as_of(as_of: &AsOf) -> AsOfJson {
    if as_of.hlc.is_some() {
        return AsOfJson {
            revision: None,
            stale: None,
            staleness_ms: None,
            node_id: as_of.node_id,
            hlc: hlc_text(as_of.hlc),
            stable_hlc: hlc_text(as_of.stable_hlc),
            replicas: Some(as_of.replicas),
        };
    }
    AsOfJson {
        revision: Some(as_of.revision),
        stale: Some(as_of.stale),
        staleness_ms: Some(millis(as_of.staleness)),
        node_id: as_of.node_id,
        hlc: None,
        stable_hlc: None,
        replicas: None,
    }
}

/// One entry: the result of a get (with `as_of`) or one line of a scan (without). Strong
/// entries carry `revision`, `create_revision` and `version`; eventual ones `hlc` and `kind`,
/// plus `counter` for a counter and `members` for a set.
#[derive(Debug, Serialize)]
pub struct KvJson {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hlc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counter: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members_base64: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<AsOfJson>,
}

/// One entry of a scan.
pub fn kv(kv: &KeyValue) -> KvJson {
    let (key, key_base64) = text(&kv.key);
    let (value, value_base64) = text(&kv.value);
    let strong = kv.hlc.is_none();
    let set = kv.kind == Some(ledge_client::ValueKind::Set);
    let members: Vec<(String, Option<String>)> = kv.members.iter().map(|m| text(m)).collect();
    let exact = members.iter().any(|(_, b64)| b64.is_some());
    KvJson {
        key,
        key_base64,
        value,
        value_base64,
        revision: strong.then_some(kv.revision),
        create_revision: strong.then_some(kv.create_revision),
        version: strong.then_some(kv.version),
        hlc: hlc_text(kv.hlc),
        kind: kv.kind.map(|kind| kind.as_str()),
        counter: kv.counter,
        members: set.then(|| members.iter().map(|(m, _)| m.clone()).collect()),
        members_base64: (set && exact).then(|| kv.members.iter().map(|m| STANDARD.encode(m)).collect()),
        as_of: None,
    }
}

/// The result of a get: the entry plus `as_of`.
pub fn get(entry: &KeyValue, read_as_of: &AsOf) -> KvJson {
    KvJson { as_of: Some(as_of(read_as_of)), ..kv(entry) }
}

/// The result of a put.
#[derive(Debug, Serialize)]
pub struct PutJson {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hlc: Option<String>,
}

/// The result of a put: `{"key", "revision"}`, or `{"key", "hlc"}` on an eventual keyspace.
pub fn put(key: &[u8], put: &PutResult) -> PutJson {
    let (key, key_base64) = text(key);
    PutJson { key, key_base64, revision: put.hlc.is_none().then_some(put.revision), hlc: hlc_text(put.hlc) }
}

/// The result of a delete.
#[derive(Debug, Serialize)]
pub struct DeleteJson {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hlc: Option<String>,
    deleted: bool,
}

/// The result of a delete: `{"key", "revision", "deleted"}`, or `{"key", "hlc", "deleted"}` on
/// an eventual keyspace.
pub fn delete(key: &[u8], delete: &DeleteResult) -> DeleteJson {
    let (key, key_base64) = text(key);
    let revision = delete.hlc.is_none().then_some(delete.revision);
    DeleteJson { key, key_base64, revision, hlc: hlc_text(delete.hlc), deleted: delete.deleted }
}

/// The result of an increment.
#[derive(Debug, Serialize)]
pub struct IncrementJson {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    counter: i64,
    hlc: String,
}

/// The result of an increment: `{"key", "counter", "hlc"}` (the counter's value on the node
/// that took it).
pub fn increment(key: &[u8], result: &IncrementResult) -> IncrementJson {
    let (key, key_base64) = text(key);
    IncrementJson { key, key_base64, counter: result.value, hlc: result.hlc.to_string() }
}

/// The result of a set add or remove.
#[derive(Debug, Serialize)]
pub struct SetJson {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    member: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    member_base64: Option<String>,
    size: u64,
    hlc: String,
}

/// The result of a set add or remove: `{"key", "member", "size", "hlc"}`.
pub fn set(key: &[u8], member: &[u8], result: &SetResult) -> SetJson {
    let (key, key_base64) = text(key);
    let (member, member_base64) = text(member);
    SetJson { key, key_base64, member, member_base64, size: result.size, hlc: result.hlc.to_string() }
}

/// A keyspace.
#[derive(Debug, Serialize)]
pub struct KeyspaceJson {
    name: String,
    mode: &'static str,
    scope: &'static str,
    created_revision: u64,
}

/// A keyspace: `{"name", "mode", "scope", "created_revision"}`.
pub fn keyspace(keyspace: &Keyspace) -> KeyspaceJson {
    KeyspaceJson {
        name: keyspace.name.clone(),
        mode: keyspace.mode.as_str(),
        scope: keyspace.scope.as_str(),
        created_revision: keyspace.created_revision,
    }
}

/// A member of the Raft group.
#[derive(Debug, Serialize)]
pub struct MemberJson {
    id: u64,
    address: String,
    role: String,
    last_applied: u64,
    applied_revision: Option<u64>,
}

/// A member: `{"id", "address", "role", "last_applied", "applied_revision"}` (the last `null`
/// when the member did not answer).
pub fn member(member: &Member) -> MemberJson {
    MemberJson {
        id: member.id,
        address: member.address.clone(),
        role: member.role.clone(),
        last_applied: member.last_applied,
        applied_revision: member.applied_revision,
    }
}

/// The result of removing a member.
#[derive(Debug, Serialize)]
pub struct RemovedJson {
    id: u64,
    revision: u64,
}

/// The result of removing a member: `{"id", "revision"}`.
pub fn removed(id: u64, revision: u64) -> RemovedJson {
    RemovedJson { id, revision }
}

/// One line of `kv watch` output, tagged by `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchJson {
    /// A snapshot's header; its keys follow as `put` lines marked `"snapshot":true`.
    Snapshot {
        /// The revision the snapshot reflects (strong keyspaces).
        #[serde(skip_serializing_if = "Option::is_none")]
        revision: Option<u64>,
        /// The stream position the snapshot reflects (eventual keyspaces).
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        /// How many `put` lines follow.
        count: usize,
    },
    /// A key written (or, in a snapshot, a key that exists).
    Put(EventJson),
    /// A key deleted; `value` is empty.
    Delete(EventJson),
}

/// The fields of a `put` or `delete` line: an entry's fields as a get prints them (`revision`
/// on a strong keyspace; `hlc`, `kind` and `counter` or `members` on an eventual one), plus an
/// eventual event's `cursor`.
#[derive(Debug, Serialize)]
pub struct EventJson {
    #[serde(flatten)]
    kv: KvJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    snapshot: bool,
}

/// A watched entry's line: a strong one shows only its `revision` beside key and value.
fn event_json(entry: &KeyValue, cursor: Option<Hlc>, snapshot: bool) -> EventJson {
    let mut fields = kv(entry);
    if entry.hlc.is_none() {
        fields.create_revision = None;
        fields.version = None;
    }
    EventJson { kv: fields, cursor: hlc_text(cursor), snapshot }
}

/// The lines of one watch message: one per event, or for a snapshot a header line then one
/// `put` line per key, carrying that key's own revision (or timestamp).
pub fn watch(message: &WatchMessage) -> Vec<WatchJson> {
    match message {
        WatchMessage::Snapshot { revision, kvs, cursor } => {
            let header = WatchJson::Snapshot {
                revision: cursor.is_none().then_some(*revision),
                cursor: hlc_text(*cursor),
                count: kvs.len(),
            };
            let puts = kvs.iter().map(|kv| WatchJson::Put(event_json(kv, None, true)));
            std::iter::once(header).chain(puts).collect()
        }
        WatchMessage::Events { events, cursor, .. } => events
            .iter()
            .map(|event| {
                let entry = match &event.state {
                    Some(state) => state.clone(),
                    None => KeyValue {
                        key: event.key.clone(),
                        value: event.value.clone(),
                        revision: event.revision,
                        ..KeyValue::default()
                    },
                };
                let fields = event_json(&entry, *cursor, false);
                match event.kind {
                    EventKind::Put => WatchJson::Put(fields),
                    EventKind::Delete => WatchJson::Delete(fields),
                }
            })
            .collect(),
    }
}

/// A node's status.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    node_id: u64,
    region: String,
    role: String,
    address: String,
    raft_state: String,
    leader_id: u64,
    leader_address: String,
    term: u64,
    last_log_index: u64,
    applied_revision: u64,
    version: String,
    keyspaces: u64,
    eventual_keys: u64,
    tombstones: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    hlc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stable_hlc: Option<String>,
    memory_budget_bytes: u64,
    memory: Vec<MemoryPartJson>,
    rss_bytes: u64,
    disk: DiskJson,
    members: Vec<MemberJson>,
}

/// A part of the memory budget, as in `StatusResponse`.
#[derive(Debug, Serialize)]
pub struct MemoryPartJson {
    name: String,
    limit_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    used_bytes: Option<u64>,
}

/// Bytes on disk, as in `StatusResponse`.
#[derive(Debug, Serialize)]
pub struct DiskJson {
    log_bytes: u64,
    db_bytes: u64,
    snapshot_bytes: u64,
}

/// A node's status, with the fields of `StatusResponse`; no known leader is `0` and `""`, as
/// on the wire.
pub fn status(status: &NodeStatus) -> StatusJson {
    StatusJson {
        node_id: status.node_id,
        region: status.region.clone(),
        role: status.role.clone(),
        address: status.address.clone(),
        raft_state: status.raft_state.clone(),
        leader_id: status.leader_id.unwrap_or(0),
        leader_address: status.leader_address.clone().unwrap_or_default(),
        term: status.term,
        last_log_index: status.last_log_index,
        applied_revision: status.applied_revision,
        version: status.version.clone(),
        keyspaces: status.keyspaces,
        eventual_keys: status.eventual_keys,
        tombstones: status.tombstones,
        hlc: hlc_text(status.hlc),
        stable_hlc: hlc_text(status.stable_hlc),
        memory_budget_bytes: status.memory_budget,
        memory: status
            .memory
            .iter()
            .map(|p| MemoryPartJson { name: p.name.clone(), limit_bytes: p.limit, used_bytes: p.used })
            .collect(),
        rss_bytes: status.rss,
        disk: DiskJson { log_bytes: status.disk.log, db_bytes: status.disk.db, snapshot_bytes: status.disk.snapshots },
        members: status.members.iter().map(member).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use ledge_client::{Mode, Scope};

    fn line(value: impl Serialize) -> String {
        serde_json::to_string(&value).unwrap()
    }

    #[test]
    fn get_has_the_entry_and_as_of() {
        assert_eq!(
            line(get(&fixtures::kv(b"user/1", b"alice"), &fixtures::as_of())),
            concat!(
                r#"{"key":"user/1","value":"alice","revision":7,"create_revision":5,"version":2,"#,
                r#""as_of":{"revision":9,"stale":true,"staleness_ms":120,"node_id":2}}"#
            )
        );
    }

    #[test]
    fn scan_entries_have_no_as_of() {
        assert_eq!(
            line(kv(&fixtures::kv(b"a", b"1"))),
            r#"{"key":"a","value":"1","revision":7,"create_revision":5,"version":2}"#
        );
    }

    #[test]
    fn invalid_utf8_is_printed_lossy_plus_base64() {
        assert_eq!(
            line(kv(&fixtures::kv(b"k", &[0x66, 0xff, 0x00]))),
            r#"{"key":"k","value":"f\ufffd\u0000","value_base64":"Zv8A","revision":7,"create_revision":5,"version":2}"#
                .replace("\\ufffd", "\u{fffd}")
        );
        assert_eq!(
            line(put(&[0xc3], &PutResult { revision: 1, hlc: None })),
            "{\"key\":\"\u{fffd}\",\"key_base64\":\"ww==\",\"revision\":1}"
        );
    }

    #[test]
    fn put_and_delete() {
        assert_eq!(line(put(b"k", &PutResult { revision: 4, hlc: None })), r#"{"key":"k","revision":4}"#);
        assert_eq!(
            line(delete(b"k", &DeleteResult { revision: 5, deleted: false, hlc: None })),
            r#"{"key":"k","revision":5,"deleted":false}"#
        );
    }

    #[test]
    fn eventual_writes_carry_the_hlc_instead_of_a_revision() {
        let hlc = Some(fixtures::hlc());
        assert_eq!(line(put(b"k", &PutResult { revision: 0, hlc })), r#"{"key":"k","hlc":"1700000000000.3@42"}"#);
        assert_eq!(
            line(delete(b"k", &DeleteResult { revision: 0, deleted: true, hlc })),
            r#"{"key":"k","hlc":"1700000000000.3@42","deleted":true}"#
        );
        let incremented = IncrementResult { hlc: fixtures::hlc(), value: -4 };
        assert_eq!(line(increment(b"c", &incremented)), r#"{"key":"c","counter":-4,"hlc":"1700000000000.3@42"}"#);
        let added = SetResult { hlc: fixtures::hlc(), size: 2 };
        assert_eq!(line(set(b"s", b"m", &added)), r#"{"key":"s","member":"m","size":2,"hlc":"1700000000000.3@42"}"#);
    }

    #[test]
    fn eventual_gets_have_kind_hlc_and_hlc_as_of() {
        assert_eq!(
            line(get(&fixtures::counter(b"visits", 12), &fixtures::eventual_as_of())),
            concat!(
                r#"{"key":"visits","value":"12","hlc":"1700000000000.3@42","kind":"counter","counter":12,"#,
                r#""as_of":{"node_id":2,"hlc":"1700000000001.0@2","stable_hlc":"1700000000000.0@1","replicas":1}}"#
            )
        );
        assert_eq!(
            line(kv(&fixtures::set(b"tags", &[b"a", b"b"]))),
            r#"{"key":"tags","value":"","hlc":"1700000000000.3@42","kind":"set","members":["a","b"]}"#
        );
    }

    #[test]
    fn keyspaces_name_mode_and_scope() {
        let carts = Keyspace { name: "carts".into(), mode: Mode::Eventual, scope: Scope::Global, created_revision: 12 };
        assert_eq!(
            line(keyspace(&carts)),
            r#"{"name":"carts","mode":"eventual","scope":"global","created_revision":12}"#
        );
    }

    fn lines(message: &WatchMessage) -> Vec<String> {
        watch(message).iter().map(line).collect()
    }

    #[test]
    fn eventual_watch_lines_carry_timestamps_and_cursors() {
        let (state, cursor) = (fixtures::counter(b"c", -3), fixtures::cursor());
        let message = fixtures::counter_change();
        assert_eq!(
            lines(&message),
            [
                r#"{"type":"put","key":"c","value":"-3","hlc":"1700000000000.3@42","kind":"counter","counter":-3,"cursor":"1700000000001.0@42"}"#
            ]
        );
        let snapshot = WatchMessage::Snapshot { revision: 0, kvs: vec![state], cursor: Some(cursor) };
        assert_eq!(lines(&snapshot)[0], r#"{"type":"snapshot","cursor":"1700000000001.0@42","count":1}"#);
    }

    #[test]
    fn watch_events_are_one_line_each() {
        let events = WatchMessage::Events { revision: 8, events: fixtures::events(8), cursor: None };
        assert_eq!(
            lines(&events),
            [
                r#"{"type":"put","key":"user/1","value":"alice","revision":8}"#,
                r#"{"type":"delete","key":"user/2","value":"","revision":8}"#
            ]
        );
    }

    #[test]
    fn watch_snapshots_are_a_header_then_one_put_per_key() {
        let snapshot = WatchMessage::Snapshot {
            revision: 9,
            kvs: vec![fixtures::kv(b"a", b"1"), fixtures::kv(b"b", &[0xff])],
            cursor: None,
        };
        assert_eq!(
            lines(&snapshot),
            [
                r#"{"type":"snapshot","revision":9,"count":2}"#,
                r#"{"type":"put","key":"a","value":"1","revision":7,"snapshot":true}"#,
                "{\"type\":\"put\",\"key\":\"b\",\"value\":\"\u{fffd}\",\"value_base64\":\"/w==\",\"revision\":7,\"snapshot\":true}",
            ]
        );
        let empty = WatchMessage::Snapshot { revision: 3, kvs: Vec::new(), cursor: None };
        assert_eq!(lines(&empty), [r#"{"type":"snapshot","revision":3,"count":0}"#]);
    }

    #[test]
    fn members_and_removals() {
        let members: Vec<String> = fixtures::status().members.iter().map(|m| line(member(m))).collect();
        assert_eq!(
            members,
            [
                r#"{"id":1,"address":"127.0.0.1:7711","role":"follower","last_applied":39,"applied_revision":null}"#,
                r#"{"id":2,"address":"127.0.0.1:7712","role":"leader","last_applied":40,"applied_revision":31}"#,
            ]
        );
        assert_eq!(line(removed(3, 57)), r#"{"id":3,"revision":57}"#);
    }

    #[test]
    fn status_has_every_status_response_field() {
        assert_eq!(
            line(status(&fixtures::status())),
            concat!(
                r#"{"node_id":1,"region":"r1","role":"edge","address":"127.0.0.1:7711","raft_state":"follower","#,
                r#""leader_id":2,"leader_address":"127.0.0.1:7712","term":3,"last_log_index":40,"#,
                r#""applied_revision":39,"version":"0.1.0","keyspaces":2,"eventual_keys":0,"tombstones":0,"#,
                r#""memory_budget_bytes":67108864,"memory":[{"name":"sled_cache","limit_bytes":26843520},"#,
                r#"{"name":"log_cache","limit_bytes":10066320,"used_bytes":2048}],"rss_bytes":41943040,"#,
                r#""disk":{"log_bytes":1024,"db_bytes":4096,"snapshot_bytes":0},"#,
                r#""members":["#,
                r#"{"id":1,"address":"127.0.0.1:7711","role":"follower","last_applied":39,"applied_revision":null},"#,
                r#"{"id":2,"address":"127.0.0.1:7712","role":"leader","last_applied":40,"applied_revision":31}]}"#
            )
        );
        let leaderless = NodeStatus { leader_id: None, leader_address: None, ..fixtures::status() };
        let text = line(status(&leaderless));
        assert!(text.contains(r#""leader_id":0,"leader_address":"","#), "{text}");
    }
}
