//! Where a request goes: the endpoint set, leader discovery, deadlines and retries.
//!
//! The router keeps one lazily connected gRPC channel per known endpoint and remembers the
//! endpoint that last answered (the *preferred* one). A call walks like this:
//!
//! 1. The request deadline is fixed: now plus the client's timeout. Every attempt carries the
//!    time left as its gRPC deadline (`grpc-timeout`), and is cut off locally when it runs out.
//! 2. The request goes to the preferred endpoint. An answer, success or not, that the server
//!    produced is final unless it is `Unavailable`.
//! 3. `Unavailable` means the node could not serve the request (no quorum, no leader, not the
//!    leader and could not forward) and did not apply it. If the server named a leader address
//!    in the `ledge-leader-addr` metadata, the router adds that address to its set if new and
//!    retries there, once per address per call. Otherwise it moves to the next endpoint.
//! 4. A transport failure (connection refused, reset) is retried on the next endpoint too for
//!    reads and for writes that carry a request id (the server applies such a write at most once
//!    and answers a retry with the first result). A write without an id whose connection broke
//!    mid-flight may have been applied, so it is returned to the caller. A failure to connect
//!    surfaces as `Unavailable` (it was never delivered) and is retried for every write.
//!
//! A successful write answered by a follower (which forwarded it) names the leader in the
//! `ledge-leader-addr` metadata: the router adds that address and prefers it from then on, so
//! writes go straight to the leader.
//! 5. After every endpoint has failed once, the router backs off (25 ms, doubling to 500 ms)
//!    before the next round, until the deadline; it then returns the last error. An attempt cut
//!    off by the deadline returns [`Error::Timeout`] instead, since its outcome is unknown.
//!    Once every known endpoint's server has itself answered `Unavailable` (each node already
//!    waits for a leader within its own deadline before refusing), the call returns that error.
//!
//! One `Unavailable` is not retried: an eventual write whose write level (`quorum`, `all`) was
//! not reached in time, marked with the `ledge-write-kept` metadata key. It was applied on at
//! least one node and will still spread; sending it again would apply it twice.
//!
//! Errors that describe the request rather than the node (`InvalidArgument`, `NotFound`,
//! `FailedPrecondition`, `ResourceExhausted`, `AlreadyExists`, ...) are never retried.
//!
//! A server-streaming call (`Watch`) is opened with [`Router::open`]: the same walk, but the
//! deadline bounds only establishing the stream (until the server's response headers), and no
//! `grpc-timeout` is sent, since a server would otherwise cut a long-lived stream off with it.

use std::{
    future::Future,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{
    transport::{Channel, Endpoint},
    Code, Request, Response, Status,
};

use crate::{Error, Result, WRITE_KEPT_METADATA};

/// The first pause after every endpoint failed once; it doubles each round.
const INITIAL_BACKOFF: Duration = Duration::from_millis(25);
/// The longest pause between rounds.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Whether a request may be sent twice without changing the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A read: safe to resend after any transport failure.
    Read,
    /// A write: resent only when it was certainly not applied (`Unavailable`).
    Write,
    /// A write with a request id: the server applies it at most once, so it is resent after a
    /// transport failure too.
    IdempotentWrite,
}

/// Turns a user-supplied endpoint (`host:port`, or a URI) into the URI the router dials:
/// surrounding whitespace and trailing slashes are dropped, and `http://` is prepended when
/// there is no scheme.
pub fn normalize_endpoint(endpoint: &str) -> Result<String> {
    let trimmed = endpoint.trim();
    let (scheme, address) = trimmed.split_once("://").unwrap_or(("http", trimmed));
    let address = address.trim_end_matches('/');
    if address.is_empty() {
        return Err(Error::invalid_input(format!("invalid endpoint {endpoint:?}: no address")));
    }
    let uri = format!("{scheme}://{address}");
    let parsed = Endpoint::from_shared(uri.clone())
        .map_err(|err| Error::invalid_input(format!("invalid endpoint {endpoint:?}: {err}")))?;
    let parts = parsed.uri();
    if !matches!(parts.scheme_str(), Some("http" | "https")) {
        return Err(Error::invalid_input(format!("invalid endpoint {endpoint:?}: the scheme must be http or https")));
    }
    if parts.host().is_none_or(str::is_empty) {
        return Err(Error::invalid_input(format!("invalid endpoint {endpoint:?}: no host")));
    }
    Ok(uri)
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Return the error to the caller.
    Fail,
    /// Try again on another endpoint.
    Retry,
}

