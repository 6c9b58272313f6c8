//! The consensus layer's error type.

use ledge_store as store;

/// What went wrong while reaching or using the region's Raft group. Serializable: a leader's
/// error travels back to the follower that forwarded the request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum Error {
    /// This node is not the leader and could not forward; the leader, if known, is named.
    #[error("not the leader{}", leader_suffix(.leader_id, .leader_addr))]
    NotLeader {
        /// The current leader's id, if known.
        leader_id: Option<u64>,
        /// The current leader's address, if known.
        leader_addr: Option<String>,
    },
    /// No quorum or no leader could be reached; the request was not applied.
    #[error("{0}")]
    Unavailable(String),
    /// The request was proposed but not confirmed before the deadline: it may still be applied.
    #[error("{0}")]
    Indeterminate(String),
    /// The command was refused by the state machine for a reason every replica agrees on.
    #[error("{0}")]
    Rejected(store::Error),
    /// The local store failed.
    #[error("{0}")]
    Store(store::Error),
    /// Too many requests are waiting; nothing was proposed. Retry later.
    #[error("{0}")]
    Busy(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidInput(String),
    /// The Raft node has stopped.
    #[error("raft stopped: {0}")]
    Fatal(String),
}

fn leader_suffix(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!(" (leader is node {id} at {addr})"),
        (Some(id), None) => format!(" (leader is node {id})"),
        _ => " (no leader known)".into(),
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Store(e)
    }
}

impl<E> From<openraft::error::Fatal<E>> for Error
where
    E: openraft::NodeId,
{
    fn from(e: openraft::error::Fatal<E>) -> Self {
        Error::Fatal(e.to_string())
    }
}
