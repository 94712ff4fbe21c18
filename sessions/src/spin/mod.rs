//! Sessions in a Spin component (wasm only): Spin's key-value store as a
//! [`SessionStore`](crate::SessionStore), the settings from Spin variables,
//! and an entry point that serves `http` types.
//!
//! ```ignore
//! use spin_sessions::{spin, Error};
//!
//! fn handle(request: http::Request<spin_sessions::RequestBody>) -> http::Response<Vec<u8>> {
//!     let sessions = match spin::sessions() {
//!         Ok(sessions) => sessions,
//!         Err(err) => return err.into_response(),
//!     };
//!     // ... load, use and save the session ...
//! #   unimplemented!()
//! }
//!
//! spin_sessions::http_component!(handle);
//! ```

mod bindings;
mod store;

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::{OutputStream, StreamError};

pub use store::SpinStore;

use std::sync::Arc;

use crate::{BodyError, Config, ConfigError, Error, RequestBody, Sessions};

/// The store a Spin component gets unless it names another.
pub const DEFAULT_STORE: &str = "default";

/// What [`serve`] reads of a request body unless told otherwise: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

#[doc(hidden)]
pub use wasip2 as __wasip2;

/// Reads the [`Config`] from the component's Spin variables (names in
/// [`crate::VARIABLES`]); a variable the component does not declare keeps
/// its default.
pub fn config_from_variables() -> Result<Config, ConfigError> {
    Config::from_lookup(|name| bindings::fermyon::spin::variables::get(name).ok())
}

/// Sessions in the `default` key-value store, configured from Spin
/// variables. The component must list the store in `key_value_stores`.
pub fn sessions() -> Result<Sessions<SpinStore>, Error> {
    sessions_in(DEFAULT_STORE)
}

/// Sessions in the key-value store `label`, configured from Spin variables.
pub fn sessions_in(label: &str) -> Result<Sessions<SpinStore>, Error> {
    let config = config_from_variables()?;
    Sessions::new(SpinStore::open(label)?, config)
}

/// How long an instance keeps the [`Sessions`] of [`shared_sessions`]
/// (the settings read from Spin variables, the store's signing key) before
/// it reads them again: a changed variable takes effect within this time
/// in every instance (and at once in a new one).
pub const SHARED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

thread_local! {
    /// The instance's sessions, and when they were made. (A component has
    /// one thread; the requests a reused instance serves at once take
    /// turns on it.)
    static SHARED: std::cell::RefCell<Option<(Arc<Sessions<SpinStore>>, std::time::Instant)>> =
        const { std::cell::RefCell::new(None) };
}

/// [`sessions`], made once and shared by the requests a reused instance
/// serves (Spin reuses WASI 0.3 components' instances, up to 128 requests,
/// 16 at once): the 14 variable reads and the signing key's read are done
/// once per [`SHARED_FOR`], not once per request. Nothing of a request is
/// kept in it: a [`crate::Session`] is each request's own.
pub fn shared_sessions() -> Result<Arc<Sessions<SpinStore>>, Error> {
    SHARED.with(|cell| {
        if let Some((sessions, made)) = &*cell.borrow() {
            if made.elapsed() < SHARED_FOR {
                return Ok(sessions.clone());
            }
        }
        let fresh = Arc::new(sessions()?);
        *cell.borrow_mut() = Some((fresh.clone(), std::time::Instant::now()));
        Ok(fresh)
    })
}

/// Serves one `wasi:http` request with `handler`: converts the request to
/// `http` types (the body read up to `max_body_bytes` and no further), and
/// hands the response back with its body already complete.
///
/// The order matters under Spin: its HTTP server never sets `TCP_NODELAY`,
/// and a response handed over before its body is complete goes out in two
/// writes, the second held ~40 ms by Nagle's algorithm until the client's
/// delayed ACK. Finishing the body first sends it in one.
pub fn serve(
    request: IncomingRequest,
    response_out: ResponseOutparam,
    max_body_bytes: usize,
    handler: impl FnOnce(http::Request<RequestBody>) -> http::Response<Vec<u8>>,
) {
    let head = matches!(request.method(), Method::Head);
    let request = read_request(request, max_body_bytes);
    send(handler(request), head, response_out);
}

/// Exports `wasi:http/incoming-handler` with a handler of `http` types,
/// through [`serve`]: `http_component!(handle)`, or
/// `http_component!(handle, max_body_bytes = 16384)`.
#[macro_export]
macro_rules! http_component {
    ($handler:path) => {
        $crate::http_component!($handler, max_body_bytes = $crate::spin::DEFAULT_MAX_BODY_BYTES);
    };
    ($handler:path, max_body_bytes = $limit:expr) => {
        const _: () = {
            struct SessionsComponent;
            impl $crate::spin::__wasip2::exports::http::incoming_handler::Guest for SessionsComponent {
                fn handle(
                    request: $crate::spin::__wasip2::http::types::IncomingRequest,
                    response_out: $crate::spin::__wasip2::http::types::ResponseOutparam,
                ) {
                    $crate::spin::serve(request, response_out, $limit, $handler)
                }
            }
            $crate::spin::__wasip2::http::proxy::export!(
                SessionsComponent with_types_in $crate::spin::__wasip2
            );
        };
    };
}

