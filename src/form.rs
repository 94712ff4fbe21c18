//! Strict decoding of `application/x-www-form-urlencoded` bodies.
//!
//! Stricter than browsers' lenient parsers on purpose: a stray `%`, bytes
//! that are not UTF-8 or a field given twice are errors the user is told
//! about, never guessed at.

/// The longest value a form field may have, in bytes (after decoding).
pub const MAX_FIELD_BYTES: usize = 1024;

/// Why a form body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// A name or value that is not UTF-8 once decoded.
    NotUtf8,
    /// A value longer than [`MAX_FIELD_BYTES`].
    FieldTooLong(String),
    /// The same field twice.
    Duplicate(String),
    /// A value with control characters (NUL, line breaks, escape…), which
    /// no text field can produce.
    ControlCharacter(String),
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormError::BadPercentEncoding => {
                f.write_str("the form body has invalid percent-encoding")
            }
            FormError::NotUtf8 => f.write_str("form fields must be UTF-8 text"),
            FormError::FieldTooLong(name) => {
                write!(f, "field {name} is longer than {MAX_FIELD_BYTES} bytes")
            }
            FormError::Duplicate(name) => write!(f, "field {name} is given more than once"),
            FormError::ControlCharacter(name) => {
                write!(f, "field {name} contains control characters")
            }
        }
    }
}

/// Decodes a whole form body into its `(name, value)` pairs, in order.
pub fn decode(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = decode_component(raw_name)?;
        let value = decode_component(raw_value)?;
        if value.len() > MAX_FIELD_BYTES {
            return Err(FormError::FieldTooLong(printable(&name)));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(FormError::ControlCharacter(printable(&name)));
        }
        if fields.iter().any(|(n, _)| *n == name) {
            return Err(FormError::Duplicate(printable(&name)));
        }
        fields.push((name, value));
    }
    Ok(fields)
}

/// A field name fit for an error message: short, and only visible ASCII.
fn printable(name: &str) -> String {
    name.chars()
        .take(32)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&b| hex_digit(b));
                let lo = raw.get(i + 2).and_then(|&b| hex_digit(b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(FormError::BadPercentEncoding);
                };
                bytes.push(hi << 4 | lo);
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| FormError::NotUtf8)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &str) -> Vec<(String, String)> {
        decode(body.as_bytes()).unwrap()
    }

    #[test]
    fn decodes_plus_percent_and_empty_values() {
        assert_eq!(
            pairs("v1=Ada+Lovelace&v2=%3Cb%3E%20%C3%A9&DONE=&flag"),
            vec![
                ("v1".into(), "Ada Lovelace".into()),
                ("v2".into(), "<b> é".into()),
                ("DONE".into(), "".into()),
                ("flag".into(), "".into()),
            ]
        );
        assert!(pairs("").is_empty());
        assert!(pairs("&&").is_empty());
        assert_eq!(pairs("a=b=c"), vec![("a".into(), "b=c".into())]);
    }

    #[test]
    fn rejects_bad_percent_encoding() {
        for body in ["v1=%", "v1=%4", "v1=%zz", "%g1=x", "v1=100%"] {
            assert_eq!(
                decode(body.as_bytes()),
                Err(FormError::BadPercentEncoding),
                "{body}"
            );
        }
    }

    #[test]
    fn rejects_non_utf8() {
        assert_eq!(decode(b"v1=%FF"), Err(FormError::NotUtf8));
        assert_eq!(decode(b"v1=\xff"), Err(FormError::NotUtf8));
        assert_eq!(decode(b"%C3=x"), Err(FormError::NotUtf8));
    }

    #[test]
    fn field_length_limit_is_in_decoded_bytes() {
        let at_limit = format!("v1={}", "a".repeat(MAX_FIELD_BYTES));
        assert!(decode(at_limit.as_bytes()).is_ok());
        let over = format!("v1={}", "a".repeat(MAX_FIELD_BYTES + 1));
        assert_eq!(
            decode(over.as_bytes()),
            Err(FormError::FieldTooLong("v1".into()))
        );
        // 400 encoded "é" are 800 bytes decoded: fine; 600 are 1200: too long.
        assert!(decode(format!("v1={}", "%C3%A9".repeat(400)).as_bytes()).is_ok());
        assert!(decode(format!("v1={}", "%C3%A9".repeat(600)).as_bytes()).is_err());
    }

    #[test]
    fn rejects_duplicates() {
        assert_eq!(decode(b"v1=a&v1=b"), Err(FormError::Duplicate("v1".into())));
    }

    #[test]
    fn rejects_control_characters() {
        for body in [
            "v1=a%00b",
            "v1=a%0D%0ASet-Cookie:+x",
            "v1=%1B[31m",
            "v1=%C2%85",
        ] {
            assert_eq!(
                decode(body.as_bytes()),
                Err(FormError::ControlCharacter("v1".into())),
                "{body}"
            );
        }
        assert!(decode(b"v1=tab%09ok").is_ok());
    }
}
