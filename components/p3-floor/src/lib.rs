//! The WASI 0.3 floor: what serving a request costs a spin-sdk 7 component
//! (`wasi:http/handler@0.3.0`, served with instance reuse) whose handler
//! does nothing at all. The WASI 0.2 floor (`components/floor`) is its
//! counterpart for spin-sdk 5.2.
//!
//! A component only: built for another target, the crate is empty (a native
//! library cannot carry `wasi:http`'s export names).
#![cfg(target_arch = "wasm32")]

use spin_sdk::http::Request;
use spin_sdk::http_service;

#[http_service]
async fn handle(_req: Request) -> &'static str {
    "ok"
}
