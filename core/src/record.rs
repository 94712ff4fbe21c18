//! What the store holds for one session, and how it is encoded.

use serde::{Deserialize, Serialize};

use crate::values::{StoredValue, Values};

/// The current record format. Format 1 records (the tutorial's first
/// release: string values and `submitted_at`) are read and rewritten as
/// format 2 on their next write. A record of any other format is not read
/// (it may come from a newer release); the session is then treated as
/// unknown and replaced, never half-understood.
pub const RECORD_FORMAT: u32 = 2;

/// One session's state, stored under the session's record key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The token every state-changing request of this session must carry
    /// (CSRF protection).
    pub csrf_token: String,
    /// A "remember me" lifetime: when set, the session lives this many
    /// seconds past its last request instead of the policy's timeouts, and
    /// its cookie is persistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remember_secs: Option<u64>,
    /// The application's values, by key.
    #[serde(default)]
    pub data: Values,
    /// One-shot values: set by one request, taken by a later one.
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub flash: Values,
    /// The random ids of the last few writes, newest last: the last is the
    /// id of version `writes`, the one before of `writes - 1`, and so on.
    /// How a writer tells that its compare-and-swap took effect when the
    /// store does not say so ([`crate::store::judge`]).
    #[serde(default)]
    pub recent_writes: Vec<String>,
    /// How the session ended, once it has: a tombstone the record stays as
    /// for a while ([`Ending`]). An ended record counts as expired; a
    /// concurrent update of it finds the session gone instead of writing to
    /// an identifier that is no longer in use.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "ending::deserialize"
    )]
    pub ended: Option<Ending>,
}

/// How and when a session ended while its record stays in the store.
///
/// The record of an ended session is not deleted by whoever ends it: it
/// stays as a tombstone until the sweep removes it, at least
/// [`crate::index::IN_FLIGHT_SECS`] later, so that a request that wrote it
/// and reads it back finds its own write instead of nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// When it ended (Unix seconds).
    pub at: i64,
    /// Why.
    pub why: EndReason,
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its identifier was replaced ([`crate::SessionManager::cycle`]); the
    /// data lives on under the new one.
    Rotated,
    /// It was evicted to make room under the cap, by the sweep step whose
    /// plan has this id ([`crate::index`]).
    Evicted(String),
}

mod ending {
    use super::{EndReason, Ending};
    use serde::{Deserialize, Deserializer};

    /// Records written before endings had a reason said `"ended": true`
    /// (identifier replaced); they are read as rotated at an unknown time
    /// long past.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Legacy(bool),
        Ending(Ending),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ending>, D::Error> {
        Ok(match Option::<Stored>::deserialize(d)? {
            None | Some(Stored::Legacy(false)) => None,
            Some(Stored::Legacy(true)) => Some(Ending {
                at: i64::MIN / 2,
                why: EndReason::Rotated,
            }),
            Some(Stored::Ending(ending)) => Some(ending),
        })
    }
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

/// A format 1 record, as the first release wrote it.
#[derive(Deserialize)]
struct RecordV1 {
    writes: u64,
    created_at: i64,
    last_seen_at: i64,
    submitted_at: Option<i64>,
    csrf_token: String,
    /// Strings only; as JSON text they are already the values format 2
    /// stores.
    values: Values,
    #[serde(default)]
    recent_writes: Vec<String>,
}

impl From<RecordV1> for SessionRecord {
    /// Format 1's fields become data: the string values under their names,
    /// `submitted_at` as a number, as the tutorial now stores them.
    fn from(old: RecordV1) -> Self {
        let mut data = old.values;
        if let Some(at) = old.submitted_at {
            data.insert("submitted_at".into(), StoredValue::from(at));
        }
        SessionRecord {
            format: RECORD_FORMAT,
            writes: old.writes,
            created_at: old.created_at,
            last_seen_at: old.last_seen_at,
            csrf_token: old.csrf_token,
            remember_secs: None,
            data,
            flash: Values::new(),
            recent_writes: old.recent_writes,
            ended: None,
        }
    }
}

fn malformed(error: serde_json::Error) -> DecodeError {
    DecodeError::Malformed(error.to_string())
}

fn decode_format_1(bytes: &[u8]) -> Result<SessionRecord, DecodeError> {
    let old: RecordV1 = serde_json::from_slice(bytes).map_err(malformed)?;
    if !old.values.iter().all(|(_, value)| value.is_string()) {
        return Err(DecodeError::Malformed(
            "format 1 values must be strings".into(),
        ));
    }
    Ok(SessionRecord::from(old))
}

impl SessionRecord {
    /// A fresh record created at `now`.
    pub fn new(now: i64, csrf_token: String) -> Self {
        SessionRecord {
            format: RECORD_FORMAT,
            writes: 0,
            created_at: now,
            last_seen_at: now,
            csrf_token,
            remember_secs: None,
            data: Values::new(),
            flash: Values::new(),
            recent_writes: Vec::new(),
            ended: None,
        }
    }

