//! Conversions between the `ledge.v1` protobuf types and the domain types, and the one mapping
//! from domain errors to gRPC status codes.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use ledge_consensus::Error as ConsensusError;
use ledge_crdt::{Entry, Kind, Read, Timestamp};
use ledge_proto::v1 as pb;
use ledge_store::{self as store, KeyspaceDef, Mode, Scope, Versioned};

/// Metadata key carrying the leader's node id on `Unavailable` errors.
pub const LEADER_ID: &str = "ledge-leader-id";
/// Metadata key carrying the leader's address on `Unavailable` errors.
pub const LEADER_ADDR: &str = "ledge-leader-addr";
/// Metadata key on the `Unavailable` of an eventual write that missed its write level: the
/// write was applied (on this many nodes) and must not be retried.
pub const WRITE_KEPT: &str = "ledge-write-kept";

/// Maps a store error to a gRPC status.
pub fn store_status(e: store::Error) -> Status {
    match e {
        store::Error::NotFound(m) => Status::not_found(m),
        store::Error::InvalidInput(m) => Status::invalid_argument(m),
        store::Error::AlreadyExists(m) => Status::already_exists(m),
        // A retry too old to deduplicate: whether the first attempt was applied is unknown.
        store::Error::Expired(m) => Status::deadline_exceeded(m),
        e @ (store::Error::Io(_) | store::Error::Corrupt(_)) => Status::internal(e.to_string()),
    }
}

/// Maps a consensus error to a gRPC status, with the leader hint in metadata when known.
pub fn status(e: ConsensusError) -> Status {
    match e {
        ConsensusError::NotLeader { leader_id, leader_addr } => {
            let mut s = Status::new(
                Code::Unavailable,
                ConsensusError::NotLeader { leader_id, leader_addr: leader_addr.clone() }.to_string(),
            );
            if let Some(id) = leader_id {
                s.metadata_mut().insert(LEADER_ID, MetadataValue::from(id));
            }
            if let Some(addr) = leader_addr.and_then(|a| MetadataValue::try_from(a).ok()) {
                s.metadata_mut().insert(LEADER_ADDR, addr);
            }
            s
        }
        ConsensusError::Unavailable(m) => Status::unavailable(m),
        ConsensusError::Indeterminate(m) => Status::deadline_exceeded(m),
        ConsensusError::Rejected(e) | ConsensusError::Store(e) => store_status(e),
        ConsensusError::InvalidInput(m) => Status::invalid_argument(m),
        ConsensusError::Busy(m) => Status::resource_exhausted(m),
        ConsensusError::Fatal(m) => Status::unavailable(format!("node is stopping: {m}")),
    }
}

/// The deduplication id of a write, if the client sent one.
pub fn request_id(id: Option<pb::RequestId>) -> Result<Option<store::RequestId>, Status> {
    match id {
        None => Ok(None),
        Some(pb::RequestId { client_id: 0, .. }) => Err(Status::invalid_argument("request_id.client_id must not be 0")),
        Some(pb::RequestId { sequence: 0, .. }) => Err(Status::invalid_argument("request_id.sequence must not be 0")),
        Some(pb::RequestId { client_id, sequence }) => Ok(Some(store::RequestId { client: client_id, seq: sequence })),
    }
}

/// Maps an error of the eventual layer to a gRPC status.
pub fn crdt_status(e: ledge_crdt::Error) -> Status {
    use ledge_crdt::Error as E;
    match e {
        e @ (E::TypeMismatch { .. } | E::InvalidInput(_) | E::ClockDrift(_)) => Status::invalid_argument(e.to_string()),
        E::NotFound(m) => Status::not_found(m),
        E::Unavailable(m) => Status::unavailable(m),
        E::TooLarge(m) => Status::resource_exhausted(m),
        e @ (E::InvalidData(_) | E::Storage(_)) => Status::internal(e.to_string()),
    }
}

/// An HLC timestamp from the wire.
pub fn timestamp(hlc: pb::Hlc) -> Timestamp {
    Timestamp::new(hlc.physical_ms, hlc.logical, hlc.node_id)
}

/// An HLC timestamp on the wire.
pub fn hlc(ts: Timestamp) -> pb::Hlc {
    pb::Hlc { physical_ms: ts.physical_ms, logical: ts.logical, node_id: ts.node }
}

/// An HLC timestamp on the wire, absent when its time is zero (unknown).
pub fn hlc_opt(ts: Timestamp) -> Option<pb::Hlc> {
    ((ts.physical_ms, ts.logical) != (0, 0)).then(|| hlc(ts))
}

