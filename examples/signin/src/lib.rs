//! Signing in by name with `spin-sessions`, in a spin-sdk 7 component
//! routed by axum: a new identifier at sign-in (`cycle_id`), a one-shot
//! "signed in as …" (`flash`), a typed visit counter, and sign-out
//! (`destroy`). Nothing is stored for a visitor who only looks.

pub mod html;

use axum::extract::{DefaultBodyLimit, Form};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use spin_sessions::axum::{Session, SessionLayer};
use spin_sessions::{Error, SessionStore};

/// The example's routes, with sessions from `layer`.
pub fn router<S>(layer: SessionLayer<S>) -> Router
where
    S: SessionStore + Send + Sync + 'static,
    S::Snapshot: Send,
{
    Router::new()
        .route("/", get(home::<S>))
        .route("/signin", post(sign_in::<S>))
        .route("/signout", post(sign_out::<S>))
        .layer(layer)
        .layer(DefaultBodyLimit::max(4096))
}

async fn home<S: SessionStore + 'static>(session: Session<S>) -> Result<Response, Error> {
    let notice: Option<String> = session.take_flash("notice")?;
    let token = session.csrf_token()?;
    let body = match session.get::<String>("name")? {
        Some(name) => {
            // Counted with `update`: concurrent page views all count.
            let visits = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)?;
            html::signed_in(&name, visits, &token)
        }
        None => html::sign_in_form(&token),
    };
    let page = html::page(notice.as_deref(), &body);
    let csp = [(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(html::CSP),
    )];
    Ok((csp, no_store(), axum::response::Html(page)).into_response())
}

/// The sign-in form's fields.
#[derive(Deserialize)]
struct SignIn {
    csrf_token: Option<String>,
    name: Option<String>,
    remember: Option<String>,
}

async fn sign_in<S: SessionStore + 'static>(
    session: Session<S>,
    Form(form): Form<SignIn>,
) -> Result<Response, Error> {
    if !session.verify_csrf(form.csrf_token.as_deref()) {
        return Ok(expired_form());
    }
    let name = form.name.unwrap_or_default().trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        let message = "A name is 1 to 64 characters of text\n";
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, no_store(), message).into_response());
    }
    session.cycle_id()?; // new rights, new identifier
    session.insert("name", &name)?;
    session.insert("visits", 0u64)?;
    session.flash("notice", format!("Signed in as {name}"))?;
    if form.remember.as_deref() == Some("yes") {
        session.remember(Some(std::time::Duration::from_secs(30 * 86_400)))?;
    }
    Ok(Redirect::to("/").into_response())
}

/// The sign-out form's field.
#[derive(Deserialize)]
struct SignOut {
    csrf_token: Option<String>,
}

async fn sign_out<S: SessionStore + 'static>(
    session: Session<S>,
    Form(form): Form<SignOut>,
) -> Result<Response, Error> {
    if !session.verify_csrf(form.csrf_token.as_deref()) {
        return Ok(expired_form());
    }
    session.destroy()?;
    Ok(Redirect::to("/").into_response())
}

fn expired_form() -> Response {
    let message = "This form has expired; reload the page and try again.\n";
    (StatusCode::FORBIDDEN, no_store(), message).into_response()
}

fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

/// The component's entry point: today's Spin SDK, one router per instance
/// (an instance serves up to 128 requests; building the router each time
/// cost a live session's 404 about 27 of its 186 us of host CPU), whose layer looks up the instance's sessions
/// (settings read once per instance) at each request.
#[cfg(target_arch = "wasm32")]
#[spin_sdk::http_service]
async fn serve(request: spin_sdk::http::Request) -> Response {
    use tower_service::Service;
    thread_local! {
        static ROUTER: Router = router(SessionLayer::spin());
    }
    ROUTER
        .with(Router::clone)
        .call(request)
        .await
        .into_response()
}
