//! Strict decoding of form bodies: `application/x-www-form-urlencoded`
//! ([`decode`]) and `multipart/form-data` ([`decode_multipart`]), as the
//! tutorial's sample program takes both.
//!
//! Stricter than browsers' lenient parsers on purpose: a stray `%`, bytes
//! that are not UTF-8, a malformed part or a field given twice are errors
//! the user is told about, never guessed at.

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
    /// A `multipart/form-data` body that does not follow RFC 7578, or
    /// whose content type names no boundary.
    MalformedMultipart(&'static str),
    /// A file in a `multipart/form-data` body: no form here uploads one.
    FileUpload(String),
}

impl FormError {
    /// True for the errors of the body's syntax (answered with 400); the
    /// others are about its fields' values (422).
    pub fn is_syntax(&self) -> bool {
        matches!(
            self,
            FormError::BadPercentEncoding | FormError::MalformedMultipart(_)
        )
    }
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
            FormError::MalformedMultipart(why) => {
                write!(f, "the multipart form body is malformed: {why}")
            }
            FormError::FileUpload(name) => write!(f, "field {name} is a file; no files are taken"),
        }
    }
}

/// The media types a form may be posted as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormType {
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data`, with its boundary if the header names one.
    Multipart(Option<String>),
}

impl FormType {
    /// The form type a `Content-Type` header value names, if it is one.
    pub fn of(content_type: &str) -> Option<FormType> {
        let mut params = content_type.split(';');
        let media_type = params.next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Some(FormType::UrlEncoded);
        }
        if !media_type.eq_ignore_ascii_case("multipart/form-data") {
            return None;
        }
        let boundary = params.find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim().eq_ignore_ascii_case("boundary").then(|| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
                    .to_owned()
            })
        });
        Some(FormType::Multipart(boundary))
    }

    /// Decodes `body` as a form of this type.
    pub fn decode(&self, body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
        match self {
            FormType::UrlEncoded => decode(body),
            FormType::Multipart(Some(boundary)) => decode_multipart(body, boundary),
            FormType::Multipart(None) => Err(FormError::MalformedMultipart("no boundary")),
        }
    }
}

/// Decodes a whole `application/x-www-form-urlencoded` body into its
/// `(name, value)` pairs, in order.
pub fn decode(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut fields = Fields::default();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        fields.add(decode_component(raw_name)?, decode_component(raw_value)?)?;
    }
    Ok(fields.0)
}

/// Decodes a whole `multipart/form-data` body (RFC 7578) into its text
/// fields, in order. Every part must name its field; a part that carries a
/// file is refused, and so is anything after the closing delimiter but
/// line breaks.
pub fn decode_multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>, FormError> {
    let malformed = FormError::MalformedMultipart;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(malformed("the boundary must be 1 to 70 characters"));
    }
    let delimiter = format!("--{boundary}");
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .ok_or(malformed("the body does not start with the boundary"))?;
    let separator = format!("\r\n--{boundary}");
    let mut fields = Fields::default();
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            return if after.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                Ok(fields.0)
            } else {
                Err(malformed("data after the closing boundary"))
            };
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or(malformed("a boundary is not followed by a line break"))?;
        let end = find(rest, separator.as_bytes()).ok_or(malformed("a part is not closed"))?;
        let (name, value) = multipart_field(&rest[..end])?;
        fields.add(name, value)?;
        rest = &rest[end + separator.len()..];
    }
}

/// The field name and the value of one part (its headers, a blank line,
/// its content).
fn multipart_field(part: &[u8]) -> Result<(String, String), FormError> {
    let malformed = FormError::MalformedMultipart;
    let header_end = find(part, b"\r\n\r\n").ok_or(malformed("a part has no blank line"))?;
    let headers = std::str::from_utf8(&part[..header_end])
        .map_err(|_| malformed("a part header is not text"))?;
    let mut name = None;
    for line in headers.split("\r\n") {
        let (header, value) = line
            .split_once(':')
            .ok_or(malformed("a part header has no colon"))?;
        if !header.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut params = value.split(';');
        if !params
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("form-data")
        {
            return Err(malformed("a part is not form-data"));
        }
        for param in params {
            let (key, raw) = param
                .split_once('=')
                .ok_or(malformed("a bad disposition parameter"))?;
            let raw = raw.trim();
            let unquoted = raw
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(raw);
            match key.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(unquoted.to_owned()),
                "filename" => {
                    return Err(FormError::FileUpload(printable(
                        name.as_deref().unwrap_or(unquoted),
                    )))
                }
                _ => {}
            }
        }
    }
    let name = name.ok_or(malformed("a part names no field"))?;
    let value =
        String::from_utf8(part[header_end + 4..].to_vec()).map_err(|_| FormError::NotUtf8)?;
    Ok((name, value))
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The fields decoded so far, with the checks every field passes.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn add(&mut self, name: String, value: String) -> Result<(), FormError> {
        if value.len() > MAX_FIELD_BYTES {
            return Err(FormError::FieldTooLong(printable(&name)));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(FormError::ControlCharacter(printable(&name)));
        }
        if self.0.iter().any(|(n, _)| *n == name) {
            return Err(FormError::Duplicate(printable(&name)));
        }
        self.0.push((name, value));
        Ok(())
    }
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

    fn multipart(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut body = String::new();
        for (headers, value) in parts {
            body.push_str(&format!("--XyZ\r\n{headers}\r\n\r\n{value}\r\n"));
        }
        body.push_str("--XyZ--\r\n");
        body.into_bytes()
    }

    #[test]
    fn multipart_fields_as_browsers_send_them() {
        let body = multipart(&[
            (
                r#"Content-Disposition: form-data; name="csrf_token""#,
                "tok",
            ),
            (
                "content-disposition: form-data; name=v1\r\nContent-Type: text/plain",
                "Ada\r\nLovelace?",
            ),
            (r#"Content-Disposition: form-data; name="v2""#, ""),
        ]);
        // A value with a line break is decoded, then refused like any other.
        assert_eq!(
            decode_multipart(&body, "XyZ"),
            Err(FormError::ControlCharacter("v1".into()))
        );
        let body = multipart(&[
            (
                r#"Content-Disposition: form-data; name="csrf_token""#,
                "tok",
            ),
            (r#"Content-Disposition: form-data; name="v1""#, "Ada é"),
            (r#"Content-Disposition: form-data; name="v2""#, ""),
        ]);
        assert_eq!(
            decode_multipart(&body, "XyZ").unwrap(),
            vec![
                ("csrf_token".into(), "tok".into()),
                ("v1".into(), "Ada é".into()),
                ("v2".into(), "".into()),
            ]
        );
        let form_type = FormType::of("multipart/form-data; boundary=\"XyZ\"").unwrap();
        assert_eq!(form_type, FormType::Multipart(Some("XyZ".into())));
        assert_eq!(form_type.decode(&body).unwrap().len(), 3);
        // The empty form: just the closing delimiter.
        assert!(decode_multipart(b"--XyZ--", "XyZ").unwrap().is_empty());
    }

    #[test]
    fn malformed_multipart_is_a_syntax_error() {
        let named = r#"Content-Disposition: form-data; name="v1""#;
        for (body, boundary) in [
            (b"--x--".to_vec(), "XyZ"),
            (b"junk--XyZ--".to_vec(), "XyZ"),
            (
                b"--XyZ\r\nContent-Disposition: form-data; name=v1\r\n\r\nno end".to_vec(),
                "XyZ",
            ),
            (multipart(&[("Content-Type: text/plain", "x")]), "XyZ"),
            (
                multipart(&[("Content-Disposition: attachment; name=v1", "x")]),
                "XyZ",
            ),
            (multipart(&[("no colon here", "x")]), "XyZ"),
            (
                [multipart(&[(named, "x")]), b"trailing".to_vec()].concat(),
                "XyZ",
            ),
            (
                b"--XyZ\r\nContent-Disposition: form-data; name=v1\r\nx\r\n--XyZ--".to_vec(),
                "XyZ",
            ),
            (multipart(&[(named, "x")]), ""),
        ] {
            let err = decode_multipart(&body, boundary).unwrap_err();
            assert!(
                err.is_syntax(),
                "{err:?} for {:?}",
                String::from_utf8_lossy(&body)
            );
        }
        assert_eq!(
            FormType::of("multipart/form-data").unwrap().decode(b""),
            Err(FormError::MalformedMultipart("no boundary"))
        );
    }

    #[test]
    fn multipart_values_pass_the_same_checks() {
        let named = |name: &str| format!(r#"Content-Disposition: form-data; name="{name}""#);
        let long = "a".repeat(MAX_FIELD_BYTES + 1);
        for (body, expected) in [
            (
                multipart(&[(&named("v1"), "a"), (&named("v1"), "b")]),
                FormError::Duplicate("v1".into()),
            ),
            (
                multipart(&[(&named("v1"), &long)]),
                FormError::FieldTooLong("v1".into()),
            ),
            (
                multipart(&[(&format!("{}; filename=\"a.txt\"", named("v1")), "x")]),
                FormError::FileUpload("v1".into()),
            ),
        ] {
            assert_eq!(decode_multipart(&body, "XyZ"), Err(expected));
        }
        let mut not_utf8 = b"--XyZ\r\nContent-Disposition: form-data; name=v1\r\n\r\n".to_vec();
        not_utf8.extend_from_slice(b"\xff\xfe\r\n--XyZ--");
        assert_eq!(decode_multipart(&not_utf8, "XyZ"), Err(FormError::NotUtf8));
    }

    #[test]
    fn form_types() {
        assert_eq!(
            FormType::of("application/x-www-form-urlencoded; charset=UTF-8"),
            Some(FormType::UrlEncoded)
        );
        assert_eq!(FormType::of("text/plain"), None);
        assert_eq!(FormType::of(""), None);
        assert_eq!(
            FormType::of("Multipart/Form-Data; charset=utf-8; boundary=ab"),
            Some(FormType::Multipart(Some("ab".into())))
        );
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
