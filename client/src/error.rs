//! The client's one error type.
//!
//! Every failure a caller can see is an [`Error`], and every `Error` has a gRPC [`Code`]: the
//! code the server answered with, or the code that best describes a failure on the client side
//! (an unusable endpoint address is `InvalidArgument`, a request that ran out of time is
//! `DeadlineExceeded`). Callers branch on [`Error::code`]; people read the [`Display`] form,
//! which starts with the code's name so that scripts can match it too:
//!
//! ```text
//! Unavailable: no leader (leader hint: 127.0.0.1:7712)
//! ```
//!
//! A server that cannot serve a request because it is not (or cannot reach) the leader answers
//! `Unavailable` and names the leader it knows of in the response metadata keys
//! `ledge-leader-id` and `ledge-leader-addr`; the error keeps that as a [`LeaderHint`].
//!
//! [`Display`]: std::fmt::Display

use std::fmt;

use tonic::Code;

/// Response metadata key carrying the id of the leader the server knows of.
pub const LEADER_ID_METADATA: &str = "ledge-leader-id";

/// Response metadata key carrying the gRPC address (`host:port`) of the leader the server knows of.
pub const LEADER_ADDR_METADATA: &str = "ledge-leader-addr";

/// Response metadata key marking an `Unavailable` eventual write that was applied on at least
/// one node but did not reach its write level in time; it is never retried.
pub const WRITE_KEPT_METADATA: &str = "ledge-write-kept";

/// A result whose error is the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The leader a server pointed to when it refused a request with `Unavailable`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id, when the server sent one.
    pub id: Option<u64>,
    /// The leader's gRPC address (`host:port`), when the server sent one.
    pub address: Option<String>,
}

impl LeaderHint {
    /// Reads a hint from response metadata; `None` when it names neither an id nor an address.
    ///
    /// Unparsable or empty values are ignored rather than turned into errors: a hint only
    /// speeds up leader discovery, and a bad one must not hide the error it came with.
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<LeaderHint> {
        let text = |key: &str| {
            metadata.get(key).and_then(|value| value.to_str().ok()).map(str::trim).filter(|value| !value.is_empty())
        };
        let id = text(LEADER_ID_METADATA).and_then(|id| id.parse::<u64>().ok()).filter(|id| *id != 0);
        let address = text(LEADER_ADDR_METADATA).map(str::to_owned);
        if id.is_none() && address.is_none() {
            return None;
        }
        Some(LeaderHint { id, address })
    }
}

impl fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.address, self.id) {
            (Some(address), _) => f.write_str(address),
            (None, Some(id)) => write!(f, "node {id}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// Everything that can go wrong in a client call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The server, or the gRPC transport on the way to it, answered with this status.
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
        /// The leader the server pointed to, sent with `Unavailable`.
        leader: Option<LeaderHint>,
    },
    /// No answer arrived before the request deadline (code `DeadlineExceeded`). For a write
    /// this means the outcome is unknown: it may or may not have been applied.
    Timeout {
        /// What happened; names the last error seen while retrying, if any.
        message: String,
    },
    /// The caller passed something the client cannot use, such as an endpoint address that is
    /// not a URI (code `InvalidArgument`). Nothing was sent.
    InvalidInput {
        /// What was wrong with the input.
        message: String,
    },
    /// The server's reply broke the API contract, for example an unknown keyspace mode (code
    /// `Internal`).
    InvalidResponse {
        /// What was wrong with the reply.
        message: String,
    },
}

