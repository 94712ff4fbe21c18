//! The HTTP layer: routes a request to the session flow and answers it.
//!
//! `http` types in and out, generic over the session store, so that the
//! whole behaviour is unit-tested natively with the in-memory store; the
//! component's entry point (`lib.rs`) only hands it Spin's.

use http::{header, Method, StatusCode};
use serde::Serialize;
use spin_sessions::time::rfc3339;
use spin_sessions::{Error, RequestBody, Session, SessionStore, Sessions};

use crate::form::{FormError, FormType};
use crate::pages::{self, Page, PageData};

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A request as the entry point reads it.
pub type Request = http::Request<RequestBody>;

/// A response.
pub type Response = http::Response<Vec<u8>>;

/// What the page forms may post.
const FIELDS: [&str; 2] = ["v1", "v2"];

const FORM_EXPIRED: &str = "This form is out of date or your session has ended; nothing was saved. Reload the page and try again.";

/// Answers one request with the sessions of the component's store.
pub fn handle<S: SessionStore>(req: &Request, sessions: &Sessions<S>) -> Response {
    let response = route(req, sessions).unwrap_or_else(|err| {
        if err.status().is_server_error() {
            eprintln!("sessions: {err}");
        }
        err.into_response()
    });
    if req.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, Vec::new())
    } else {
        response
    }
}

/// The answer when the sessions cannot even be set up: an invalid setting
/// (500, naming the variable and the value) or an unreachable store (503).
pub fn setup_failed(err: &Error) -> Response {
    eprintln!("sessions: {err}");
    match err {
        Error::Config(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Configuration error: {err}"),
        ),
        other => other.into_response(),
    }
}

fn route<S: SessionStore>(req: &Request, sessions: &Sessions<S>) -> Result<Response, Error> {
    let method = req.method();
    let get = method == Method::GET || method == Method::HEAD;
    Ok(match req.uri().path() {
        "/api/session" if get => session_json(req, sessions)?,
        "/api/session" => method_not_allowed("GET, HEAD"),
        "/logout" if method == Method::POST => logout(req, sessions)?,
        "/logout" => method_not_allowed("POST"),
        path => match Page::at(path) {
            Some(page) if get => show_page(page, req, sessions)?,
            Some(page) if method == Method::POST => post_form(page, req, sessions)?,
            Some(_) => method_not_allowed("GET, HEAD, POST"),
            None => text(StatusCode::NOT_FOUND, "Not found"),
        },
    })
}

/// A page, prefilled from the session. A visitor with nothing stored gets
/// the page and a cookie for its form's token, and nothing is stored.
fn show_page<S: SessionStore>(
    page: Page,
    req: &Request,
    sessions: &Sessions<S>,
) -> Result<Response, Error> {
    let mut session = sessions.load(req)?;
    let data = PageData {
        v1: session.get("v1")?.unwrap_or_default(),
        v2: session.get("v2")?.unwrap_or_default(),
        submitted_at: session.get("submitted_at")?,
        csrf_token: session.csrf_token()?,
    };
    let mut response = html(pages::render(page, &data));
    session.save(&mut response)?;
    Ok(response)
}

/// Stores the posted fields and answers 303 to the same page. Every check
/// comes before anything is written: the body (413, 415, 400, 422), then
/// the session's token (403).
fn post_form<S: SessionStore>(
    page: Page,
    req: &Request,
    sessions: &Sessions<S>,
) -> Result<Response, Error> {
    let fields = match read_form(req) {
        Ok(fields) => fields,
        Err((status, message)) => return Ok(text(status, &message)),
    };
    let done = field(&fields, "DONE");
    if done.is_some_and(|d| d != "yes") {
        return Ok(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Field DONE may only be \"yes\"",
        ));
    }
    let mut session = sessions.load(req)?;
    if let Some(refused) = refuse_unverified(&session, field(&fields, "csrf_token")) {
        return Ok(refused);
    }
    for name in FIELDS {
        if let Some(value) = field(&fields, name) {
            session.insert(name, value)?;
        }
    }
    if done.is_some() {
        session.insert("submitted_at", session.now())?;
    }
    let mut response = see_other(page.path());
    match session.save(&mut response) {
        Err(Error::Ended) => Ok(text(StatusCode::FORBIDDEN, FORM_EXPIRED)),
        saved => saved.map(|()| response),
    }
}

