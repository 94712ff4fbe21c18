//! The session cookie: its settings, finding it in `Cookie` headers,
//! writing `Set-Cookie`.

use crate::id::CookieId;

/// The default name of the session cookie.
pub const COOKIE_NAME: &str = "session";

/// How many cookies of the session's name one request gets looked at.
/// Browsers send more than one only when cookies of several paths or
/// domains share the name; a request with hundreds is hostile and gets no
/// more attention.
const MAX_CANDIDATES: usize = 4;

/// Finds the session identifier a request carries: the first cookie named
/// `name`, over all its `Cookie` headers, whose value has the exact shape
/// of an identifier we issue. Malformed pairs are skipped; a malformed
/// header is simply no cookie.
pub fn find_cookie<'a>(
    cookie_headers: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Option<CookieId> {
    cookie_headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| {
            let (pair_name, value) = pair.split_once('=')?;
            (pair_name.trim() == name).then(|| strip_quotes(value.trim()))
        })
        .take(MAX_CANDIDATES)
        .find_map(CookieId::parse)
}

/// [`find_cookie`] under the default name.
pub fn find_session_id<'a>(cookie_headers: impl IntoIterator<Item = &'a str>) -> Option<CookieId> {
    find_cookie(cookie_headers, COOKIE_NAME)
}

/// RFC 6265 lets a cookie value sit between double quotes.
fn strip_quotes(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only with requests from the site itself.
    Strict,
    /// Also sent on top-level navigations from other sites (the default).
    Lax,
    /// Sent with every request; needs `Secure`.
    None,
}

/// When the cookie gets the `Secure` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secure {
    /// When the request came over https (the default).
    Auto,
    /// Always: the site is only ever served over https.
    Always,
    /// Never (plain-http development only).
    Never,
}

/// How the session cookie is named and what attributes it carries. It is
/// always `HttpOnly`: no script needs a session identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieConfig {
    /// The cookie's name. A name starting with `__Host-` gets what
    /// browsers require of it: `Secure`, `Path=/` and no `Domain`.
    pub name: String,
    /// `Path`.
    pub path: String,
    /// `Domain`, if the cookie is for subdomains too.
    pub domain: Option<String>,
    /// `SameSite`.
    pub same_site: SameSite,
    /// `Secure`.
    pub secure: Secure,
    /// `Max-Age` for a persistent cookie; `None` for one that ends with the
    /// browser session. A remembered session's cookie is persistent anyway.
    pub max_age_secs: Option<u64>,
}

impl Default for CookieConfig {
    /// `session`, `Path=/`, `SameSite=Lax`, `Secure` over https, ending
    /// with the browser session.
    fn default() -> Self {
        CookieConfig {
            name: COOKIE_NAME.to_owned(),
            path: "/".to_owned(),
            domain: None,
            same_site: SameSite::Lax,
            secure: Secure::Auto,
            max_age_secs: None,
        }
    }
}

/// Why a [`CookieConfig`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieConfigError(pub String);

impl std::fmt::Display for CookieConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid session cookie settings: {}", self.0)
    }
}

impl std::error::Error for CookieConfigError {}

/// RFC 6265's cookie-name: an RFC 7230 token.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An attribute value that cannot end the attribute or the header.
fn is_attribute_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

impl CookieConfig {
    /// Checks what browsers would otherwise silently refuse.
    pub fn validate(&self) -> Result<(), CookieConfigError> {
        let fail = |why: String| Err(CookieConfigError(why));
        if !is_token(&self.name) {
            return fail(format!("cookie name {:?} is not a token", self.name));
        }
        if !self.path.starts_with('/') || !is_attribute_value(&self.path) {
            return fail(format!("cookie path {:?} must start with /", self.path));
        }
        if let Some(domain) = &self.domain {
            if domain.is_empty() || !is_attribute_value(domain) {
                return fail(format!("cookie domain {domain:?} is not a domain"));
            }
        }
        let prefixed = self.name.starts_with("__Host-") || self.name.starts_with("__Secure-");
        if prefixed && self.secure == Secure::Never {
            return fail(format!("a cookie named {} must be Secure", self.name));
        }
        if self.name.starts_with("__Host-") && (self.path != "/" || self.domain.is_some()) {
            return fail("a __Host- cookie must have Path=/ and no Domain".to_owned());
        }
        if self.same_site == SameSite::None && self.secure == Secure::Never {
            return fail("SameSite=None needs a Secure cookie".to_owned());
        }
        Ok(())
    }

    /// Whether a response to a request that came over https (or not) sets
    /// `Secure`.
    pub fn is_secure(&self, request_is_https: bool) -> bool {
        let prefixed = self.name.starts_with("__Host-") || self.name.starts_with("__Secure-");
        match self.secure {
            Secure::Always => true,
            Secure::Never => false,
            Secure::Auto => request_is_https || prefixed,
        }
    }

    /// The `Set-Cookie` value that hands `value` to the browser, lasting
    /// `max_age_secs` (or the browser session, when `None`).
    pub fn set_cookie(&self, value: &str, max_age_secs: Option<u64>, secure: bool) -> String {
        let mut header = format!("{}={value}", self.name);
        self.push_attributes(&mut header, max_age_secs, secure);
        header
    }

