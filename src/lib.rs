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
//! - `entry` (in this file, wasm only): the `wasi:http/incoming-handler`
//!   export, converting to and from WASI's HTTP types.

pub mod app;
pub mod bindings;
pub mod config;
pub mod form;
pub mod pages;
pub mod spin_store;

/// The key-value store holding the sessions (Spin's default store).
pub const STORE_LABEL: &str = "default";

/// The entry point: `wasi:http/incoming-handler`, exported directly rather
/// than through spin-sdk's `#[http_component]`. The response's body is
/// written and finished *before* the response is handed to Spin
/// (`ResponseOutparam::set`): Spin never sets `TCP_NODELAY`, and a response
/// that reaches its HTTP server before its body goes out in two writes, the
/// second held back ~40 ms by Nagle's algorithm until the client's delayed
/// ACK (`../shared/reference/spin-kv-behaviour.md`; spin-sdk 5.2 hands the
/// response over first).
///
/// Only compiled for wasm: everything it calls is tested natively through
/// [`app`].
#[cfg(target_arch = "wasm32")]
mod entry {
    use rand::rngs::OsRng;
    use rand::TryRngCore;
    use session_core::SessionManager;
    use wasip2::http::types::{
        Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
        ResponseOutparam,
    };
    use wasip2::io::streams::StreamError;

    use crate::app::{self, Body, Context, MAX_BODY_BYTES};
    use crate::bindings::fermyon::spin::variables;
    use crate::config::Settings;
    use crate::spin_store::SpinStore;
    use crate::STORE_LABEL;

    struct Component;

    impl wasip2::exports::http::incoming_handler::Guest for Component {
        fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
            let req = read_request(request);
            let response = answer(&req);
            send(response, req.method == "HEAD", response_out);
        }
    }

    wasip2::http::proxy::export!(Component);

    /// Serves one request with the settings, the store and the clock.
    fn answer(req: &app::Request) -> app::Response {
        let settings = Settings::from_variables(|name| variables::get(name).ok());
        let store = match SpinStore::open(STORE_LABEL) {
            Ok(store) => store,
            Err(err) => {
                eprintln!("sessions: opening the key-value store: {err}");
                return app_unavailable();
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
        app::handle(req, &mut cx)
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

    /// Converts WASI's request, reading a POST body up to the limit and no
    /// further: a client cannot make the component buffer more.
    fn read_request(request: IncomingRequest) -> app::Request {
        let method = match request.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Other(other) => other,
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
            read_body(request)
        };
        app::Request {
            method,
            path,
            headers,
            body,
        }
    }

    /// Reads the body up to [`MAX_BODY_BYTES`] + 1 bytes.
    fn read_body(request: IncomingRequest) -> Body {
        let Ok(incoming) = request.consume() else {
            return Body::Incomplete;
        };
        let Ok(stream) = incoming.stream() else {
            return Body::Incomplete;
        };
        let mut body = Vec::new();
        let outcome = loop {
            match stream.blocking_read((MAX_BODY_BYTES + 1 - body.len()) as u64) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_BODY_BYTES {
                        break Body::TooLarge;
                    }
                }
                Err(StreamError::Closed) => break Body::Complete(std::mem::take(&mut body)),
                // A body that ends early is not a form we can trust.
                Err(StreamError::LastOperationFailed(_)) => break Body::Incomplete,
            }
        };
        drop(stream);
        let _ = IncomingBody::finish(incoming);
        outcome
    }

    /// Hands the response to Spin with its body already complete (see the
    /// module docs). `head`: the answer to a HEAD request, whose length
    /// says nothing about the (empty) body sent.
    fn send(response: app::Response, head: bool, response_out: ResponseOutparam) {
        let fields = Fields::new();
        for (name, value) in &response.headers {
            // The app's headers are its own constants and escaped values; a
            // refusal here would be a bug, and the header is left out.
            let _ = fields.append(name, value.as_bytes());
        }
        if !head {
            let _ = fields.append("content-length", response.body.len().to_string().as_bytes());
        }
        let outgoing = OutgoingResponse::new(fields);
        let _ = outgoing.set_status_code(response.status);
        let body = outgoing.body().expect("the first call to body()");
        if let Ok(stream) = body.write() {
            write_all(&stream, &response.body);
        }
        let _ = OutgoingBody::finish(body, None);
        ResponseOutparam::set(response_out, Ok(outgoing));
    }

    /// Writes `bytes` in as few pieces as the stream takes. Before the
    /// response is handed over nobody drains the stream, but it takes a
    /// whole small body at once (its first write may be as large as the
    /// host's chunk size, 1 MiB in wasmtime).
    fn write_all(stream: &wasip2::io::streams::OutputStream, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = match stream.check_write() {
                Ok(0) => {
                    stream.subscribe().block();
                    continue;
                }
                Ok(room) => room.min(bytes.len() as u64) as usize,
                Err(_) => return,
            };
            if stream.write(&bytes[..room]).is_err() {
                return;
            }
            bytes = &bytes[room..];
        }
        let _ = stream.flush();
    }
}