/// The 403 for a form post from another origin (whatever its token) or
/// without the session's token; `None` when the post may proceed.
fn refuse_unverified<S: SessionStore>(
    session: &Session<'_, S>,
    token: Option<&str>,
) -> Option<Response> {
    if session.verify_csrf(token) {
        return None;
    }
    let message = if session.is_cross_origin() {
        "Form posts from other sites are not accepted; nothing was saved."
    } else {
        FORM_EXPIRED
    };
    let mut response = text(StatusCode::FORBIDDEN, message);
    response.headers_mut().insert(
        header::VARY,
        header::HeaderValue::from_static(spin_sessions::CROSS_ORIGIN_VARY),
    );
    Some(response)
}

/// Deletes the session (with its form token) and expires the cookie.
fn logout<S: SessionStore>(req: &Request, sessions: &Sessions<S>) -> Result<Response, Error> {
    let fields = match read_form(req) {
        Ok(fields) => fields,
        Err((status, message)) => return Ok(text(status, &message)),
    };
    let mut session = sessions.load(req)?;
    if session.is_cross_origin() || session.is_stored() {
        if let Some(refused) = refuse_unverified(&session, field(&fields, "csrf_token")) {
            return Ok(refused);
        }
    }
    session.destroy();
    let mut response = see_other("/");
    session.save(&mut response)?;
    Ok(response)
}

/// The body of `GET /api/session`: the form values and the times, as
/// RFC 3339 text.
#[derive(Serialize)]
struct SessionJson {
    v1: Option<String>,
    v2: Option<String>,
    submitted_at: Option<String>,
    created_at: String,
    last_seen_at: String,
    expires_at: String,
}

/// The session as JSON; 404 without one. Never creates one.
fn session_json<S: SessionStore>(req: &Request, sessions: &Sessions<S>) -> Result<Response, Error> {
    let session = sessions.load(req)?;
    let (Some(created_at), Some(last_seen_at), Some(expires_at)) = (
        session.created_at(),
        session.last_seen_at(),
        session.expires_at(),
    ) else {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"no session"}"#.into(),
        ));
    };
    let body = SessionJson {
        v1: session.get("v1")?,
        v2: session.get("v2")?,
        submitted_at: session.get::<i64>("submitted_at")?.map(rfc3339),
        created_at: rfc3339(created_at),
        last_seen_at: rfc3339(last_seen_at),
        expires_at: rfc3339(expires_at),
    };
    let body = serde_json::to_string(&body).expect("strings always serialise");
    let mut response = json_response(StatusCode::OK, body);
    session.save(&mut response)?;
    Ok(response)
}

/// Why a form was refused: the status and a short message.
type Refusal = (StatusCode, String);

/// The checks every form post passes before the session is looked up: the
/// content type, the size, and the encoding of the fields.
fn read_form(req: &Request) -> Result<Vec<(String, String)>, Refusal> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let Some(form_type) = FormType::of(content_type) else {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Forms must be sent as application/x-www-form-urlencoded or multipart/form-data".into(),
        ));
    };
    let body = req
        .body()
        .as_ref()
        .map_err(|err| (err.status(), capitalised(&err.to_string())))?;
    form_type.decode(body).map_err(|err| form_error(&err))
}

fn form_error(err: &FormError) -> Refusal {
    let status = if err.is_syntax() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, capitalised(&err.to_string()))
}

/// The message with its first letter in upper case. The messages are this
/// crate's own, in ASCII: no Unicode case tables in the component.
fn capitalised(message: &str) -> String {
    let mut text = message.to_owned();
    if let Some(first) = text.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    text
}

fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Every header this app sends is a constant: its value points at the
/// static text instead of a copy (`from_static` still checks its bytes,
/// and would panic on a bad one, which no constant here has).
fn response(
    status: StatusCode,
    headers: &[(header::HeaderName, &'static str)],
    body: Vec<u8>,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.reserve(headers.len());
    for (name, value) in headers {
        map.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

fn text(status: StatusCode, message: &str) -> Response {
    response(
        status,
        &[
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{message}\n").into_bytes(),
    )
}

fn json_response(status: StatusCode, json: String) -> Response {
    response(
        status,
        &[
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json.into_bytes(),
    )
}

fn html(document: String) -> Response {
    response(
        StatusCode::OK,
        &[
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
            (
                header::CONTENT_SECURITY_POLICY,
                pages::CONTENT_SECURITY_POLICY,
            ),
        ],
        document.into_bytes(),
    )
}

fn see_other(location: &'static str) -> Response {
    response(
        StatusCode::SEE_OTHER,
        &[
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Vec::new(),
    )
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    //! The HTTP layer against the in-memory store; the end-to-end tests in
    //! `tests/` cover the same flow through the real host, on both stores.

    use super::*;
    use spin_sessions::{Config, MemoryStore, Secure};

    fn sessions(store: &MemoryStore, secure: Secure) -> Sessions<&MemoryStore> {
        let mut config = Config::default();
        config.cookie.secure = secure;
        Sessions::new(store, config).unwrap()
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> Request {
        request("GET", path, headers, Ok(Vec::new()))
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)], body: RequestBody) -> Request {
        let mut builder = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(body).unwrap()
    }

    fn set_cookie(response: &Response) -> &str {
        response
            .headers()
            .get(header::SET_COOKIE)
            .expect("a cookie is issued")
            .to_str()
            .unwrap()
    }

    fn body(response: &Response) -> String {
        String::from_utf8(response.body().clone()).unwrap()
    }

    fn token_of(page: &Response) -> String {
        let text = body(page);
        let marker = r#"name="csrf_token" value=""#;
        let start = text.find(marker).unwrap() + marker.len();
        text[start..].split('"').next().unwrap().to_owned()
    }

    #[test]
    fn auto_secure_follows_spin_full_url() {
        let store = MemoryStore::new();
        let serve = |req: &Request, secure| handle(req, &sessions(&store, secure));
        let https = get("/", &[("spin-full-url", "https://example.com/")]);
        assert!(set_cookie(&serve(&https, Secure::Auto)).ends_with("; Secure"));
        let http = get("/", &[("spin-full-url", "http://127.0.0.1:3000/")]);
        assert!(!set_cookie(&serve(&http, Secure::Auto)).contains("Secure"));
        assert!(!set_cookie(&serve(&https, Secure::Never)).contains("Secure"));
        let unicode = get("/", &[("spin-full-url", "https://bücher.example/")]);
        assert!(set_cookie(&serve(&unicode, Secure::Auto)).ends_with("; Secure"));
    }

    #[test]
    fn an_anonymous_page_stores_nothing_and_the_first_post_creates() {
        let store = MemoryStore::new();
        let sessions = sessions(&store, Secure::Auto);
        let page = handle(&get("/", &[]), &sessions);
        assert_eq!(page.status(), StatusCode::OK);
        let pending = set_cookie(&page).split(';').next().unwrap().to_owned();
        // Only the store's signing key (with its winning candidate, and the
        // counters that chose it), made by the first page it ever served.
        let mut keys = store.keys();
        keys.sort();
        assert_eq!(
            keys,
            [
                "sessions/signing-key",
                "sessions/signing-key/candidate/1",
                "sessions/signing-key/tickets",
                "sessions/signing-key/winner"
            ]
        );
        let token = token_of(&page);
        let post = request(
            "POST",
            "/2",
            &[
                ("cookie", &pending),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Ok(format!("csrf_token={token}&v1=Ada").into_bytes()),
        );
        let created = handle(&post, &sessions);
        assert_eq!(created.status(), StatusCode::SEE_OTHER);
        let stored = set_cookie(&created).split(';').next().unwrap().to_owned();
        assert_ne!(stored, pending, "the pending identifier is never adopted");
        let page = handle(&get("/2", &[("cookie", &stored)]), &sessions);
        assert!(body(&page).contains("Hello, <span id=\"name\">Ada</span>"));
        assert!(page.headers().get(header::SET_COOKIE).is_none());
        assert_eq!(token_of(&page), token, "the form token carries over");
    }

    #[test]
    fn multipart_posts_are_taken() {
        let store = MemoryStore::new();
        let sessions = sessions(&store, Secure::Auto);
        let page = handle(&get("/", &[]), &sessions);
        let pending = set_cookie(&page).split(';').next().unwrap().to_owned();
        let token = token_of(&page);
        let form = format!(
            "--b\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n\
             --b\r\nContent-Disposition: form-data; name=\"v1\"\r\n\r\nGrace\r\n--b--\r\n"
        );
        let post = request(
            "POST",
            "/2",
            &[
                ("cookie", &pending),
                ("content-type", "multipart/form-data; boundary=b"),
            ],
            Ok(form.into_bytes()),
        );
        let created = handle(&post, &sessions);
        assert_eq!(created.status(), StatusCode::SEE_OTHER);
        let stored = set_cookie(&created).split(';').next().unwrap().to_owned();
        let page = handle(&get("/", &[("cookie", &stored)]), &sessions);
        assert!(body(&page).contains(r#"name="v1" value="Grace""#));
    }

    #[test]
    fn an_invalid_setting_names_the_variable() {
        let err = Error::Config(
            Config::from_lookup(|name| (name == "max_sessions").then(|| "lots".to_owned()))
                .unwrap_err(),
        );
        let response = setup_failed(&err);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = body(&response);
        assert!(
            text.contains("max_sessions") && text.contains("lots"),
            "{text}"
        );
    }
}
