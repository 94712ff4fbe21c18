//! What the store holds for one session, and how it is encoded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The current record format. A record of any other format is not read
/// (it may come from a newer release); the session is then treated as
/// unknown and replaced, never half-understood.
pub const RECORD_FORMAT: u32 = 1;

/// One session's state, stored under the session's record key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Encoding version, [`RECORD_FORMAT`] when written by this code.
    pub format: u32,
    /// How many updates have been applied since the record was created.
    /// Every write changes it, so a compare-and-swap never mistakes a
    /// rewritten record for the one it read.
    pub writes: u64,
    /// When the session was created (Unix seconds).
    pub created_at: i64,
    /// When a request of the session was last recorded (Unix seconds); kept
    /// to the touch granularity of [`crate::ExpiryPolicy`].
    pub last_seen_at: i64,
    /// When the session's answers were submitted, if they were.
    pub submitted_at: Option<i64>,
    /// The token every form of this session must carry (CSRF protection).
    pub csrf_token: String,
    /// The session's stored form values, by field name.
    pub values: BTreeMap<String, String>,
    /// The random ids of the last few writes, newest last: how a writer
    /// tells that its compare-and-swap took effect when the store does not
    /// say so ([`crate::store::swap_and_confirm`]).
    #[serde(default)]
    pub recent_writes: Vec<String>,
}

/// Why stored bytes are not a record this code can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not a record at all.
    Malformed(String),
    /// A record of a format this code does not know.
    UnknownFormat(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed session record: {why}"),
            DecodeError::UnknownFormat(n) => write!(f, "session record of unknown format {n}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Just the format number, read first so that a future format is reported
/// as such rather than as garbage.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

impl SessionRecord {
    /// A fresh record created at `now`.
    pub fn new(now: i64, csrf_token: String) -> Self {
        SessionRecord {
            format: RECORD_FORMAT,
            writes: 0,
            created_at: now,
            last_seen_at: now,
            submitted_at: None,
            csrf_token,
            values: BTreeMap::new(),
            recent_writes: Vec::new(),
        }
    }

    /// The stored form of the record (JSON: readable when debugging a store).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Reads a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: FormatOnly =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if header.format != RECORD_FORMAT {
            return Err(DecodeError::UnknownFormat(header.format));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    /// True when the write with id `write_id` is this record or one of the
    /// last few it was built on.
    pub fn includes_write(&self, write_id: &str) -> bool {
        self.recent_writes.iter().any(|id| id == write_id)
    }

    /// A stored value, if the session has one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionRecord {
        let mut record = SessionRecord::new(1_700_000_000, "t".repeat(32));
        record.writes = 7;
        record.submitted_at = Some(1_700_000_100);
        record
            .values
            .insert("v1".into(), "Ada <Lovelace> & \"co\" é".into());
        record.values.insert("v2".into(), String::new());
        record
    }

    #[test]
    fn round_trip() {
        let record = sample();
        assert_eq!(SessionRecord::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn unknown_format_is_reported_as_such() {
        let mut record = sample();
        record.format = 2;
        assert_eq!(
            SessionRecord::decode(&record.encode()),
            Err(DecodeError::UnknownFormat(2))
        );
        // Even when the rest would not parse as format 1.
        assert_eq!(
            SessionRecord::decode(br#"{"format":9,"something":"else"}"#),
            Err(DecodeError::UnknownFormat(9))
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for bytes in [
            &b""[..],
            b"\xff\xfe",
            b"null",
            b"{}",
            b"{\"format\":1}",
            b"[1,2]",
        ] {
            assert!(
                matches!(SessionRecord::decode(bytes), Err(DecodeError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }
}
