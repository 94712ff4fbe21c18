//! The benchmark's floor: what serving a request costs when the handler
//! does nothing at all, written with spin-sdk as most Spin components are.
//! Same host and same store as the sessions component, so the ratio of the
//! two is the price of sessions.
//!
//! A component only: built for another target, the crate is empty (a native
//! library cannot carry `wasi:http`'s export names).
#![cfg(target_arch = "wasm32")]

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: Request) -> Response {
    Response::new(200, "ok")
}
