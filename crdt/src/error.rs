use serde::{Deserialize, Serialize};

use crate::hlc::DriftError;
use crate::value::Kind;

/// What went wrong in the CRDT layer.
///
/// Errors are `Clone` and serializable so that the layers above can carry them across the wire
/// (an eventual write coordinated by another node reports the same error as a local one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// An operation or a merged state is of another type than the value the key holds. A key's
    /// type is fixed by its first write; the API maps this to `InvalidArgument`.
    #[error("type mismatch: key holds a {held} value, not {given}")]
    TypeMismatch {
        /// The type of the value the key holds.
        held: Kind,
        /// The type of the operation or of the state that was given.
        given: Kind,
    },
    /// A remote timestamp was further ahead of the local physical clock than the drift bound,
    /// so it was not adopted.
    #[error(transparent)]
    ClockDrift(#[from] DriftError),
    /// The caller asked for something impossible, e.g. a counter increment that would overflow.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Stored or received bytes could not be decoded (or a value could not be encoded).
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The keyspace does not exist on this node (or not yet: its creation has not been applied
    /// here).
    #[error("{0}")]
    NotFound(String),
    /// A peer could not be reached or did not answer in time, or not enough of them did.
    #[error("{0}")]
    Unavailable(String),
    /// The local store failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A write would make a key's entry larger than the limit; nothing was written. The API
    /// maps this to `ResourceExhausted`.
    #[error("{0}")]
    TooLarge(String),
}

impl Error {
    /// The same error, its message prefixed with the index of the batch operation it came from.
    pub fn in_operation(self, index: usize) -> Error {
        let at = |m: String| format!("operation {index}: {m}");
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(at(m)),
            Error::TooLarge(m) => Error::TooLarge(at(m)),
            Error::NotFound(m) => Error::NotFound(at(m)),
            e @ Error::TypeMismatch { .. } => Error::InvalidInput(at(e.to_string())),
            other => other,
        }
    }
}

impl From<ledge_store::Error> for Error {
    fn from(err: ledge_store::Error) -> Self {
        use ledge_store::Error as Store;
        match err {
            Store::NotFound(m) => Error::NotFound(m),
            Store::InvalidInput(m) | Store::AlreadyExists(m) => Error::InvalidInput(m),
            Store::Corrupt(m) => Error::InvalidData(m),
            Store::Io(m) | Store::Expired(m) => Error::Storage(m),
        }
    }
}

impl From<bincode::Error> for Error {
    fn from(err: bincode::Error) -> Self {
        Error::InvalidData(err.to_string())
    }
}
