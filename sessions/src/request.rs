//! What the sessions read from an HTTP request: the cookie, whether the
//! request came over https, the client's address, and whether a
//! state-changing request comes from another origin.

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

/// The headers the cross-origin decision reads: responses to requests it
/// judged carry them in `Vary`.
pub const CROSS_ORIGIN_VARY: &str = "Origin, Sec-Fetch-Site";

/// The client's address as the request gives it, for the quota of new
/// sessions: from `header` when a trusted proxy sets one (its last entry:
/// the one the proxy added), else Spin's `spin-client-addr`. Read on every
/// load, made into the quota's key by [`quota_address`] only when a
/// session is created: most requests create none.
pub(crate) fn client_address<B>(
    request: &http::Request<B>,
    header: Option<&str>,
) -> Option<String> {
    let headers = request.headers();
    let from_proxy = header.and_then(|name| {
        let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
        Some(value.rsplit(',').next()?.trim().to_owned())
    });
    from_proxy.filter(|v| !v.is_empty()).or_else(|| {
        let value = headers.get("spin-client-addr")?.to_str().ok()?;
        Some(value.trim().to_owned())
    })
}

/// The address a client's new sessions are counted under: without the
/// port; an IPv6 address by its /64 prefix, the block one subscriber gets;
/// anything that is no address (whatever a trusted proxy wrote) as it is.
pub(crate) fn quota_address(raw: String) -> String {
    let ip = raw
        .parse::<std::net::SocketAddr>()
        .map(|addr| addr.ip())
        .or_else(|_| raw.parse::<std::net::IpAddr>());
    match ip {
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => raw,
    }
}

/// True when `request` changes state (not GET, HEAD or OPTIONS) and comes
/// from another origin, as browsers tell it: `Sec-Fetch-Site` when they
/// send it (`same-site` is another origin unless `allow_same_site`), else
/// `Origin` against the request's host. A request with neither is not a
/// browser's cross-origin request; its CSRF token still decides.
pub(crate) fn is_cross_origin<B>(request: &http::Request<B>, allow_same_site: bool) -> bool {
    if is_safe(request.method()) {
        return false;
    }
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => false,
            b"same-site" => !allow_same_site,
            _ => true,
        };
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return false;
    };
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
    });
    match (origin_host, request_host(request)) {
        (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(&host),
        // `Origin: null` (a sandboxed page, a redirect across origins), or
        // no host to compare with.
        _ => true,
    }
}

/// True for the methods that must not change state.
pub(crate) fn is_safe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// The host (and port) the client addressed: `Host`, or the authority of
/// the URL Spin reports.
fn request_host<B>(request: &http::Request<B>) -> Option<String> {
    if let Some(host) = request.headers().get(http::header::HOST) {
        return host.to_str().ok().map(str::to_owned);
    }
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    let url = request.headers().get("spin-full-url")?.to_str().ok()?;
    let rest = url.split_once("://")?.1;
    Some(rest.split('/').next()?.to_owned())
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

    fn post(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut req = request(headers);
        *req.method_mut() = http::Method::POST;
        req
    }

    #[test]
    fn fetch_metadata_decides_first() {
        let host = ("host", "app.example");
        for (site, cross) in [
            ("same-origin", false),
            ("none", false),
            ("same-site", true),
            ("cross-site", true),
            ("something-new", true),
        ] {
            // Even with a matching Origin.
            let req = post(&[
                host,
                ("origin", "https://app.example"),
                ("sec-fetch-site", site),
            ]);
            assert_eq!(is_cross_origin(&req, false), cross, "{site}");
        }
        let same_site = post(&[host, ("sec-fetch-site", "same-site")]);
        assert!(
            !is_cross_origin(&same_site, true),
            "allowed when configured"
        );
        // Safe methods are never refused.
        let get = request(&[host, ("sec-fetch-site", "cross-site")]);
        assert!(!is_cross_origin(&get, false));
    }

    #[test]
    fn without_fetch_metadata_the_origin_decides() {
        let host = ("host", "127.0.0.1:3000");
        assert!(!is_cross_origin(
            &post(&[host, ("origin", "http://127.0.0.1:3000")]),
            false
        ));
        assert!(is_cross_origin(
            &post(&[host, ("origin", "http://evil.example")]),
            false
        ));
        assert!(is_cross_origin(
            &post(&[host, ("origin", "http://127.0.0.1:3001")]),
            false
        ));
        assert!(is_cross_origin(&post(&[host, ("origin", "null")]), false));
        // Neither header: not a browser's cross-origin request.
        assert!(!is_cross_origin(&post(&[host]), false));
        // The host from Spin's URL when there is no Host header.
        let spin = post(&[
            ("spin-full-url", "http://app.example/2"),
            ("origin", "http://app.example"),
        ]);
        assert!(!is_cross_origin(&spin, false));
    }

    #[test]
    fn client_addresses() {
        let quota = |request: &http::Request<()>, header| {
            client_address(request, header).map(quota_address)
        };
        let spin = |addr: &str| request(&[("spin-client-addr", addr)]);
        assert_eq!(
            quota(&spin("127.0.0.2:5123"), None).as_deref(),
            Some("127.0.0.2")
        );
        assert_eq!(
            quota(&spin("[2001:db8:1:2:3:4:5:6]:443"), None).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            quota(&spin(" 10.1.2.3 "), None).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            quota(&spin("not an address"), None).as_deref(),
            Some("not an address")
        );
        assert_eq!(quota(&request(&[]), None), None);
        // A proxy's header is read only when configured, and then its last
        // entry counts (the one the proxy appended).
        let proxied = request(&[
            ("spin-client-addr", "10.0.0.1:999"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
        ]);
        assert_eq!(quota(&proxied, None).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            quota(&proxied, Some("x-forwarded-for")).as_deref(),
            Some("203.0.113.9")
        );
        let missing = request(&[("spin-client-addr", "10.0.0.1:999")]);
        assert_eq!(
            quota(&missing, Some("x-forwarded-for")).as_deref(),
            Some("10.0.0.1")
        );
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
