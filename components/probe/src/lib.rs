//! A test fixture component: small HTTP routes that exercise the host's
//! key-value stores, variables, atomics and clock, so the host's tests can
//! drive every interface over real HTTP. Also the benchmark's floor: `/hello`
//! touches nothing.

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error as KvError, Store};
use spin_sdk::variables;

mod wasi_kv {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "spin-sessions:platform/keyvalue-imports",
        generate_all,
    });
}
use wasi_kv::wasi::keyvalue::{atomics, store as wasi_store};

#[http_component]
fn handle(req: Request) -> Response {
    let path = req.path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["hello"]) => text(200, "hello"),
        (Method::Get, ["trap"]) => panic!("the probe was asked to trap"),
        (Method::Get, ["kv", store, key]) => kv_get(store, key),
        (Method::Put, ["kv", store, key]) => kv_put(store, key, req.body()),
        (Method::Delete, ["kv", store, key]) => kv_delete(store, key),
        (Method::Get, ["var", name]) => var_get(name),
        (Method::Post, ["cas", key]) => cas(key, query_number(&req, "delay_ms"), req.body()),
        (Method::Post, ["incr", key]) => incr(key, query_number(&req, "delta")),
        (Method::Get, ["headers"]) => spin_headers(&req),
        (Method::Get, ["time"]) => wall_clock(),
        _ => text(404, "no such probe route"),
    }
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}

fn kv_error(err: KvError) -> Response {
    match err {
        KvError::AccessDenied => text(403, "access-denied"),
        KvError::NoSuchStore => text(404, "no-such-store"),
        KvError::StoreTableFull => text(503, "store-table-full"),
        KvError::Other(msg) => text(503, format!("other: {msg}")),
    }
}

fn kv_get(store: &str, key: &str) -> Response {
    match Store::open(store).and_then(|s| s.get(key)) {
        Ok(Some(value)) => Response::new(200, value),
        Ok(None) => text(404, "absent"),
        Err(e) => kv_error(e),
    }
}

fn kv_put(store: &str, key: &str, value: &[u8]) -> Response {
    match Store::open(store).and_then(|s| s.set(key, value)) {
        Ok(()) => Response::new(204, ()),
        Err(e) => kv_error(e),
    }
}

fn kv_delete(store: &str, key: &str) -> Response {
    match Store::open(store).and_then(|s| s.delete(key)) {
        Ok(()) => Response::new(204, ()),
        Err(e) => kv_error(e),
    }
}

fn var_get(name: &str) -> Response {
    match variables::get(name) {
        Ok(value) => text(200, value),
        Err(variables::Error::Undefined(_)) => text(404, "undefined"),
        Err(variables::Error::InvalidName(_)) => text(400, "invalid-name"),
        Err(e) => text(500, format!("{e:?}")),
    }
}

fn query_number(req: &Request, name: &str) -> i64 {
    req.query()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn wasi_error(err: wasi_store::Error) -> Response {
    text(503, format!("{err:?}"))
}

/// Reads the key through a CAS handle, waits, then tries to swap: two such
/// requests at once must not both win.
fn cas(key: &str, delay_ms: i64, value: &[u8]) -> Response {
    let bucket = match wasi_store::open("default") {
        Ok(b) => b,
        Err(e) => return wasi_error(e),
    };
    let handle = match atomics::Cas::new(&bucket, key) {
        Ok(h) => h,
        Err(e) => return wasi_error(e),
    };
    std::thread::sleep(std::time::Duration::from_millis(delay_ms.max(0) as u64));
    match atomics::swap(handle, value) {
        Ok(()) => text(200, "won"),
        Err(atomics::CasError::CasFailed(_)) => text(409, "lost"),
        Err(atomics::CasError::StoreError(e)) => wasi_error(e),
    }
}

fn incr(key: &str, delta: i64) -> Response {
    match wasi_store::open("default").and_then(|b| atomics::increment(&b, key, delta)) {
        Ok(n) => text(200, n.to_string()),
        Err(e) => wasi_error(e),
    }
}

fn spin_headers(req: &Request) -> Response {
    let mut lines: Vec<String> = req
        .headers()
        .filter(|(name, _)| name.starts_with("spin-"))
        .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or("<binary>")))
        .collect();
    lines.sort();
    text(200, lines.join("\n"))
}

fn wall_clock() -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    text(200, now.to_string())
}