/// An eventual key's entry as a protobuf `KeyValue` (revision fields zero).
pub fn eventual_kv(key: Vec<u8>, entry: &Entry, keys_only: bool) -> pb::KeyValue {
    let mut kv = pb::KeyValue { key, hlc: Some(hlc(entry.timestamp())), ..Default::default() };
    kv.kind = match entry.kind() {
        Kind::Lww => pb::ValueKind::Lww,
        Kind::Counter => pb::ValueKind::Counter,
        Kind::Set => pb::ValueKind::Set,
    } as i32;
    if keys_only {
        return kv;
    }
    match entry.read() {
        Read::Bytes(bytes) => kv.value = bytes,
        Read::Absent => {}
        Read::Counter(n) => {
            kv.counter = n;
            kv.value = n.to_string().into_bytes();
        }
        Read::Set(members) => kv.members = members,
    }
    kv
}

/// A stored entry as a protobuf `KeyValue`.
pub fn key_value(key: Vec<u8>, v: Versioned, keys_only: bool) -> pb::KeyValue {
    pb::KeyValue {
        key,
        value: if keys_only { Vec::new() } else { v.value },
        revision: v.revision,
        create_revision: v.create_revision,
        version: v.version,
        ..Default::default()
    }
}

/// The protobuf form of a keyspace definition.
pub fn keyspace(def: KeyspaceDef) -> pb::Keyspace {
    pb::Keyspace {
        name: def.name,
        mode: match def.mode {
            Mode::Strong => pb::Mode::Strong,
            Mode::Eventual => pb::Mode::Eventual,
        } as i32,
        scope: match def.scope {
            Scope::Region => pb::Scope::Region,
            Scope::Global => pb::Scope::Global,
        } as i32,
        created_revision: def.created_revision,
    }
}

/// The keyspace mode a request names.
pub fn mode(raw: i32) -> Result<Mode, Status> {
    match pb::Mode::try_from(raw) {
        Ok(pb::Mode::Strong) => Ok(Mode::Strong),
        Ok(pb::Mode::Eventual) => Ok(Mode::Eventual),
        Ok(pb::Mode::Unspecified) => Err(Status::invalid_argument("mode is required: strong or eventual")),
        Err(_) => Err(Status::invalid_argument(format!("unknown mode {raw}"))),
    }
}

/// The keyspace scope a request names (unspecified means region).
pub fn scope(raw: i32) -> Result<Scope, Status> {
    match pb::Scope::try_from(raw) {
        Ok(pb::Scope::Region | pb::Scope::Unspecified) => Ok(Scope::Region),
        Ok(pb::Scope::Global) => Ok(Scope::Global),
        Err(_) => Err(Status::invalid_argument(format!("unknown scope {raw}"))),
    }
}

/// A batch condition from its protobuf form.
pub fn condition(c: pb::Condition, index: usize) -> Result<store::Condition, Status> {
    use pb::condition::Test;
    let key = c.key;
    match c.test {
        Some(Test::RevisionEquals(rev)) => Ok(store::Condition::RevisionEquals(key, rev)),
        Some(Test::ValueEquals(v)) => Ok(store::Condition::ValueEquals(key, v)),
        Some(Test::Absent(true)) => Ok(store::Condition::Absent(key)),
        Some(Test::Present(true)) => Ok(store::Condition::Present(key)),
        Some(Test::Absent(false) | Test::Present(false)) | None => {
            Err(Status::invalid_argument(format!("condition {index} has no test")))
        }
    }
}

/// A batch operation from its protobuf form.
pub fn op(o: pb::Op, index: usize) -> Result<store::Op, Status> {
    match o.op {
        Some(pb::op::Op::Put(p)) => Ok(store::Op::Put(p.key, p.value)),
        Some(pb::op::Op::Delete(d)) => Ok(store::Op::Delete(d.key)),
        Some(pb::op::Op::Increment(_)) => Err(Status::invalid_argument(format!(
            "operation {index} is an increment: increments apply to eventual keyspaces"
        ))),
        None => Err(Status::invalid_argument(format!("operation {index} is neither put nor delete"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_the_hint() {
        let s = status(ConsensusError::NotLeader { leader_id: Some(7), leader_addr: Some("10.0.0.7:7700".into()) });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get(LEADER_ID).unwrap(), "7");
        assert_eq!(s.metadata().get(LEADER_ADDR).unwrap(), "10.0.0.7:7700");
    }

    #[test]
    fn codes() {
        assert_eq!(status(ConsensusError::Rejected(store::Error::NotFound("x".into()))).code(), Code::NotFound);
        assert_eq!(
            status(ConsensusError::Rejected(store::Error::AlreadyExists("x".into()))).code(),
            Code::AlreadyExists
        );
        assert_eq!(status(ConsensusError::Indeterminate("x".into())).code(), Code::DeadlineExceeded);
        assert_eq!(status(ConsensusError::Store(store::Error::Io("disk".into()))).code(), Code::Internal);
        assert_eq!(mode(0).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(mode(99).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(scope(0).unwrap(), Scope::Region);
    }
}
