//! [`WatchStream`]: the client's side of `Kv.Watch`.
//!
//! A watch is one long-lived server stream. [`crate::Client::watch`] opens it through the
//! router (leader hints, retries and the request deadline apply to opening only); after that
//! the stream belongs to the caller and lives until the server ends it, it fails, or the caller
//! drops it, which cancels the call. The stream does not reconnect by itself: a caller that
//! wants to survive a broken connection opens a new watch from [`WatchStream::revision`] + 1,
//! which the server answers without gaps or repeats (or with a snapshot first, if that revision
//! was compacted meanwhile).

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use ledge_proto::v1 as pb;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::{convert, Error, Hlc, Result, WatchMessage};

/// The wire stream under a [`WatchStream`]; boxed so tests can feed it without a server.
type WireStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// The messages of one watch, in revision order: possibly a [`WatchMessage::Snapshot`] first,
/// then [`WatchMessage::Events`].
///
/// Read it with the inherent [`WatchStream::next`], or as a [`Stream`] (it implements
/// `tokio_stream::Stream`, which is `futures_core::Stream`, so any stream combinators work).
/// `None` means the server ended the stream cleanly. An error is the last item: the stream
/// ends after it. Dropping the stream cancels the watch on the server.
///
/// ```no_run
/// use ledge_client::{Client, WatchMessage, WatchOptions};
///
/// # async fn demo(client: Client) -> Result<(), ledge_client::Error> {
/// let mut watch = client.watch(WatchOptions::prefix("default", "orders/")).await?;
/// while let Some(message) = watch.next().await {
///     if let WatchMessage::Events { events, .. } = message? {
///         for event in events {
///             println!("{:?} {:?} at {}", event.kind, event.key, event.revision);
///         }
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct WatchStream {
    /// `None` once the stream has ended, so that it stays ended (and the call is cancelled
    /// as soon as an error is seen, not when the caller drops the stream).
    wire: Option<WireStream>,
    revision: u64,
    cursor: Option<Hlc>,
    /// Pages of a snapshot whose last page has not arrived yet.
    pages: Vec<pb::KeyValue>,
}

impl WatchStream {
    pub(crate) fn new(wire: impl Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static) -> WatchStream {
        WatchStream { wire: Some(Box::pin(wire)), revision: 0, cursor: None, pages: Vec::new() }
    }

    /// The next message; `None` when the stream has ended. Waits as long as it takes: watch
    /// messages have no deadline.
    pub async fn next(&mut self) -> Option<Result<WatchMessage>> {
        StreamExt::next(self).await
    }

    /// The revision of the last message delivered (0 before the first). A watch resumed with
    /// [`crate::WatchOptions::from_revision`] at this plus one misses nothing and repeats
    /// nothing.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// On an eventual keyspace, the cursor of the last message delivered (`None` before the
    /// first). A watch resumed with [`crate::WatchOptions::from_cursor`] at it goes on after
    /// that message.
    pub fn cursor(&self) -> Option<Hlc> {
        self.cursor
    }

