//! Signing in by name with `spin-sessions`: a new identifier at sign-in
//! (`cycle_id`), a one-shot "signed in as …" (`flash`), a typed visit
//! counter, and sign-out (`destroy`). Nothing is stored for a visitor who
//! only looks at the page.

pub mod html;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use spin_sessions::{Error, RequestBody, SessionStore, Sessions};

type Request = http::Request<RequestBody>;
type Response = http::Response<Vec<u8>>;

/// Answers one request: `GET /`, `POST /signin`, `POST /signout`.
pub fn handle<S: SessionStore>(req: &Request, sessions: &Sessions<S>) -> Response {
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => home(req, sessions),
        (&Method::POST, "/signin" | "/signout") => post(req, sessions),
        (_, "/" | "/signin" | "/signout") => {
            Ok(text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"))
        }
        _ => Ok(text(StatusCode::NOT_FOUND, "Not found")),
    };
    result.unwrap_or_else(|err| err.into_response())
}

fn home<S: SessionStore>(req: &Request, sessions: &Sessions<S>) -> Result<Response, Error> {
    let mut session = sessions.load(req)?;
    let notice: Option<String> = session.take_flash("notice")?;
    let token = session.csrf_token()?;
    let body = match session.get::<String>("name")? {
        Some(name) => {
            let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
            session.insert("visits", visits)?;
            html::signed_in(&name, visits, &token)
        }
        None => html::sign_in_form(&token),
    };
    let mut response = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        html::page(notice.as_deref(), &body),
    );
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(html::CSP));
    session.save(&mut response)?;
    Ok(response)
}

fn post<S: SessionStore>(req: &Request, sessions: &Sessions<S>) -> Result<Response, Error> {
    let Ok(body) = req.body() else {
        return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large"));
    };
    let field = |name: &str| {
        form_urlencoded::parse(body)
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let mut session = sessions.load(req)?;
    if !session.verify_csrf(field("csrf_token").as_deref()) {
        return Ok(text(
            StatusCode::FORBIDDEN,
            "This form has expired; reload the page and try again.",
        ));
    }
    if req.uri().path() == "/signout" {
        session.destroy();
    } else {
        let name = field("name").unwrap_or_default().trim().to_owned();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Ok(text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "A name is 1 to 64 characters of text",
            ));
        }
        session.cycle_id(); // new rights, new identifier
        session.insert("name", &name)?;
        session.insert("visits", 0u64)?;
        session.flash("notice", format!("Signed in as {name}"))?;
        if field("remember").as_deref() == Some("yes") {
            session.remember(Some(std::time::Duration::from_secs(30 * 86_400)));
        }
    }
    let mut response = respond(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        String::new(),
    );
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/"));
    session.save(&mut response)?;
    Ok(response)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = http::Response::new(body.into_bytes());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, message: &str) -> Response {
    respond(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

#[cfg(target_arch = "wasm32")]
fn serve(request: Request) -> Response {
    match spin_sessions::spin::sessions() {
        Ok(sessions) => handle(&request, &sessions),
        Err(err) => err.into_response(),
    }
}

#[cfg(target_arch = "wasm32")]
spin_sessions::http_component!(serve, max_body_bytes = 4096);