/// Decides whether a failed attempt may be retried. `transport` is true when the status was
/// made by the local gRPC stack from a transport error rather than sent by a server.
fn decide(kind: Kind, code: Code, transport: bool) -> Decision {
    match code {
        Code::Unavailable => Decision::Retry,
        _ if transport && matches!(kind, Kind::Read | Kind::IdempotentWrite) => Decision::Retry,
        _ => Decision::Fail,
    }
}

/// An error for a status the local gRPC stack made from a transport failure: its message
/// names the endpoint and the underlying causes ("Connection refused"), which the status
/// message alone ("tcp connect error") leaves out.
fn transport_error(uri: &str, status: &Status) -> Error {
    let mut message = format!("{uri}: {}", status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    Error::status(status.code(), message)
}

/// One known endpoint.
struct Target {
    /// The normalised URI.
    uri: String,
    channel: Channel,
}

/// The known endpoints. `preferred` always indexes `targets`, which is never empty.
struct Targets {
    targets: Vec<Target>,
    preferred: usize,
}

/// The endpoint set and the retry loop; see the module docs.
pub(crate) struct Router {
    /// Held only for short, non-async sections, never across an `.await`.
    targets: Mutex<Targets>,
    timeout: Duration,
    connect_timeout: Duration,
    max_reply_bytes: usize,
}

impl Router {
    /// A router over `endpoints` (already normalised, non-empty, duplicates allowed).
    pub(crate) fn new(
        endpoints: Vec<String>,
        timeout: Duration,
        connect_timeout: Duration,
        max_reply_bytes: usize,
    ) -> Result<Router> {
        if endpoints.is_empty() {
            return Err(Error::invalid_input("no endpoints given"));
        }
        let router = Router {
            targets: Mutex::new(Targets { targets: Vec::new(), preferred: 0 }),
            timeout,
            connect_timeout,
            max_reply_bytes,
        };
        for uri in endpoints {
            router.add(uri)?;
        }
        Ok(router)
    }

    /// The largest reply a call accepts, in bytes.
    pub(crate) fn max_reply_bytes(&self) -> usize {
        self.max_reply_bytes
    }

    /// The normalised URIs of every known endpoint, preferred first.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        let targets = self.lock();
        let n = targets.targets.len();
        (0..n).map(|i| targets.targets[(targets.preferred + i) % n].uri.clone()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Targets> {
        // The guarded data is always consistent (each update is one push or one assignment),
        // so a panic elsewhere while holding the lock does not make it unusable.
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index of the endpoint with this normalised URI, adding it if it is new.
    fn add(&self, uri: String) -> Result<usize> {
        let mut targets = self.lock();
        if let Some(index) = targets.targets.iter().position(|target| target.uri == uri) {
            return Ok(index);
        }
        let channel = Endpoint::from_shared(uri.clone())
            .map_err(|err| Error::invalid_input(format!("invalid endpoint {uri:?}: {err}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        targets.targets.push(Target { uri, channel });
        Ok(targets.targets.len() - 1)
    }

    fn target(&self, index: usize) -> (String, Channel) {
        let targets = self.lock();
        let target = &targets.targets[index % targets.targets.len()];
        (target.uri.clone(), target.channel.clone())
    }

    fn preferred(&self) -> usize {
        self.lock().preferred
    }

    fn prefer(&self, index: usize) {
        let mut targets = self.lock();
        targets.preferred = index % targets.targets.len();
    }

    fn len(&self) -> usize {
        self.lock().targets.len()
    }

    /// Sends `message` with `rpc`, retrying on other endpoints as the module docs describe.
    pub(crate) async fn call<M, T, F, Fut>(&self, kind: Kind, message: M, rpc: F) -> Result<T>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.attempt(kind, message, rpc, true).await
    }

    /// Opens a server stream with `rpc`, retrying like a read: until the stream is established
    /// nothing has been applied. The deadline is not sent to the server and does not bound the
    /// stream once it is open.
    pub(crate) async fn open<M, T, F, Fut>(&self, message: M, rpc: F) -> Result<T>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.attempt(Kind::Read, message, rpc, false).await
    }

    /// The retry loop of [`Router::call`] and [`Router::open`]; `send_deadline` says whether
    /// each attempt carries the time left as its `grpc-timeout`.
    async fn attempt<M, T, F, Fut>(&self, kind: Kind, message: M, rpc: F, send_deadline: bool) -> Result<T>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut index = self.preferred();
        let mut followed_hints: Vec<String> = Vec::new();
        let mut failures_this_round = 0;
        let mut backoff = INITIAL_BACKOFF;
        let mut last_error: Option<Error> = None;
        // Endpoints whose server answered `Unavailable` itself: a node already waits for a leader
        // within its own deadline before refusing, so asking it again in this call is pointless.
        let mut refused: Vec<String> = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(last_error.unwrap_or_else(|| self.timed_out(None)));
            }
            let (uri, channel) = self.target(index);
            let mut request = Request::new(message.clone());
            if send_deadline {
                request.set_timeout(remaining);
            }
            let status = match tokio::time::timeout(remaining, rpc(channel, request)).await {
                Ok(Ok(response)) => {
                    self.prefer(self.leader_of(&response, &uri).unwrap_or(index));
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_elapsed) => return Err(self.timed_out(last_error.as_ref())),
            };
            let transport = std::error::Error::source(&status).is_some();
            // An eventual write that timed out waiting for its write level was still applied.
            let kept = status.metadata().contains_key(WRITE_KEPT_METADATA);
            let error = if transport { transport_error(&uri, &status) } else { Error::from(status) };
            if kept || decide(kind, error.code(), transport) == Decision::Fail {
                return Err(error);
            }

            let hinted = error
                .leader_hint()
                .and_then(|hint| hint.address.as_deref())
                .and_then(|address| normalize_endpoint(address).ok())
                .filter(|hinted| *hinted != uri && !followed_hints.contains(hinted));
            if !transport && error.code() == Code::Unavailable && !refused.contains(&uri) {
                refused.push(uri.clone());
            }
            last_error = Some(error);
            if refused.len() >= self.len() {
                return Err(last_error.unwrap_or_else(|| self.timed_out(None)));
            }
            if let Some(hinted) = hinted {
                followed_hints.push(hinted.clone());
                if let Ok(hinted_index) = self.add(hinted) {
                    index = hinted_index;
                    continue;
                }
            }

            failures_this_round += 1;
            let known = self.len();
            if failures_this_round >= known {
                failures_this_round = 0;
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(remaining)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            index = (index + 1) % known;
        }
    }

    /// The index of the leader a follower named in a successful reply, added if new.
    fn leader_of<T>(&self, response: &Response<T>, uri: &str) -> Option<usize> {
        let address = response.metadata().get(crate::LEADER_ADDR_METADATA)?.to_str().ok()?;
        let leader = normalize_endpoint(address).ok().filter(|leader| leader != uri)?;
        self.add(leader).ok()
    }

    fn timed_out(&self, last_error: Option<&Error>) -> Error {
        let mut message = format!("no answer within {:?}", self.timeout);
        if let Some(last_error) = last_error {
            message.push_str(&format!(" (last error: {last_error})"));
        }
        Error::Timeout { message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_when_they_have_none() {
        assert_eq!(normalize_endpoint("127.0.0.1:7700"), Ok("http://127.0.0.1:7700".into()));
        assert_eq!(normalize_endpoint(" node-1.ledge:7700/ "), Ok("http://node-1.ledge:7700".into()));
        assert_eq!(normalize_endpoint("http://[::1]:7700"), Ok("http://[::1]:7700".into()));
        assert_eq!(normalize_endpoint("https://ledge.example:443"), Ok("https://ledge.example:443".into()));
    }

    #[test]
    fn unusable_endpoints_are_rejected() {
        for bad in ["", "   ", "ftp://host:21", "http://", "http:///", "host name:7700", "://x:1", "a:b:c"] {
            let err = normalize_endpoint(bad).map(|_| ()).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad:?} gave {err}");
        }
    }

    #[test]
    fn only_unavailable_and_read_transport_failures_are_retried() {
        assert_eq!(decide(Kind::Write, Code::Unavailable, false), Decision::Retry);
        assert_eq!(decide(Kind::Write, Code::Unavailable, true), Decision::Retry);
        assert_eq!(decide(Kind::Read, Code::Unknown, true), Decision::Retry);
        assert_eq!(decide(Kind::Write, Code::Unknown, true), Decision::Fail);
        assert_eq!(decide(Kind::Read, Code::Unknown, false), Decision::Fail);
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::AlreadyExists,
        ] {
            assert_eq!(decide(Kind::Read, code, false), Decision::Fail, "{code:?}");
            assert_eq!(decide(Kind::Write, code, false), Decision::Fail, "{code:?}");
        }
    }

    fn router(endpoints: &[&str]) -> Router {
        let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
        Router::new(endpoints, Duration::from_millis(300), Duration::from_millis(100), 1024).unwrap()
    }

    /// Answers each attempt with the next status from `script`, then with success.
    async fn scripted(router: &Router, kind: Kind, script: Vec<Status>) -> (Result<u32>, usize) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let script = Mutex::new(script.into_iter());
        let attempts = AtomicUsize::new(0);
        let result = router
            .call(kind, (), |_channel, _request| {
                attempts.fetch_add(1, Ordering::SeqCst);
                let next = script.lock().unwrap().next();
                async move {
                    match next {
                        Some(status) => Err(status),
                        None => Ok(Response::new(7)),
                    }
                }
            })
            .await;
        (result, attempts.into_inner())
    }

    fn unavailable_with_hint(address: &'static str) -> Status {
        let mut status = Status::unavailable("not the leader");
        status.metadata_mut().insert(crate::LEADER_ADDR_METADATA, address.parse().unwrap());
        status
    }

    fn transport_failure() -> Status {
        Status::from_error(Box::new(std::fmt::Error))
    }

    #[tokio::test]
    async fn a_leader_hint_is_followed_and_remembered() {
        let router = router(&["http://a:1", "http://b:2"]);
        let (result, attempts) = scripted(&router, Kind::Write, vec![unavailable_with_hint("c:3")]).await;
        assert_eq!((result, attempts), (Ok(7), 2));
        assert_eq!(router.endpoints(), vec!["http://c:3", "http://a:1", "http://b:2"]);
    }

    #[tokio::test]
    async fn unavailable_without_a_hint_moves_to_the_next_endpoint() {
        let router = router(&["http://a:1", "http://b:2"]);
        let (result, attempts) = scripted(&router, Kind::Write, vec![Status::unavailable("no quorum")]).await;
        assert_eq!((result, attempts), (Ok(7), 2));
        assert_eq!(router.endpoints(), vec!["http://b:2", "http://a:1"]);
    }

    #[tokio::test]
    async fn transport_failures_are_retried_for_reads_only() {
        assert_eq!(transport_failure().code(), Code::Unknown);
        let router = router(&["http://a:1", "http://b:2"]);
        let (result, attempts) = scripted(&router, Kind::Read, vec![transport_failure()]).await;
        assert_eq!((result, attempts), (Ok(7), 2));
        let (result, attempts) = scripted(&router, Kind::Write, vec![transport_failure()]).await;
        assert_eq!(result.map_err(|err| err.code()), Err(Code::Unknown));
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn request_errors_are_returned_at_once() {
        let router = router(&["http://a:1", "http://b:2"]);
        let (result, attempts) = scripted(&router, Kind::Read, vec![Status::not_found("no keyspace")]).await;
        assert_eq!(result, Err(Error::status(Code::NotFound, "no keyspace")));
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn a_call_ends_once_every_endpoint_refused() {
        // Each node waits for a leader within its own deadline before refusing, so once every
        // endpoint has refused, the call returns that refusal.
        let router = router(&["http://a:1", "http://b:2"]);
        let script = (0..10_000).map(|_| Status::unavailable("no leader")).collect();
        let (result, attempts) = scripted(&router, Kind::Write, script).await;
        assert_eq!(result, Err(Error::status(Code::Unavailable, "no leader")));
        assert_eq!(attempts, 2);
    }

    #[tokio::test]
    async fn only_unary_calls_send_their_deadline_to_the_server() {
        let router = router(&["http://a:1"]);
        let has_timeout = |_channel: Channel, request: Request<()>| {
            let sent = request.metadata().contains_key("grpc-timeout");
            async move { Ok(Response::new(sent)) }
        };
        assert_eq!(router.call(Kind::Read, (), has_timeout).await, Ok(true));
        assert_eq!(router.open((), has_timeout).await, Ok(false));
    }

    #[tokio::test]
    async fn opening_a_stream_is_retried_like_a_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let router = router(&["http://a:1", "http://b:2"]);
        let attempts = AtomicUsize::new(0);
        let result = router
            .open((), |_channel, _request| {
                let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    match first {
                        true => Err(transport_failure()),
                        false => Ok(Response::new(7)),
                    }
                }
            })
            .await;
        assert_eq!((result, attempts.into_inner()), (Ok(7), 2));
    }

    #[tokio::test]
    async fn the_router_deduplicates_and_lists_endpoints() {
        let router = router(&["http://a:1", "http://b:2", "http://a:1"]);
        assert_eq!(router.endpoints(), vec!["http://a:1", "http://b:2"]);
        router.prefer(1);
        assert_eq!(router.endpoints(), vec!["http://b:2", "http://a:1"]);
        assert!(Router::new(Vec::new(), Duration::ZERO, Duration::ZERO, 0).is_err());
    }
}
