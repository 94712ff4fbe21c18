//! A Spin HTTP component that keeps HTTP sessions in Spin's key-value
//! store, serving the multi-form flow of the libmicrohttpd tutorial's
//! session chapter: `/` → `/2` → `/S` → `/F`, each form prefilled from what
//! the session stored before.
//!
//! - [`session_core`] (the `core/` crate): identifiers, cookies, records,
//!   expiry, the store trait; no I/O.
//! - [`spin_store`]: that trait over Spin's key-value store.
//! - [`config`]: settings from Spin variables.
//! - [`app`], [`form`], [`pages`]: the HTTP layer and the HTML.
//! - `entry` (in this file, wasm only): the Spin entry point, converting to and from Spin's types.

pub mod app;
pub mod config;
pub mod form;
pub mod pages;
pub mod spin_store;

/// The key-value store holding the sessions (Spin's default store).
pub const STORE_LABEL: &str = "default";

/// The Spin entry point. Only compiled for wasm: its export names are
/// component-model names a native linker cannot take, and everything it
/// calls is tested natively through [`app`].
#[cfg(target_arch = "wasm32")]
mod entry {
    use futures::StreamExt;
    use rand::rngs::OsRng;
    use rand::TryRngCore;
    use session_core::SessionManager;
    use spin_sdk::http::{IncomingRequest, Method, Response};
    use spin_sdk::http_component;

    use crate::app::{self, Body, Context, MAX_BODY_BYTES};
    use crate::config::Settings;
    use crate::spin_store::SpinStore;
    use crate::STORE_LABEL;

    #[http_component]
    async fn handle(request: IncomingRequest) -> Response {
        let req = read_request(request).await;
        let settings = Settings::from_variables(|name| spin_sdk::variables::get(name).ok());
        let store = match SpinStore::open(STORE_LABEL) {
            Ok(store) => store,
            Err(err) => {
                eprintln!("sessions: opening the key-value store: {err}");
                return into_spin(app_unavailable());
            }
        };
        let sessions = match &settings {
            Ok(s) => SessionManager::new(store, s.expiry).with_max_sessions(s.max_sessions),
            // Every request answers 500 then; the store is not touched.
            Err(_) => SessionManager::new(store, Default::default()),
        };
        let mut rng = OsRng.unwrap_err();
        let mut cx = Context {
            sessions: &sessions,
            settings,
            now: unix_now(),
            rng: &mut rng,
        };
        into_spin(app::handle(&req, &mut cx))
    }

    fn app_unavailable() -> app::Response {
        app::Response {
            status: 503,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: b"The session store is unavailable; please try again shortly.\n".to_vec(),
        }
    }

    fn unix_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    /// Converts Spin's request, reading a POST body up to the limit and no
    /// further: a client cannot make the component buffer more.
    async fn read_request(request: IncomingRequest) -> app::Request {
        let method = match request.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            other => other.to_string(),
        };
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let path = path_with_query.split('?').next().unwrap_or("/").to_owned();
        let headers: Vec<(String, Vec<u8>)> = request
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        let declared_length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
        let body = if method != "POST" {
            Body::Complete(Vec::new())
        } else if declared_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            Body::TooLarge
        } else {
            read_body(request).await
        };
        app::Request {
            method,
            path,
            headers,
            body,
        }
    }

    async fn read_body(request: IncomingRequest) -> Body {
        let mut stream = request.into_body_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_BODY_BYTES {
                        return Body::TooLarge;
                    }
                }
                // A body that ends early is not a form we can trust.
                Err(_) => return Body::Incomplete,
            }
        }
        Body::Complete(body)
    }

    fn into_spin(response: app::Response) -> Response {
        let mut builder = Response::builder();
        builder.status(response.status);
        for (name, value) in response.headers {
            builder.header(name, value);
        }
        builder.body(response.body).build()
    }
}
