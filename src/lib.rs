//! The tutorial's session chapter as a Spin component: the multi-form flow
//! `/` → `/2` → `/S` → `/F` of the libmicrohttpd tutorial, each form
//! prefilled from what the session stored before, built only on the
//! `spin-sessions` library's public API.
//!
//! - [`app`]: routing, forms, CSRF, post/redirect/get, `/api/session`,
//!   `/logout`, status codes; generic over the store, tested natively;
//! - [`form`]: strict form decoding (URL-encoded and multipart);
//! - [`pages`]: the four HTML pages, every stored value escaped.
//!
//! The entry point (wasm only) opens the sessions in Spin's `default`
//! store, configured from Spin variables, and serves [`app::handle`].

pub mod app;
pub mod form;
pub mod pages;

/// The component's handler: sessions from Spin, then the app.
#[cfg(target_arch = "wasm32")]
fn serve(request: app::Request) -> app::Response {
    match spin_sessions::spin::sessions() {
        Ok(sessions) => app::handle(&request, &sessions),
        Err(err) => app::setup_failed(&err),
    }
}

#[cfg(target_arch = "wasm32")]
spin_sessions::http_component!(serve, max_body_bytes = app::MAX_BODY_BYTES);
