//! Request deadlines: the node's request timeout, shortened to fit the deadline the client sent
//! (`grpc-timeout`), so that a refusal reaches the client before it gives up waiting.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of `H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline for serving a request: `timeout` from now, or earlier when the client's own
/// deadline is nearer, keeping a margin for the reply to travel back.
pub fn for_request(metadata: &MetadataMap, timeout: Duration) -> Instant {
    let client = metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
    let budget = match client {
        Some(d) => {
            let margin = (d / 5).min(Duration::from_millis(500));
            timeout.min(d.saturating_sub(margin))
        }
        None => timeout,
    };
    Instant::now() + budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }

    #[test]
    fn client_deadline_shortens_the_budget() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "2S".parse().unwrap());
        let d = for_request(&md, Duration::from_secs(5)) - Instant::now();
        assert!(d <= Duration::from_millis(1600) && d > Duration::from_millis(1400), "{d:?}");
        let d = for_request(&MetadataMap::new(), Duration::from_secs(5)) - Instant::now();
        assert!(d > Duration::from_millis(4900));
    }
}