    /// Whether the stream has ended (cleanly or with an error).
    pub fn is_ended(&self) -> bool {
        self.wire.is_none()
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let message = loop {
            let Some(wire) = self.wire.as_mut() else {
                return Poll::Ready(None);
            };
            let item = match wire.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            match item {
                // A snapshot's pages come as one message once the last has arrived.
                Some(Ok(mut reply)) if reply.snapshot && reply.more => self.pages.append(&mut reply.kvs),
                Some(Ok(mut reply)) => {
                    if reply.snapshot && !self.pages.is_empty() {
                        let mut kvs = std::mem::take(&mut self.pages);
                        kvs.append(&mut reply.kvs);
                        reply.kvs = kvs;
                    }
                    break convert::watch_message(reply).map(Some);
                }
                None if !self.pages.is_empty() => {
                    break Err(Error::invalid_response("the watch stream ended inside a snapshot"))
                }
                None => break Ok(None),
                Some(Err(status)) => break Err(Error::from(status)),
            }
        };
        match message {
            Ok(Some(message)) => {
                self.revision = message.revision();
                self.cursor = message.cursor().or(self.cursor);
                Poll::Ready(Some(Ok(message)))
            }
            Ok(None) => {
                self.wire = None;
                Poll::Ready(None)
            }
            Err(error) => {
                self.wire = None;
                Poll::Ready(Some(Err(error)))
            }
        }
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").field("revision", &self.revision).field("ended", &self.is_ended()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, WatchEvent};
    use tonic::Code;

    fn events(revision: u64, keys: &[&str]) -> pb::WatchResponse {
        let events = keys
            .iter()
            .map(|key| pb::WatchEvent {
                kind: pb::watch_event::Kind::Put.into(),
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                revision,
                kv: None,
            })
            .collect();
        pb::WatchResponse { events, revision, ..Default::default() }
    }

    fn stream(items: Vec<Result<pb::WatchResponse, Status>>) -> WatchStream {
        WatchStream::new(tokio_stream::iter(items))
    }

    #[tokio::test]
    async fn a_paged_snapshot_arrives_as_one_message() {
        let kv = |key: &str| pb::KeyValue { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        let page = |keys: &[&str], more| pb::WatchResponse {
            snapshot: true,
            kvs: keys.iter().map(|k| kv(k)).collect(),
            revision: 7,
            more,
            ..Default::default()
        };
        let mut watch = stream(vec![Ok(page(&["a", "b"], true)), Ok(page(&["c"], true)), Ok(page(&["d"], false))]);
        match watch.next().await {
            Some(Ok(WatchMessage::Snapshot { revision: 7, kvs, .. })) => {
                assert_eq!(kvs.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(), [b"a", b"b", b"c", b"d"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(watch.revision(), 7);
        // A stream that ends between pages is an error, not a partial snapshot.
        let mut cut = stream(vec![Ok(page(&["a"], true))]);
        assert!(matches!(cut.next().await, Some(Err(_))));
    }

    #[tokio::test]
    async fn messages_arrive_in_order_and_the_revision_follows_them() {
        let snapshot = pb::WatchResponse { snapshot: true, revision: 3, ..Default::default() };
        let mut watch = stream(vec![Ok(snapshot), Ok(events(4, &["a", "b"]))]);
        assert_eq!(watch.revision(), 0);
        assert_eq!(watch.next().await, Some(Ok(WatchMessage::Snapshot { revision: 3, kvs: Vec::new(), cursor: None })));
        assert_eq!(watch.revision(), 3);
        let put = |key: &str| WatchEvent {
            kind: EventKind::Put,
            key: key.into(),
            value: b"v".to_vec(),
            revision: 4,
            state: None,
        };
        assert_eq!(
            watch.next().await,
            Some(Ok(WatchMessage::Events { revision: 4, events: vec![put("a"), put("b")], cursor: None }))
        );
        assert_eq!(watch.revision(), 4);
        assert_eq!(watch.next().await, None);
        assert!(watch.is_ended());
        assert_eq!(watch.next().await, None);
    }

    #[tokio::test]
    async fn an_error_is_the_last_item() {
        let mut watch =
            stream(vec![Ok(events(2, &["a"])), Err(Status::unavailable("node shutting down")), Ok(events(3, &["b"]))]);
        assert!(matches!(watch.next().await, Some(Ok(_))));
        let error = watch.next().await.and_then(Result::err);
        assert_eq!(error, Some(Error::status(Code::Unavailable, "node shutting down")));
        assert_eq!(watch.next().await, None);
        assert_eq!(watch.revision(), 2);
    }

    #[tokio::test]
    async fn a_message_the_client_cannot_read_ends_the_stream() {
        let bad = pb::WatchEvent { kind: 9, key: b"k".to_vec(), value: Vec::new(), revision: 5, kv: None };
        let mut watch = stream(vec![
            Ok(pb::WatchResponse { events: vec![bad], revision: 5, ..Default::default() }),
            Ok(events(6, &["a"])),
        ]);
        assert!(matches!(watch.next().await, Some(Err(Error::InvalidResponse { .. }))));
        assert_eq!(watch.next().await, None);
    }

    #[test]
    fn watch_streams_can_move_between_tasks() {
        fn assert_send<T: Send>() {}
        assert_send::<WatchStream>();
    }
}