    /// The stored form of the record (JSON: readable when debugging a store).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Reads a stored record, of this format or of format 1.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        // The usual case, in one parse: a record of this format.
        let error = match serde_json::from_slice::<SessionRecord>(bytes) {
            Ok(record) if record.format == RECORD_FORMAT => return Ok(record),
            Ok(_) => None,
            Err(error) => Some(error),
        };
        // Otherwise the format number says what the bytes were meant to be.
        let header: FormatOnly = serde_json::from_slice(bytes).map_err(malformed)?;
        match header.format {
            RECORD_FORMAT => Err(error.map_or_else(
                || DecodeError::Malformed("the format number is given twice".into()),
                malformed,
            )),
            1 => decode_format_1(bytes),
            other => Err(DecodeError::UnknownFormat(other)),
        }
    }

    /// True when the write with id `write_id` is this record or one of the
    /// last few it was built on.
    pub fn includes_write(&self, write_id: &str) -> bool {
        self.recent_writes.iter().any(|id| id == write_id)
    }

    /// The record's version: how many writes built it since its creation
    /// (a compare-and-swap built on version `v` can only land as `v + 1`).
    pub fn version(&self) -> u64 {
        self.writes
    }

    /// True when the session has ended (its record is a tombstone).
    pub fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// A stored value that is a string, if the session has one.
    pub fn text(&self, key: &str) -> Option<String> {
        self.data.get(key).and_then(|value| value.to().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionRecord {
        let mut record = SessionRecord::new(1_700_000_000, "t".repeat(32));
        record.writes = 7;
        record.remember_secs = Some(86_400);
        record
            .data
            .insert("v1".into(), "Ada <Lovelace> & \"co\" é".into());
        record.data.insert("visits".into(), StoredValue::from(3));
        record.flash.insert("notice".into(), "hello".into());
        record
    }

    #[test]
    fn round_trip() {
        let record = sample();
        assert_eq!(SessionRecord::decode(&record.encode()).unwrap(), record);
        assert_eq!(
            record.text("v1").as_deref(),
            Some("Ada <Lovelace> & \"co\" é")
        );
        assert_eq!(record.text("visits"), None, "a number is not text");
    }

    #[test]
    fn format_1_records_are_read_as_data() {
        let v1 = br#"{"format":1,"writes":4,"created_at":10,"last_seen_at":20,
            "submitted_at":15,"csrf_token":"tok","values":{"v1":"Ada","v2":""},
            "recent_writes":["abc"]}"#;
        let record = SessionRecord::decode(v1).unwrap();
        assert_eq!(record.format, RECORD_FORMAT);
        assert_eq!(
            (record.writes, record.created_at, record.last_seen_at),
            (4, 10, 20)
        );
        assert_eq!(record.csrf_token, "tok");
        assert_eq!(record.text("v1").as_deref(), Some("Ada"));
        assert_eq!(record.text("v2").as_deref(), Some(""));
        assert_eq!(
            record.data.get("submitted_at"),
            Some(&StoredValue::from(15))
        );
        assert!(record.includes_write("abc"));
    }

    #[test]
    fn endings_round_trip_and_legacy_ones_read_as_rotated() {
        let mut record = sample();
        for why in [EndReason::Rotated, EndReason::Evicted("plan".into())] {
            record.ended = Some(Ending { at: 5, why });
            assert_eq!(SessionRecord::decode(&record.encode()).unwrap(), record);
        }
        record.ended = None;
        let mut legacy: serde_json::Value = serde_json::from_slice(&record.encode()).unwrap();
        legacy["ended"] = true.into();
        let read = SessionRecord::decode(legacy.to_string().as_bytes()).unwrap();
        assert_eq!(read.ended.map(|e| e.why), Some(EndReason::Rotated));
        legacy["ended"] = false.into();
        let read = SessionRecord::decode(legacy.to_string().as_bytes()).unwrap();
        assert_eq!(read.ended, None);
    }

    #[test]
    fn unknown_format_is_reported_as_such() {
        let mut record = sample();
        record.format = 3;
        assert_eq!(
            SessionRecord::decode(&record.encode()),
            Err(DecodeError::UnknownFormat(3))
        );
        // Even when the rest would not parse as a known format.
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
            b"{\"format\":2}",
            b"{\"format\":2,\"data\":[]}",
            br#"{"format":1,"writes":1,"created_at":1,"last_seen_at":1,"csrf_token":"t","values":{"v1":7}}"#,
            b"[1,2]",
        ] {
            assert!(
                matches!(SessionRecord::decode(bytes), Err(DecodeError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }
}