fn read_request(request: IncomingRequest, max_body_bytes: usize) -> http::Request<RequestBody> {
    let method = method(request.method());
    let uri = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let headers = read_headers(&request);
    let body = if !has_body(&method, &headers) {
        Ok(Vec::new())
    } else if declared_length(&headers).is_some_and(|n| n > max_body_bytes as u64) {
        Err(BodyError::TooLarge {
            limit: max_body_bytes,
        })
    } else {
        read_body(request, max_body_bytes)
    };
    let Ok(uri) = http::Uri::try_from(uri) else {
        // A path Spin let through but `http` refuses: served as `/`, with
        // no headers, so the handler still answers.
        return http::Request::new(Err(BodyError::Incomplete));
    };
    let mut converted = http::Request::new(body);
    *converted.method_mut() = method;
    *converted.uri_mut() = uri;
    *converted.headers_mut() = headers;
    converted
}

/// The request's header fields, in one call to the host. Spin's server
/// lets through only fields `http` also takes; any other is left out.
fn read_headers(request: &IncomingRequest) -> http::HeaderMap {
    let entries = request.headers().entries();
    let mut headers = http::HeaderMap::with_capacity(entries.len());
    for (name, value) in entries {
        let name = http::HeaderName::from_bytes(name.as_bytes());
        let value = http::HeaderValue::from_bytes(&value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    headers
}

/// Whether the request may carry a body. A GET or HEAD declaring neither a
/// length nor a transfer coding has none (RFC 9110 §6.4.1, RFC 9112 §6.3):
/// nothing to read, and the calls to the host that reading takes are saved
/// on every page view.
fn has_body(method: &http::Method, headers: &http::HeaderMap) -> bool {
    let bodiless_method = method == http::Method::GET || method == http::Method::HEAD;
    !bodiless_method
        || headers.contains_key(http::header::CONTENT_LENGTH)
        || headers.contains_key(http::header::TRANSFER_ENCODING)
}

/// The body's length as the request declares it, when it does.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::CONTENT_LENGTH)?;
    value.to_str().ok()?.trim().parse().ok()
}

fn method(method: Method) -> http::Method {
    match method {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Patch => http::Method::PATCH,
        Method::Options => http::Method::OPTIONS,
        Method::Connect => http::Method::CONNECT,
        Method::Trace => http::Method::TRACE,
        Method::Other(other) => {
            http::Method::from_bytes(other.as_bytes()).unwrap_or(http::Method::GET)
        }
    }
}

/// Reads the body up to `limit` + 1 bytes: a client cannot make the
/// component buffer more.
fn read_body(request: IncomingRequest, limit: usize) -> RequestBody {
    let Ok(incoming) = request.consume() else {
        return Err(BodyError::Incomplete);
    };
    let Ok(stream) = incoming.stream() else {
        return Err(BodyError::Incomplete);
    };
    let mut body = Vec::new();
    let outcome = loop {
        match stream.blocking_read((limit + 1 - body.len()) as u64) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > limit {
                    break Err(BodyError::TooLarge { limit });
                }
            }
            Err(StreamError::Closed) => break Ok(std::mem::take(&mut body)),
            // A body that ends early is not one to trust.
            Err(StreamError::LastOperationFailed(_)) => break Err(BodyError::Incomplete),
        }
    };
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    outcome
}

/// Hands the response to Spin with its body already complete (see
/// [`serve`]). `head`: the answer to a HEAD request, sent without a body
/// and without a length that would describe one.
fn send(response: http::Response<Vec<u8>>, head: bool, response_out: ResponseOutparam) {
    let (parts, body) = response.into_parts();
    let mut entries: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    if !head && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        entries.push((
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ));
    }
    // One call for all the headers: each call crosses into the host.
    let fields = Fields::from_list(&entries).unwrap_or_else(|_| {
        // A header the host refuses (a forbidden one): the others still go.
        let fields = Fields::new();
        for (name, value) in &entries {
            let _ = fields.append(name, value);
        }
        fields
    });
    let outgoing = OutgoingResponse::new(fields);
    let _ = outgoing.set_status_code(parts.status.as_u16());
    let outgoing_body = outgoing.body().expect("the first call to body()");
    if !head {
        if let Ok(stream) = outgoing_body.write() {
            write_all(&stream, &body);
        }
    }
    let _ = OutgoingBody::finish(outgoing_body, None);
    ResponseOutparam::set(response_out, Ok(outgoing));
}

/// Writes `bytes` in as few pieces as the stream takes. Before the response
/// is handed over nobody drains the stream, but it takes a whole small body
/// at once (its first write may be as large as the host's chunk size).
fn write_all(stream: &OutputStream, mut bytes: &[u8]) {
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
