//! The session cookie: finding it in `Cookie` headers, writing `Set-Cookie`.

use crate::id::SessionId;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "session";

/// How many `session` cookies of one request are looked at. Browsers send
/// more than one only when cookies of several paths or domains share the
/// name; a request with hundreds is hostile and gets no more attention.
const MAX_CANDIDATES: usize = 4;

/// Finds the session identifier a request carries: the first `session`
/// cookie, over all its `Cookie` headers, whose value has the exact shape
/// of an identifier we issue. Malformed pairs are skipped; a malformed
/// header is simply no cookie.
pub fn find_session_id<'a>(cookie_headers: impl IntoIterator<Item = &'a str>) -> Option<SessionId> {
    cookie_headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE_NAME).then(|| strip_quotes(value.trim()))
        })
        .take(MAX_CANDIDATES)
        .find_map(SessionId::parse)
}

/// RFC 6265 lets a cookie value sit between double quotes.
fn strip_quotes(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The attributes of the session cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    /// Add `Secure`: the browser then sends the cookie over https only.
    pub secure: bool,
    /// `Max-Age` in seconds for a persistent cookie; `None` for a cookie
    /// that lives as long as the browser session.
    pub max_age_secs: Option<u64>,
}

impl CookieSettings {
    /// The `Set-Cookie` value that hands `id` to the browser.
    pub fn set_cookie(&self, id: &SessionId) -> String {
        let mut value = format!(
            "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Lax",
            id.as_str()
        );
        if let Some(max_age) = self.max_age_secs {
            value.push_str(&format!("; Max-Age={max_age}"));
        }
        if self.secure {
            value.push_str("; Secure");
        }
        value
    }

    /// The `Set-Cookie` value that makes the browser drop the cookie.
    pub fn expire_cookie(&self) -> String {
        let mut value = format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
        if self.secure {
            value.push_str("; Secure");
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let header = format!("theme=dark; session={}; lang=en", id('a'));
        assert_eq!(
            find_session_id([header.as_str()]).unwrap().as_str(),
            id('a')
        );
    }

    #[test]
    fn tolerates_odd_spacing_quotes_and_several_headers() {
        let quoted = format!("  session = \"{}\" ", id('b'));
        assert_eq!(
            find_session_id([quoted.as_str()]).unwrap().as_str(),
            id('b')
        );
        let second = format!("session={}", id('c'));
        let found = find_session_id(["other=1", second.as_str()]).unwrap();
        assert_eq!(found.as_str(), id('c'));
    }

    #[test]
    fn malformed_values_are_no_cookie() {
        for header in [
            "",
            ";;;",
            "session",
            "session=",
            "session=short",
            "Session=AAAA",
            "session=\"unterminated",
            "=value",
            "\u{0}session=\u{0}",
        ] {
            assert!(find_session_id([header]).is_none(), "{header:?}");
        }
        let too_long = format!("session={}x", id('a'));
        assert!(find_session_id([too_long.as_str()]).is_none());
        let bad_char = format!("session={}%", &id('a')[1..]);
        assert!(find_session_id([bad_char.as_str()]).is_none());
    }

    #[test]
    fn the_first_well_formed_duplicate_wins() {
        let header = format!("session=junk; session={}; session={}", id('d'), id('e'));
        assert_eq!(
            find_session_id([header.as_str()]).unwrap().as_str(),
            id('d')
        );
    }

    #[test]
    fn hundreds_of_cookies_are_not_all_examined() {
        let mut header: String = (0..500).map(|i| format!("session=x{i}; ")).collect();
        header.push_str(&format!("session={}", id('f')));
        assert!(find_session_id([header.as_str()]).is_none());
    }

    #[test]
    fn set_cookie_attributes() {
        let id = SessionId::parse(&id('g')).unwrap();
        let plain = CookieSettings {
            secure: false,
            max_age_secs: None,
        };
        assert_eq!(
            plain.set_cookie(&id),
            format!("session={}; Path=/; HttpOnly; SameSite=Lax", id.as_str())
        );
        let persistent = CookieSettings {
            secure: true,
            max_age_secs: Some(600),
        };
        let value = persistent.set_cookie(&id);
        assert!(value.ends_with("; Max-Age=600; Secure"), "{value}");
        assert_eq!(
            persistent.expire_cookie(),
            "session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
