//! Serving a read at the consistency a request asks for.
//!
//! - `linearizable` (the default for strong keyspaces): the leader confirms its leadership with a
//!   quorum and the local state machine catches up to the commit point before the read
//!   ([`Node::read_barrier`]); a follower gets that read index from the leader and waits until
//!   it has applied it; without a reachable leader the read is `Unavailable` with a leader hint.
//! - `stale`: the local replica answers at once, after waiting for `min_revision` if one is given
//!   (a session read), and refuses if it is further behind than `max_staleness`.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use ledge_consensus::Node;
use ledge_proto::v1 as pb;

use crate::convert;

/// Makes the local state ready for a read at the requested consistency and returns the as-of
/// metadata the reply carries.
pub async fn prepare(node: &Node, options: Option<pb::ReadOptions>, deadline: Instant) -> Result<pb::AsOf, Status> {
    let options = options.unwrap_or_default();
    let consistency = pb::ReadConsistency::try_from(options.consistency)
        .map_err(|_| Status::invalid_argument(format!("unknown read consistency {}", options.consistency)))?;
    match consistency {
        pb::ReadConsistency::Unspecified | pb::ReadConsistency::Linearizable => {
            if options.max_staleness_ms > 0 {
                return Err(Status::invalid_argument("max_staleness applies to stale reads only"));
            }
            let revision = node.read_barrier_until(deadline).await.map_err(convert::status)?;
            let revision = revision.max(options.min_revision);
            Ok(pb::AsOf { revision, stale: false, staleness_ms: 0, node_id: node.id(), ..Default::default() })
        }
        pb::ReadConsistency::Stale => {
            let mut revision = node.state().applied_revision();
            if options.min_revision > revision {
                revision = node
                    .wait_applied(options.min_revision, deadline.saturating_duration_since(Instant::now()))
                    .await
                    .map_err(convert::status)?;
            }
            let staleness = node.staleness();
            if options.max_staleness_ms > 0 {
                let bound = Duration::from_millis(options.max_staleness_ms);
                match staleness {
                    Some(s) if s <= bound => {}
                    Some(s) => {
                        return Err(Status::unavailable(format!(
                            "replica is {} ms behind its leader, more than max_staleness {} ms",
                            s.as_millis(),
                            bound.as_millis()
                        )))
                    }
                    None => {
                        return Err(Status::unavailable(format!(
                            "replica has not heard from a leader, cannot bound staleness to {} ms",
                            bound.as_millis()
                        )))
                    }
                }
            }
            Ok(pb::AsOf {
                revision,
                stale: true,
                staleness_ms: staleness.map(|s| s.as_millis() as u64).unwrap_or(u64::MAX),
                node_id: node.id(),
                ..Default::default()
            })
        }
        pb::ReadConsistency::One | pb::ReadConsistency::Quorum => Err(Status::invalid_argument(
            "read consistency one/quorum applies to eventual keyspaces; use linearizable or stale on strong keyspaces",
        )),
    }
}
