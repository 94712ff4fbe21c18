//! What the sessions read from an HTTP request: the cookie, and whether the
//! request came over https.

use http::HeaderMap;
use spin_sessions_core::cookie::find_cookie;
use spin_sessions_core::CookieId;

/// The session identifier the request's `Cookie` headers carry under
/// `name`, if one has the shape of an identifier this library issues.
pub(crate) fn session_cookie(headers: &HeaderMap, name: &str) -> Option<CookieId> {
    let values = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok());
    find_cookie(values, name)
}

/// True when the request carries a cookie named `name` at all, well-formed
/// or not (so that signing out can clear it).
pub(crate) fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .any(|pair| pair.split_once('=').is_some_and(|(n, _)| n.trim() == name))
}

/// True when the client used https. Spin passes the URL the client asked
/// for in `spin-full-url`; a request built by hand may carry the scheme in
/// its URI instead.
pub(crate) fn is_https<B>(request: &http::Request<B>) -> bool {
    if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        return true;
    }
    // Bytes, not text: the host name may be non-ASCII.
    request
        .headers()
        .get("spin-full-url")
        .and_then(|url| url.as_bytes().get(..6))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"https:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder().uri("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn https_from_spin_full_url_or_the_uri() {
        assert!(is_https(&request(&[(
            "spin-full-url",
            "https://example.com/"
        )])));
        assert!(is_https(&request(&[(
            "spin-full-url",
            "HTTPS://bücher.example/"
        )])));
        assert!(!is_https(&request(&[(
            "spin-full-url",
            "http://127.0.0.1:3000/"
        )])));
        assert!(!is_https(&request(&[("spin-full-url", "not a url")])));
        assert!(!is_https(&request(&[])));
        let absolute = http::Request::get("https://example.com/").body(()).unwrap();
        assert!(is_https(&absolute));
    }

    #[test]
    fn cookies_over_several_headers() {
        let id = "a".repeat(64);
        let req = request(&[("cookie", "x=1"), ("cookie", &format!("app={id}"))]);
        assert!(matches!(
            session_cookie(req.headers(), "app"),
            Some(CookieId::Stored(found)) if found.as_str() == id
        ));
        assert!(session_cookie(req.headers(), "session").is_none());
        assert!(has_cookie(req.headers(), "app"));
        assert!(has_cookie(
            &request(&[("cookie", "app=junk")]).headers().clone(),
            "app"
        ));
        assert!(!has_cookie(req.headers(), "session"));
    }
}
