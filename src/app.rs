//! The HTTP layer: routes a request to the session flow and answers it.
//!
//! Plain data in, plain data out, generic over the session store, so that
//! the whole behaviour is unit-tested natively with an in-memory store and
//! the component entry point only converts to and from Spin's types.

use rand::CryptoRng;
use serde_json::json;
use session_core::cookie::find_session_id;
use session_core::time::rfc3339;
use session_core::{CookieSettings, Found, Session, SessionManager, SessionStore, UpdateError};

use crate::config::{ConfigError, Settings};
use crate::form;
use crate::pages::{self, Page};

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A request, reduced to what the flow looks at.
pub struct Request {
    /// The method, upper case as sent.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// All headers; names lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, read up to [`MAX_BODY_BYTES`].
    pub body: Body,
}

/// A request body as the entry point read it.
pub enum Body {
    /// The whole body.
    Complete(Vec<u8>),
    /// Longer than [`MAX_BODY_BYTES`]; not kept.
    TooLarge,
    /// The body broke off before the length it announced.
    Incomplete,
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn cookie_headers(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Spin tells the component the URL the client used in `spin-full-url`.
    fn is_https(&self) -> bool {
        let Some(full_url) = self.header("spin-full-url") else {
            return false;
        };
        match url::Url::parse(full_url) {
            Ok(url) => url.scheme() == "https",
            // The ASCII-only IDNA back end (see Cargo.toml) refuses a
            // non-ASCII host; the request still came over the scheme the
            // URL starts with, and a Secure cookie must not be lost for it.
            Err(_) => full_url
                .trim_start()
                .get(..6)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https:")),
        }
    }
}

impl Response {
    fn text(status: u16, message: &str) -> Self {
        Response {
            status,
            headers: vec![
                ("content-type".into(), "text/plain; charset=utf-8".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: format!("{message}\n").into_bytes(),
        }
    }

    fn json(status: u16, value: serde_json::Value) -> Self {
        Response {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: value.to_string().into_bytes(),
        }
    }

    fn html(document: String) -> Self {
        Response {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("cache-control".into(), "no-store".into()),
                ("x-content-type-options".into(), "nosniff".into()),
                ("referrer-policy".into(), "same-origin".into()),
                (
                    "content-security-policy".into(),
                    "default-src 'none'; form-action 'self'; frame-ancestors 'none'".into(),
                ),
            ],
            body: document.into_bytes(),
        }
    }

    fn see_other(location: &str) -> Self {
        Response {
            status: 303,
            headers: vec![
                ("location".into(), location.into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: Vec::new(),
        }
    }

    fn method_not_allowed(allow: &str) -> Self {
        let mut response = Response::text(405, "Method not allowed");
        response.headers.push(("allow".into(), allow.into()));
        response
    }

    fn with_header(mut self, name: &str, value: String) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    /// The store failed: the request may be retried.
    fn unavailable() -> Self {
        Response::text(
            503,
            "The session store is unavailable; please try again shortly.",
        )
    }
}

/// Everything one request is served with.
pub struct Context<'a, S, R: ?Sized> {
    /// The sessions, over the component's store.
    pub sessions: &'a SessionManager<S>,
    /// The settings, or why they are invalid.
    pub settings: Result<Settings, ConfigError>,
    /// The wall-clock time of the request, in Unix seconds.
    pub now: i64,
    /// A cryptographic RNG for new identifiers and tokens.
    pub rng: &'a mut R,
}

/// Answers one request.
pub fn handle<S: SessionStore, R: CryptoRng + ?Sized>(
    req: &Request,
    cx: &mut Context<'_, S, R>,
) -> Response {
    let settings = match &cx.settings {
        Ok(settings) => *settings,
        Err(err) => return Response::text(500, &format!("Configuration error: {err}")),
    };
    let cookies = CookieSettings {
        secure: settings.secure_cookie(req.is_https()),
        max_age_secs: settings.cookie_max_age_secs,
    };
    let method = req.method.as_str();
    let response = match (req.path.as_str(), method) {
        ("/api/session", "GET" | "HEAD") => session_json(req, cx),
        ("/api/session", _) => Response::method_not_allowed("GET, HEAD"),
        ("/logout", "POST") => logout(req, cx, &cookies),
        ("/logout", _) => Response::method_not_allowed("POST"),
        (path, _) => match (Page::at(path), method) {
            (Some(page), "GET" | "HEAD") => show_page(page, req, cx, &cookies),
            (Some(page), "POST") => post_form(page, req, cx, &cookies),
            (Some(_), _) => Response::method_not_allowed("GET, HEAD, POST"),
            (None, _) => Response::text(404, "Not found"),
        },
    };
    if method == "HEAD" {
        Response {
            body: Vec::new(),
            ..response
        }
    } else {
        response
    }
}

/// The request's live session, if it has one (one read). Never creates one.
fn live_session<S: SessionStore, R: ?Sized>(
    req: &Request,
    cx: &Context<'_, S, R>,
) -> Result<Option<Session>, Response> {
    match cx
        .sessions
        .lookup(find_session_id(req.cookie_headers()), cx.now)
    {
        Ok(Found::Live(session)) => Ok(Some(session)),
        Ok(Found::Undecodable(err)) => {
            eprintln!("sessions: replacing a session whose record does not decode: {err}");
            Ok(None)
        }
        Ok(Found::NoCookie | Found::Unknown | Found::Expired) => Ok(None),
        Err(err) => {
            eprintln!("sessions: {err}");
            Err(Response::unavailable())
        }
    }
}

fn show_page<S: SessionStore, R: CryptoRng + ?Sized>(
    page: Page,
    req: &Request,
    cx: &mut Context<'_, S, R>,
    cookies: &CookieSettings,
) -> Response {
    let existing = match live_session(req, cx) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (session, set_cookie) = match existing {
        Some(mut session) => match cx.sessions.touch_if_due(&mut session, cx.rng, cx.now) {
            Ok(touched) => {
                // A persistent cookie is refreshed whenever the session's
                // last-seen time is, so both age together.
                let refresh = touched && cookies.max_age_secs.is_some();
                (session, refresh)
            }
            // Another request of the session is writing it: that write
            // records the visit as well.
            Err(UpdateError::Contended) => (session, false),
            Err(UpdateError::Gone) => match create(cx) {
                Ok(session) => (session, true),
                Err(response) => return response,
            },
            Err(UpdateError::Store(err)) => {
                eprintln!("sessions: {err}");
                return Response::unavailable();
            }
        },
        None => match create(cx) {
            Ok(session) => (session, true),
            Err(response) => return response,
        },
    };
    let response = Response::html(pages::render(page, session.record()));
    if set_cookie {
        response.with_header("set-cookie", cookies.set_cookie(session.id()))
    } else {
        response
    }
}

fn create<S: SessionStore, R: CryptoRng + ?Sized>(
    cx: &mut Context<'_, S, R>,
) -> Result<Session, Response> {
    cx.sessions.create(cx.rng, cx.now).map_err(|err| {
        eprintln!("sessions: {err}");
        Response::unavailable()
    })
}

/// The checks every form post passes before anything is looked up: the
/// content type, the size, and the encoding of the fields.
fn read_form(req: &Request) -> Result<Vec<(String, String)>, Response> {
    let content_type = req.header("content-type").unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(Response::text(
            415,
            "Forms must be sent as application/x-www-form-urlencoded",
        ));
    }
    let body = match &req.body {
        Body::Complete(body) => body,
        Body::TooLarge => {
            return Err(Response::text(
                413,
                &format!("The form is larger than {MAX_BODY_BYTES} bytes"),
            ))
        }
        Body::Incomplete => return Err(Response::text(400, "The form body is incomplete")),
    };
    form::decode(body).map_err(|err| {
        let status = if err == form::FormError::BadPercentEncoding {
            400
        } else {
            422
        };
        Response::text(status, &capitalised(&err.to_string()))
    })
}

fn capitalised(message: &str) -> String {
    let mut chars = message.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Compares without stopping at the first difference, so that the time
/// taken says nothing about how much of a guessed token was right.
fn tokens_match(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

const FORM_EXPIRED: &str =
    "This form is out of date or your session has ended; nothing was saved. Reload the page and try again.";

fn post_form<S: SessionStore, R: CryptoRng + ?Sized>(
    page: Page,
    req: &Request,
    cx: &mut Context<'_, S, R>,
    cookies: &CookieSettings,
) -> Response {
    let fields = match read_form(req) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let done = field(&fields, "DONE");
    if done.is_some_and(|d| d != "yes") {
        return Response::text(422, "Field DONE may only be \"yes\"");
    }
    let mut session = match live_session(req, cx) {
        Ok(Some(session)) => session,
        Ok(None) => return Response::text(403, FORM_EXPIRED),
        Err(response) => return response,
    };
    if !tokens_match(&session.record().csrf_token, field(&fields, "csrf_token")) {
        return Response::text(403, FORM_EXPIRED);
    }
    let now = cx.now;
    let result = cx.sessions.update(&mut session, cx.rng, now, |record| {
        for name in ["v1", "v2"] {
            if let Some(value) = field(&fields, name) {
                record.values.insert(name.to_owned(), value.to_owned());
            }
        }
        if done.is_some() {
            record.submitted_at = Some(now);
        }
    });
    match result {
        Ok(()) => {
            let response = Response::see_other(page.path());
            if cookies.max_age_secs.is_some() {
                response.with_header("set-cookie", cookies.set_cookie(session.id()))
            } else {
                response
            }
        }
        Err(UpdateError::Gone) => Response::text(403, FORM_EXPIRED),
        Err(err) => {
            eprintln!("sessions: {err}");
            Response::unavailable()
        }
    }
}

fn logout<S: SessionStore, R: ?Sized>(
    req: &Request,
    cx: &mut Context<'_, S, R>,
    cookies: &CookieSettings,
) -> Response {
    let fields = match read_form(req) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    match live_session(req, cx) {
        Ok(Some(session)) => {
            if !tokens_match(&session.record().csrf_token, field(&fields, "csrf_token")) {
                return Response::text(403, FORM_EXPIRED);
            }
            if let Err(err) = cx.sessions.delete(session) {
                eprintln!("sessions: {err}");
                return Response::unavailable();
            }
        }
        Ok(None) => {}
        Err(response) => return response,
    }
    Response::see_other("/").with_header("set-cookie", cookies.expire_cookie())
}

fn session_json<S: SessionStore, R: CryptoRng + ?Sized>(
    req: &Request,
    cx: &mut Context<'_, S, R>,
) -> Response {
    let mut session = match live_session(req, cx) {
        Ok(Some(session)) => session,
        Ok(None) => return Response::json(404, json!({ "error": "no session" })),
        Err(response) => return response,
    };
    match cx.sessions.touch_if_due(&mut session, cx.rng, cx.now) {
        Ok(_) | Err(UpdateError::Contended) => {}
        Err(UpdateError::Gone) => return Response::json(404, json!({ "error": "no session" })),
        Err(UpdateError::Store(err)) => {
            eprintln!("sessions: {err}");
            return Response::unavailable();
        }
    }
    let record = session.record();
    Response::json(
        200,
        json!({
            "v1": record.value("v1"),
            "v2": record.value("v2"),
            "submitted_at": record.submitted_at.map(rfc3339),
            "created_at": rfc3339(record.created_at),
            "last_seen_at": rfc3339(record.last_seen_at),
            "expires_at": rfc3339(cx.sessions.policy().expires_at(record)),
        }),
    )
}

#[cfg(test)]
mod tests {
    //! The HTTP layer against the in-memory store; the end-to-end tests in
    //! `tests/` cover the same flow through the real host.

    use super::*;
    use crate::config::CookieSecure;
    use rand::rngs::OsRng;
    use rand::TryRngCore;
    use session_core::MemoryStore;

    const NOW: i64 = 1_760_000_000;

    fn get(path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: Body::Complete(Vec::new()),
        }
    }

    fn serve(req: &Request, secure: CookieSecure) -> Response {
        let sessions = SessionManager::new(MemoryStore::new(), Default::default());
        let settings = Settings {
            expiry: Default::default(),
            cookie_secure: secure,
            cookie_max_age_secs: None,
            max_sessions: 10,
        };
        let mut rng = OsRng.unwrap_err();
        let mut cx = Context {
            sessions: &sessions,
            settings: Ok(settings),
            now: NOW,
            rng: &mut rng,
        };
        handle(req, &mut cx)
    }

    fn set_cookie(response: &Response) -> &str {
        response
            .headers
            .iter()
            .find(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .expect("a cookie is issued")
    }

    #[test]
    fn auto_secure_follows_spin_full_url() {
        let https = get("/", &[("spin-full-url", "https://example.com/")]);
        assert!(set_cookie(&serve(&https, CookieSecure::Auto)).ends_with("; Secure"));
        let http = get("/", &[("spin-full-url", "http://127.0.0.1:3000/")]);
        assert!(!set_cookie(&serve(&http, CookieSecure::Auto)).contains("Secure"));
        assert!(!set_cookie(&serve(&https, CookieSecure::Never)).contains("Secure"));
        let bogus = get("/", &[("spin-full-url", "not a url")]);
        assert!(!set_cookie(&serve(&bogus, CookieSecure::Auto)).contains("Secure"));
        // A host the URL parser refuses (non-ASCII, see Cargo.toml).
        let unicode = get("/", &[("spin-full-url", "https://bücher.example/")]);
        assert!(url::Url::parse("https://bücher.example/").is_err());
        assert!(set_cookie(&serve(&unicode, CookieSecure::Auto)).ends_with("; Secure"));
        let unicode_http = get("/", &[("spin-full-url", "http://bücher.example/")]);
        assert!(!set_cookie(&serve(&unicode_http, CookieSecure::Auto)).contains("Secure"));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(tokens_match("abc", Some("abc")));
        assert!(!tokens_match("abc", Some("abd")));
        assert!(!tokens_match("abc", Some("ab")));
        assert!(!tokens_match("abc", None));
        assert!(!tokens_match("", Some("x")));
    }
}