impl Error {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Status { code, .. } => *code,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::InvalidInput { .. } => Code::InvalidArgument,
            Error::InvalidResponse { .. } => Code::Internal,
        }
    }

    /// The error's message, without the code name or leader hint.
    pub fn message(&self) -> &str {
        match self {
            Error::Status { message, .. }
            | Error::Timeout { message }
            | Error::InvalidInput { message }
            | Error::InvalidResponse { message } => message,
        }
    }

    /// The leader the server pointed to, if it sent one.
    pub fn leader_hint(&self) -> Option<&LeaderHint> {
        match self {
            Error::Status { leader, .. } => leader.as_ref(),
            _ => None,
        }
    }

    /// A status error with this code and message and no leader hint.
    pub fn status(code: Code, message: impl Into<String>) -> Error {
        Error::Status { code, message: message.into(), leader: None }
    }

    /// An [`Error::InvalidInput`] with this message.
    pub fn invalid_input(message: impl Into<String>) -> Error {
        Error::InvalidInput { message: message.into() }
    }

    /// An [`Error::InvalidResponse`] with this message.
    pub fn invalid_response(message: impl Into<String>) -> Error {
        Error::InvalidResponse { message: message.into() }
    }

    /// Whether a write that failed with this error was certainly not applied, so it is safe to
    /// send again. The server guarantees that `Unavailable` means the request was refused (or,
    /// from the transport, never delivered) and not applied.
    pub fn is_refused(&self) -> bool {
        self.code() == Code::Unavailable
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        let message = self.message();
        if message.is_empty() {
            write!(f, "{code:?}: {}", code.description())?;
        } else {
            write!(f, "{code:?}: {message}")?;
        }
        if let Some(leader) = self.leader_hint() {
            write!(f, " (leader hint: {leader})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        let leader = LeaderHint::from_metadata(status.metadata());
        Error::Status { code: status.code(), message: status.message().to_owned(), leader }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn unavailable_with(id: Option<&'static str>, addr: Option<&'static str>) -> tonic::Status {
        let mut status = tonic::Status::unavailable("no leader");
        if let Some(id) = id {
            status.metadata_mut().insert(LEADER_ID_METADATA, MetadataValue::from_static(id));
        }
        if let Some(addr) = addr {
            status.metadata_mut().insert(LEADER_ADDR_METADATA, MetadataValue::from_static(addr));
        }
        status
    }

    #[test]
    fn display_names_the_code_and_the_leader_hint() {
        let err = Error::from(unavailable_with(Some("2"), Some("127.0.0.1:7712")));
        assert_eq!(err.to_string(), "Unavailable: no leader (leader hint: 127.0.0.1:7712)");
        assert_eq!(err.code(), Code::Unavailable);
        let hint = err.leader_hint().cloned();
        assert_eq!(hint, Some(LeaderHint { id: Some(2), address: Some("127.0.0.1:7712".into()) }));
    }

    #[test]
    fn display_falls_back_to_the_leader_id() {
        let err = Error::from(unavailable_with(Some("3"), None));
        assert_eq!(err.to_string(), "Unavailable: no leader (leader hint: node 3)");
    }

    #[test]
    fn empty_or_garbage_hints_are_ignored() {
        let err = Error::from(unavailable_with(Some("zero"), Some("  ")));
        assert_eq!(err.leader_hint(), None);
        assert_eq!(err.to_string(), "Unavailable: no leader");
        let err = Error::from(unavailable_with(Some("0"), None));
        assert_eq!(err.leader_hint(), None);
    }

    #[test]
    fn display_uses_code_names() {
        let cases = [
            (tonic::Status::invalid_argument("key too long"), "InvalidArgument: key too long"),
            (tonic::Status::not_found("no keyspace \"x\""), "NotFound: no keyspace \"x\""),
            (tonic::Status::resource_exhausted("value > 1 MiB"), "ResourceExhausted: value > 1 MiB"),
            (tonic::Status::failed_precondition("condition 0"), "FailedPrecondition: condition 0"),
            (tonic::Status::already_exists("keyspace a"), "AlreadyExists: keyspace a"),
        ];
        for (status, expected) in cases {
            assert_eq!(Error::from(status).to_string(), expected);
        }
    }

    #[test]
    fn empty_messages_use_the_code_description() {
        let err = Error::status(Code::Internal, "");
        assert_eq!(err.to_string(), format!("Internal: {}", Code::Internal.description()));
    }

    #[test]
    fn client_side_errors_map_to_codes() {
        assert_eq!(Error::invalid_input("bad").code(), Code::InvalidArgument);
        assert_eq!(Error::invalid_response("bad").code(), Code::Internal);
        let timeout = Error::Timeout { message: "no answer within 5s".into() };
        assert_eq!(timeout.code(), Code::DeadlineExceeded);
        assert_eq!(timeout.to_string(), "DeadlineExceeded: no answer within 5s");
    }

    #[test]
    fn only_unavailable_counts_as_refused() {
        assert!(Error::status(Code::Unavailable, "x").is_refused());
        for code in [Code::Unknown, Code::Internal, Code::DeadlineExceeded, Code::Cancelled] {
            assert!(!Error::status(code, "x").is_refused());
        }
    }
}
