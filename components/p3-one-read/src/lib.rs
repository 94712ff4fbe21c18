//! A spin-sdk 7 component (`wasi:http/handler@0.3.0`) that makes exactly one
//! key-value read per request and answers: the benchmark's one-read floor
//! for WASI 0.3, the counterpart of `components/handover` with `?kv=1`.
//!
//! Routes (the host's tests use the others):
//! - any path not below: one `get` of the key `one-read` in the `default`
//!   store, through `wasi:keyvalue/store@0.2.0-draft2` (as Spin links it:
//!   a blocking host function), then `200 one-read`, its body written by
//!   spin-sdk after `handle` returned, without `content-length` (chunked);
//!   with `length=1` in the query, with `content-length` (the benchmark's
//!   keep-alive measurement compares the two);
//! - `/sleep/<ms>`: waits `<ms>` milliseconds on WASI 0.3's monotonic clock
//!   (an async import: the instance can serve other requests meanwhile),
//!   no key-value call, then `200 slept`;
//! - `/variable`: one `fermyon:spin/variables@2.0.0` get of `greeting`,
//!   answered as the body.
//!
//! A component only: built for another target, the crate is empty (a native
//! library cannot carry `wasi:http`'s export names).
#![cfg(target_arch = "wasm32")]

use spin_sdk::http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use spin_sdk::http_service;
use spin_sdk::wasip3::clocks::monotonic_clock;

mod bindings {
    // The project's own WIT for what Spin defines (spin-sdk 7 binds
    // neither wasi:keyvalue outside its hidden experimental module, nor
    // fermyon:spin/variables at all).
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        path: "../../sessions/wit",
        world: "spin-sessions:platform/component-imports",
        generate_all,
    });
}
use bindings::fermyon::spin::variables;
use bindings::wasi::keyvalue::store;

#[http_service]
async fn handle(req: Request) -> Response<String> {
    let length = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "length=1"));
    let (status, body) = answer(req.uri().path()).await;
    // What `(StatusCode, String)` becomes in spin-sdk 7, and the length if
    // asked for.
    let len = HeaderValue::from(body.len());
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if length {
        response
            .headers_mut()
            .insert(HeaderName::from_static("content-length"), len);
    }
    response
}

async fn answer(path: &str) -> (StatusCode, String) {
    if let Some(ms) = path.strip_prefix("/sleep/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return (StatusCode::BAD_REQUEST, "bad milliseconds\n".into());
        };
        monotonic_clock::wait_for(ms.saturating_mul(1_000_000)).await;
        return (StatusCode::OK, "slept\n".into());
    }
    if path == "/variable" {
        return match variables::get("greeting") {
            Ok(value) => (StatusCode::OK, value),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}\n")),
        };
    }
    match store::open("default").and_then(|bucket| bucket.get("one-read")) {
        Ok(_) => (StatusCode::OK, "one-read\n".into()),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("key-value get failed: {e:?}\n"),
        ),
    }
}
