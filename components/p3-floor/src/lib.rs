//! The WASI 0.3 floor: what serving a request costs a spin-sdk 7 component
//! (`wasi:http/handler@0.3.0`, served with instance reuse) whose handler
//! does nothing at all. The WASI 0.2 floor (`components/floor`) is its
//! counterpart for spin-sdk 5.2.
//!
//! Every path answers `200 ok`, as spin-sdk 7 answers a handler returning
//! `&'static str`: a one-chunk body that the SDK writes after `handle`
//! returned, without `content-length` (so hyper sends it chunked). The
//! query changes the response's shape, for the benchmark's keep-alive
//! measurement: `length=1` declares the body's `content-length`, and
//! `empty=1` leaves the body empty (`200` with no body).
//!
//! A component only: built for another target, the crate is empty (a native
//! library cannot carry `wasi:http`'s export names).
#![cfg(target_arch = "wasm32")]

use spin_sdk::http::{FullBody, HeaderName, HeaderValue, Request, Response};
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> Response<FullBody<&'static [u8]>> {
    let asked = |option: &str| {
        req.uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == option))
    };
    let body: &'static [u8] = if asked("empty=1") { b"" } else { b"ok" };
    // What `&'static str` becomes in spin-sdk 7.
    let mut response = Response::new(FullBody::new(body));
    if asked("length=1") {
        response.headers_mut().insert(
            HeaderName::from_static("content-length"),
            HeaderValue::from(body.len()),
        );
    }
    response
}
