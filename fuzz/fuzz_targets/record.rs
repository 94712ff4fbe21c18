//! `spin_sessions_core::SessionRecord::decode` over arbitrary bytes (what a
//! corrupted or foreign store could hold). Properties:
//! - it never panics;
//! - a decoded record has the current format (`RECORD_FORMAT`), whether
//!   it was stored in it or in format 1;
//! - it encodes and decodes again to an equal record, and that second
//!   encoding is byte-for-byte the first (the encoding is canonical).
//!   Values are kept as the JSON text they were stored as, never parsed
//!   into numbers, so floats come back to the last digit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spin_sessions_core::{DecodeError, SessionRecord, RECORD_FORMAT};

fuzz_target!(|data: &[u8]| {
    match SessionRecord::decode(data) {
        Ok(record) => {
            assert_eq!(record.format, RECORD_FORMAT);
            let encoded = record.encode();
            let again = SessionRecord::decode(&encoded).expect("a re-encoded record decodes");
            assert_eq!(again, record);
            assert_eq!(again.encode(), encoded, "the encoding is not canonical");
        }
        Err(DecodeError::UnknownFormat(format)) => assert_ne!(format, RECORD_FORMAT),
        Err(DecodeError::Malformed(_)) => {}
    }
});
