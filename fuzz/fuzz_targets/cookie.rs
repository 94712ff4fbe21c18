//! `spin_sessions_core::cookie::find_session_id` over arbitrary `Cookie` headers.
//!
//! The input is text, one header per line (lossily UTF-8: headers reach the
//! parser as `&str`). Properties:
//! - it never panics;
//! - an identifier it returns is exactly 64 ASCII alphanumerics, occurs in
//!   the input, and is the (trimmed, unquoted) value of one of the first four
//!   `session` pairs, as the parser promises to look at no more;
//! - a well-formed `session` cookie put in front of the same headers is
//!   always the one found, whatever follows it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spin_sessions_core::cookie::{find_session_id, COOKIE_NAME};

/// A well-formed identifier, as `SessionId::generate` would draw.
const GOOD_ID: &str = "Z9y8X7w6V5u4T3s2R1q0PpOoNnMmLlKkJjIiHhGgFfEeDdCcBbAa0123456789zz";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let headers: Vec<&str> = text.split('\n').collect();

    if let Some(id) = find_session_id(headers.iter().copied()) {
        let id = id.as_str();
        assert_eq!(id.len(), 64, "identifier length");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id:?}");
        assert!(headers.iter().any(|h| h.contains(id)), "not in the input");
        let first_candidates: Vec<&str> = headers
            .iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                (name.trim() == COOKIE_NAME).then(|| unquote(value.trim()))
            })
            .take(4)
            .collect();
        assert!(
            first_candidates.contains(&id),
            "not one of the first four session cookies: {first_candidates:?}"
        );
    }

    // A well-formed cookie first wins over anything after it, on the same
    // header or on later ones.
    let mut with_good: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    with_good[0] = format!("{COOKIE_NAME}={GOOD_ID}; {}", with_good[0]);
    let found = find_session_id(with_good.iter().map(String::as_str));
    assert_eq!(found.as_ref().map(|id| id.as_str()), Some(GOOD_ID));
});

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}
