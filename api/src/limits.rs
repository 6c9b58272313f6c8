//! Input validation: size limits, keyspace names and paging tokens. Every check names what was
//! wrong, so a client can fix its request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tonic::Status;

/// Default `--max-request-bytes`: 4 MiB (etcd's default ceiling is 1.5 MiB; Ledge's largest
/// value is 1 MiB, and a batch of several fits).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Smallest `--max-request-bytes`: a largest key and value with room for the envelope.
pub const MIN_MAX_REQUEST_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Largest `--max-request-bytes`.
pub const MAX_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

// Raft messages between nodes are sized for commands of at most this size.
const _: () = assert!(MAX_MAX_REQUEST_BYTES <= ledge_consensus::MAX_COMMAND_BYTES);

/// Request size limits (key ≤ 4 KiB, value ≤ 1 MiB, batch ≤ 1,000 operations, whole request ≤
/// `--max-request-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest key in bytes.
    pub max_key: usize,
    /// Largest value in bytes.
    pub max_value: usize,
    /// Most operations (plus conditions) in one batch.
    pub max_batch: usize,
    /// Most entries in one scan page.
    pub max_scan: usize,
    /// Largest request in bytes (encoded), and largest scan page reply.
    pub max_request: usize,
    /// How long a watch may leave messages waiting without its watcher taking one.
    pub watch_stall: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key: 4 * 1024,
            max_value: 1024 * 1024,
            max_batch: 1000,
            max_scan: 10_000,
            max_request: DEFAULT_MAX_REQUEST_BYTES,
            watch_stall: std::time::Duration::from_secs(30),
        }
    }
}

/// Entries in a scan page when the request does not say.
pub const DEFAULT_SCAN_LIMIT: usize = 1000;

impl Limits {
    /// Checks the encoded size of a whole request.
    pub fn request(&self, what: &str, size: usize) -> Result<(), Status> {
        if size > self.max_request {
            return Err(Status::resource_exhausted(format!(
                "{what} request is {size} bytes, more than the limit of {} bytes (--max-request-bytes)",
                self.max_request
            )));
        }
        Ok(())
    }

    /// The decoding limit to give tonic: requests between the limit and this get the
    /// RESOURCE_EXHAUSTED above, naming their size; larger ones are cut off by tonic while
    /// reading the length prefix (OUT_OF_RANGE), before their bytes are buffered.
    pub fn decoding_limit(&self) -> usize {
        self.max_request.saturating_mul(2)
    }

    /// Cuts scan `rows` (fetched with one extra row) to a page of at most `limit` rows and at most
    /// `max_request` bytes by `size`, always keeping at least one row; returns the token of the
    /// next page, empty when this page is the last.
    pub fn page<T>(&self, rows: &mut Vec<(Vec<u8>, T)>, limit: usize, size: impl Fn(&(Vec<u8>, T)) -> usize) -> String {
        let mut bytes = 0;
        let mut keep = 0;
        for row in rows.iter().take(limit) {
            bytes += size(row);
            if keep > 0 && bytes > self.max_request {
                break;
            }
            keep += 1;
        }
        if rows.len() > keep {
            rows.truncate(keep);
            rows.last().map(|(k, _)| page_token(k)).unwrap_or_default()
        } else {
            String::new()
        }
    }

    /// Checks a key.
    pub fn key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key is empty"));
        }
        if key.len() > self.max_key {
            return Err(Status::resource_exhausted(format!(
                "key is {} bytes, more than the limit of {} bytes",
                key.len(),
                self.max_key
            )));
        }
        Ok(())
    }

    /// Checks a value.
    pub fn value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.max_value {
            return Err(Status::resource_exhausted(format!(
                "value is {} bytes, more than the limit of {} bytes",
                value.len(),
                self.max_value
            )));
        }
        Ok(())
    }

    /// Checks the size of a batch.
    pub fn batch(&self, ops: usize, conditions: usize) -> Result<(), Status> {
        if ops == 0 {
            return Err(Status::invalid_argument("batch has no operations"));
        }
        if ops > self.max_batch || conditions > self.max_batch {
            return Err(Status::resource_exhausted(format!(
                "batch has {ops} operations and {conditions} conditions, more than the limit of {}",
                self.max_batch
            )));
        }
        Ok(())
    }

    /// The page size for a scan limit (0 means the default).
    pub fn scan_limit(&self, limit: u32) -> Result<usize, Status> {
        match limit as usize {
            0 => Ok(DEFAULT_SCAN_LIMIT),
            n if n > self.max_scan => Err(Status::resource_exhausted(format!(
                "scan limit {n} is more than the maximum page of {}",
                self.max_scan
            ))),
            n => Ok(n),
        }
    }
}

/// Checks a keyspace name (`[a-z0-9_-]{1,64}`); the empty name means `default`.
pub fn keyspace_name(name: &str) -> Result<&str, Status> {
    if name.is_empty() {
        return Ok(ledge_store::DEFAULT_KEYSPACE);
    }
    if name.len() > 64 {
        return Err(Status::invalid_argument(format!("keyspace name is {} characters, more than 64", name.len())));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-')) {
        return Err(Status::invalid_argument(format!(
            "keyspace name {name:?} has the character {c:?}; use lowercase letters, digits, '_' and '-'"
        )));
    }
    Ok(name)
}

const TOKEN_VERSION: u8 = 1;

/// Encodes the paging token that resumes a scan after `last_key`.
pub fn page_token(last_key: &[u8]) -> String {
    let mut raw = Vec::with_capacity(last_key.len() + 1);
    raw.push(TOKEN_VERSION);
    raw.extend_from_slice(last_key);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a paging token into the key the previous page ended at.
pub fn parse_page_token(token: &str) -> Result<Vec<u8>, Status> {
    let malformed = || {
        Status::invalid_argument(format!("malformed page_token {token:?}: pass the next_page_token of a previous scan"))
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    match raw.split_first() {
        Some((&TOKEN_VERSION, key)) if !key.is_empty() => Ok(key.to_vec()),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn keys_and_values() {
        let l = Limits::default();
        assert_eq!(l.key(b"").unwrap_err().code(), Code::InvalidArgument);
        assert!(l.key(&vec![b'k'; 4096]).is_ok());
        let e = l.key(&vec![b'k'; 4097]).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.message().contains("key is 4097 bytes"));
        assert!(l.value(&vec![0; 1 << 20]).is_ok());
        assert_eq!(l.value(&vec![0; (1 << 20) + 1]).unwrap_err().code(), Code::ResourceExhausted);
        assert_eq!(l.batch(1001, 0).unwrap_err().code(), Code::ResourceExhausted);
        assert_eq!(l.batch(0, 0).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn keyspace_names() {
        assert_eq!(keyspace_name("").unwrap(), "default");
        assert!(keyspace_name("sensor_readings-2").is_ok());
        assert!(keyspace_name(&"a".repeat(64)).is_ok());
        assert!(keyspace_name(&"a".repeat(65)).is_err());
        let e = keyspace_name("Bad!").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("'B'"));
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let key = b"key\x00\xff".to_vec();
        assert_eq!(parse_page_token(&page_token(&key)).unwrap(), key);
        for bad in ["", "!!!", "AA", &URL_SAFE_NO_PAD.encode([9u8, 1, 2])] {
            assert_eq!(parse_page_token(bad).unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
        }
    }
}
