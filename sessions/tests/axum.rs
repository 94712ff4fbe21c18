//! The axum layer and extractor, natively, through a real router: the
//! session is loaded before the handler and saved after it, with its
//! cookie; errors answer as the library's; a router without the layer is
//! a clear 500.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use spin_sessions::axum::{Session, SessionLayer};
use spin_sessions::{Error, MemoryStore, Sessions};
use tower::ServiceExt;

async fn visits(session: Session<MemoryStore>) -> Result<String, Error> {
    let count: u64 = session.get("visits")?.unwrap_or(0) + 1;
    session.insert("visits", count)?;
    Ok(format!("Visit number {count}"))
}

async fn wrong_type(session: Session<MemoryStore>) -> Result<String, Error> {
    let visits: Option<String> = session.get("visits")?;
    Ok(format!("{visits:?}"))
}

async fn sign_out(session: Session<MemoryStore>) -> Result<&'static str, Error> {
    session.destroy()?;
    Ok("bye")
}

fn app(sessions: &Arc<Sessions<MemoryStore>>) -> Router {
    Router::new()
        .route("/", get(visits))
        .route("/wrong", get(wrong_type))
        .route("/out", post(sign_out))
        .layer(SessionLayer::new(sessions.clone()))
}

async fn send(
    app: Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut request = http::Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = app
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, cookie, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_visit_counter_through_the_layer() {
    let sessions = Arc::new(Sessions::new(MemoryStore::new(), Default::default()).unwrap());
    let (status, cookie, body) = send(app(&sessions), "GET", "/", None).await;
    assert_eq!((status, body.as_str()), (200, "Visit number 1"));
    let cookie = cookie.expect("the new session's cookie");
    for n in 2..=4 {
        let (status, again, body) = send(app(&sessions), "GET", "/", Some(&cookie)).await;
        assert_eq!((status, body), (200, format!("Visit number {n}")));
        assert!(again.is_none(), "the cookie is kept");
    }
    // A value of the wrong type is the library's 500; a sign-out expires
    // the cookie and ends the session.
    let (status, _, _) = send(app(&sessions), "GET", "/wrong", Some(&cookie)).await;
    assert_eq!(status, 500);
    let (status, expired, _) = send(app(&sessions), "POST", "/out", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(expired.as_deref(), Some("session="));
    let (_, fresh, body) = send(app(&sessions), "GET", "/", Some(&cookie)).await;
    assert_eq!(body, "Visit number 1");
    assert_ne!(fresh, Some(cookie));
}

#[tokio::test]
async fn a_store_failure_on_save_is_the_librarys_503() {
    let sessions = Arc::new(Sessions::new(MemoryStore::new(), Default::default()).unwrap());
    let (_, cookie, _) = send(app(&sessions), "GET", "/", None).await;
    sessions.store().set_failing(true);
    let (status, _, body) = send(app(&sessions), "GET", "/", cookie.as_deref()).await;
    assert_eq!(status, 503);
    assert!(body.contains("nothing was saved"), "{body}");
}

#[tokio::test]
async fn a_router_without_the_layer_is_a_clear_500() {
    let app: Router = Router::new().route("/", get(visits));
    let (status, cookie, body) = send(app, "GET", "/", None).await;
    assert_eq!(status, 500);
    assert!(cookie.is_none());
    assert!(body.contains("could not use this session"), "{body}");
}
