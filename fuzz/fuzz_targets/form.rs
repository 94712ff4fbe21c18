//! `sessions_tutorial::form::decode` (strict `application/x-www-form-urlencoded`)
//! over arbitrary bytes. Properties:
//! - it never panics;
//! - what it accepts obeys its rules: every value at most
//!   `MAX_FIELD_BYTES` bytes, no control characters in values except tab,
//!   no name twice;
//! - the accepted pairs, encoded again (once with `+` for spaces and
//!   `%XX` for everything outside the unreserved set, once with every byte
//!   as `%XX`), decode to the same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessions_tutorial::form::{decode, MAX_FIELD_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = decode(data) else {
        return;
    };
    for (i, (name, value)) in pairs.iter().enumerate() {
        assert!(value.len() <= MAX_FIELD_BYTES, "value of {name:?} too long");
        assert!(
            !value.chars().any(|c| c.is_control() && c != '\t'),
            "control character in {value:?}"
        );
        assert!(
            !pairs[..i].iter().any(|(earlier, _)| earlier == name),
            "{name:?} twice"
        );
    }
    for encode_byte in [encode_plain as fn(u8, &mut String), encode_all] {
        let body = encode(&pairs, encode_byte);
        assert_eq!(
            decode(body.as_bytes()).as_ref(),
            Ok(&pairs),
            "round trip through {body:?}"
        );
    }
});

fn encode(pairs: &[(String, String)], encode_byte: fn(u8, &mut String)) -> String {
    let mut body = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            body.push('&');
        }
        name.bytes().for_each(|b| encode_byte(b, &mut body));
        body.push('=');
        value.bytes().for_each(|b| encode_byte(b, &mut body));
    }
    body
}

/// What a browser sends: unreserved bytes as they are, space as `+`.
fn encode_plain(b: u8, out: &mut String) {
    match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
            out.push(char::from(b))
        }
        b' ' => out.push('+'),
        _ => encode_all(b, out),
    }
}

/// Every byte percent-encoded, hex digits in lower case (the decoder must
/// take either case).
fn encode_all(b: u8, out: &mut String) {
    out.push_str(&format!("%{b:02x}"));
}
