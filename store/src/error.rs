//! The storage layer's error type.

use serde::{Deserialize, Serialize};

/// What went wrong in the store. `Clone` and serializable because deterministic errors cross
/// Raft as command results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// A named thing (keyspace, snapshot) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or not allowed.
    #[error("{0}")]
    InvalidInput(String),
    /// The thing being created exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A retried write is too old for the region to tell whether it was applied.
    #[error("{0}")]
    Expired(String),
    /// The disk or the storage engine failed.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Stored bytes could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl Error {
    /// Whether the error depends only on the command and the replicated state, so every replica
    /// reaches it too. Only such errors may be returned as a command's result; any other error
    /// during apply stops the node rather than letting replicas diverge.
    pub fn is_deterministic(&self) -> bool {
        matches!(self, Error::NotFound(_) | Error::InvalidInput(_) | Error::AlreadyExists(_) | Error::Expired(_))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<bincode::Error> for Error {
    fn from(e: bincode::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}

/// Serializes a value for storage.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    bincode::serialize(value).map_err(|e| Error::Corrupt(format!("encode: {e}")))
}

/// Deserializes a stored value.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    Ok(bincode::deserialize(bytes)?)
}
