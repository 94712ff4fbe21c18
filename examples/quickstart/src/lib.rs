//! The quick start of spin-sessions' README, as a component: the README
//! shows this file (a test checks that they agree).
#![cfg(target_arch = "wasm32")]

use axum::{response::IntoResponse, routing::get, Router};
use spin_sessions::axum::{Session, SessionLayer};
use tower_service::Service;

/// Counts the visitor's visits; the layer saves the session after it.
async fn visits(session: Session) -> Result<String, spin_sessions::Error> {
    // `update`, not get + insert: concurrent requests all count.
    let n = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)?;
    Ok(format!("Visit number {n}\n"))
}

#[spin_sdk::http_service]
async fn serve(request: spin_sdk::http::Request) -> axum::response::Response {
    let app = Router::new().route("/", get(visits));
    let mut app = app.layer(SessionLayer::spin());
    app.call(request).await.into_response()
}