    /// The `Set-Cookie` value that makes the browser drop the cookie.
    pub fn expire_cookie(&self, secure: bool) -> String {
        let mut header = format!("{}=", self.name);
        self.push_attributes(&mut header, Some(0), secure);
        header
    }

    fn push_attributes(&self, header: &mut String, max_age_secs: Option<u64>, secure: bool) {
        header.push_str("; Path=");
        header.push_str(&self.path);
        if let Some(domain) = &self.domain {
            header.push_str("; Domain=");
            header.push_str(domain);
        }
        if let Some(max_age) = max_age_secs {
            header.push_str(&format!("; Max-Age={max_age}"));
        }
        header.push_str("; HttpOnly; SameSite=");
        header.push_str(match self.same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        });
        if secure {
            header.push_str("; Secure");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn found(headers: &[&str]) -> Option<String> {
        match find_session_id(headers.iter().copied())? {
            CookieId::Stored(id) => Some(id.as_str().to_owned()),
            CookieId::Pending(id) => Some(id),
        }
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let header = format!("theme=dark; session={}; lang=en", id('a'));
        assert_eq!(found(&[&header]), Some(id('a')));
        let named = format!("session={}; __Host-app={}", id('a'), id('b'));
        assert!(matches!(
            find_cookie([named.as_str()], "__Host-app"),
            Some(CookieId::Stored(found)) if found.as_str() == id('b')
        ));
    }

    #[test]
    fn tolerates_odd_spacing_quotes_and_several_headers() {
        let quoted = format!("  session = \"{}\" ", id('b'));
        assert_eq!(found(&[&quoted]), Some(id('b')));
        let second = format!("session={}", id('c'));
        assert_eq!(found(&["other=1", &second]), Some(id('c')));
    }

    #[test]
    fn tells_pending_from_stored_by_the_first_character() {
        let pending = format!("session={}", id('P'));
        assert!(matches!(
            find_session_id([pending.as_str()]),
            Some(CookieId::Pending(_))
        ));
        let stored = format!("session={}", id('7'));
        assert!(matches!(
            find_session_id([stored.as_str()]),
            Some(CookieId::Stored(_))
        ));
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
        assert_eq!(found(&[&header]), Some(id('d')));
    }

    #[test]
    fn hundreds_of_cookies_are_not_all_examined() {
        let mut header: String = (0..500).map(|i| format!("session=x{i}; ")).collect();
        header.push_str(&format!("session={}", id('f')));
        assert!(find_session_id([header.as_str()]).is_none());
    }

    #[test]
    fn set_cookie_attributes() {
        let config = CookieConfig::default();
        assert_eq!(
            config.set_cookie("abc", None, false),
            "session=abc; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            config.set_cookie("abc", Some(600), true),
            "session=abc; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            config.expire_cookie(true),
            "session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        );
        let custom = CookieConfig {
            name: "app".into(),
            path: "/app".into(),
            domain: Some("example.com".into()),
            same_site: SameSite::Strict,
            ..CookieConfig::default()
        };
        assert_eq!(
            custom.set_cookie("abc", None, false),
            "app=abc; Path=/app; Domain=example.com; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn secure_follows_the_policy_and_the_prefix() {
        let auto = CookieConfig::default();
        assert!(auto.is_secure(true) && !auto.is_secure(false));
        let always = CookieConfig {
            secure: Secure::Always,
            ..CookieConfig::default()
        };
        assert!(always.is_secure(false));
        let never = CookieConfig {
            secure: Secure::Never,
            ..CookieConfig::default()
        };
        assert!(!never.is_secure(true));
        let host = CookieConfig {
            name: "__Host-session".into(),
            ..CookieConfig::default()
        };
        assert!(host.validate().is_ok());
        assert!(host.is_secure(false), "a __Host- cookie is always Secure");
    }

    #[test]
    fn settings_browsers_would_refuse_are_errors() {
        let bad = |config: CookieConfig| config.validate().unwrap_err().to_string();
        let base = CookieConfig::default;
        assert!(bad(CookieConfig {
            name: "a b".into(),
            ..base()
        })
        .contains("token"));
        assert!(bad(CookieConfig {
            name: String::new(),
            ..base()
        })
        .contains("token"));
        assert!(bad(CookieConfig {
            path: "app".into(),
            ..base()
        })
        .contains("path"));
        assert!(bad(CookieConfig {
            path: "/a;b".into(),
            ..base()
        })
        .contains("path"));
        assert!(bad(CookieConfig {
            domain: Some("a b".into()),
            ..base()
        })
        .contains("domain"));
        let host = || CookieConfig {
            name: "__Host-s".into(),
            ..base()
        };
        assert!(bad(CookieConfig {
            secure: Secure::Never,
            ..host()
        })
        .contains("Secure"));
        assert!(bad(CookieConfig {
            path: "/app".into(),
            ..host()
        })
        .contains("__Host-"));
        assert!(bad(CookieConfig {
            domain: Some("example.com".into()),
            ..host()
        })
        .contains("__Host-"));
        let none = CookieConfig {
            same_site: SameSite::None,
            secure: Secure::Never,
            ..base()
        };
        assert!(bad(none).contains("SameSite=None"));
        assert!(base().validate().is_ok());
    }
}
