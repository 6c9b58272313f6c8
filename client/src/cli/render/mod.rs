//! How results are printed: one JSON object per result per line (`--output json`, `json.rs`),
//! or aligned text (`--output table`, `table.rs`). Every function here is pure, so the output
//! format is unit-tested without a server.
//!
//! Keys and values are bytes. Both formats print them as UTF-8, replacing invalid sequences;
//! JSON output then also carries the exact bytes in base64 (`key_base64`, `value_base64`) so
//! that nothing is lost, and tables escape control characters so that a value with a newline
//! cannot break the layout.

pub mod json;
pub mod table;

/// A duration in whole milliseconds, saturating.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Results to render in tests.
#[cfg(test)]
mod fixtures {
    use std::time::Duration;

    use ledge_client::{
        AsOf, DiskUsage, EventKind, Hlc, KeyValue, Member, MemoryPart, NodeStatus, ValueKind, WatchEvent, WatchMessage,
    };

    pub fn kv(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            revision: 7,
            create_revision: 5,
            version: 2,
            ..KeyValue::default()
        }
    }

    pub fn hlc() -> Hlc {
        Hlc { physical_ms: 1_700_000_000_000, logical: 3, node_id: 42 }
    }

    /// An eventual counter at `value`.
    /// The cursor of [`counter_change`]'s message.
    pub fn cursor() -> Hlc {
        Hlc { physical_ms: 1_700_000_000_001, logical: 0, node_id: 42 }
    }

    /// A change of an eventual counter `c` to -3, as a watch message.
    pub fn counter_change() -> WatchMessage {
        let event = WatchEvent {
            kind: EventKind::Put,
            key: b"c".to_vec(),
            value: b"-3".to_vec(),
            revision: 0,
            state: Some(counter(b"c", -3)),
        };
        WatchMessage::Events { revision: 0, events: vec![event], cursor: Some(cursor()) }
    }

    pub fn counter(key: &[u8], value: i64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_string().into_bytes(),
            hlc: Some(hlc()),
            kind: Some(ValueKind::Counter),
            counter: Some(value),
            ..KeyValue::default()
        }
    }

    /// An eventual set of `members`.
    pub fn set(key: &[u8], members: &[&[u8]]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            hlc: Some(hlc()),
            kind: Some(ValueKind::Set),
            members: members.iter().map(|m| m.to_vec()).collect(),
            ..KeyValue::default()
        }
    }

    /// An eventual read's as-of metadata.
    pub fn eventual_as_of() -> AsOf {
        AsOf {
            node_id: 2,
            hlc: Some(Hlc { physical_ms: 1_700_000_000_001, logical: 0, node_id: 2 }),
            stable_hlc: Some(Hlc { physical_ms: 1_700_000_000_000, logical: 0, node_id: 1 }),
            replicas: 1,
            ..AsOf::default()
        }
    }

    /// A put of `user/1` and a delete of `user/2`, both at `revision`.
    pub fn events(revision: u64) -> Vec<WatchEvent> {
        vec![
            WatchEvent {
                kind: EventKind::Put,
                key: b"user/1".to_vec(),
                value: b"alice".to_vec(),
                revision,
                state: None,
            },
            WatchEvent { kind: EventKind::Delete, key: b"user/2".to_vec(), value: Vec::new(), revision, state: None },
        ]
    }

    pub fn as_of() -> AsOf {
        AsOf { revision: 9, stale: true, staleness: Duration::from_millis(120), node_id: 2, ..AsOf::default() }
    }

    pub fn status() -> NodeStatus {
        NodeStatus {
            node_id: 1,
            region: "r1".into(),
            role: "edge".into(),
            address: "127.0.0.1:7711".into(),
            raft_state: "follower".into(),
            leader_id: Some(2),
            leader_address: Some("127.0.0.1:7712".into()),
            term: 3,
            last_log_index: 40,
            applied_revision: 39,
            members: vec![
                Member {
                    id: 1,
                    address: "127.0.0.1:7711".into(),
                    role: "follower".into(),
                    last_applied: 39,
                    applied_revision: None,
                },
                Member {
                    id: 2,
                    address: "127.0.0.1:7712".into(),
                    role: "leader".into(),
                    last_applied: 40,
                    applied_revision: Some(31),
                },
            ],
            version: "0.1.0".into(),
            keyspaces: 2,
            eventual_keys: 0,
            tombstones: 0,
            hlc: None,
            stable_hlc: None,
            memory_budget: 64 << 20,
            memory: vec![
                MemoryPart { name: "sled_cache".into(), limit: 26_843_520, used: None },
                MemoryPart { name: "log_cache".into(), limit: 10_066_320, used: Some(2048) },
            ],
            rss: 40 << 20,
            disk: DiskUsage { log: 1024, db: 4096, snapshots: 0 },
        }
    }
}
