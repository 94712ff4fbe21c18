//! A test fixture component: small HTTP routes that exercise the host's
//! key-value stores, variables, atomics and clock, so the host's tests can
//! drive every interface over real HTTP. Also the benchmark's floor: `/hello`
//! touches nothing.
//!
//! A component only: built for another target, the crate is empty (a native
//! library cannot carry `wasi:http`'s export names).
#![cfg(target_arch = "wasm32")]

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error as KvError, Store};
use spin_sdk::variables;

mod wasi_kv {
    wit_bindgen::generate!({
        path: "../../sessions/wit",
        world: "spin-sessions:platform/keyvalue-imports",
        generate_all,
    });
}
use wasi_kv::wasi::keyvalue::{atomics, batch, store as wasi_store};

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
        (Method::Post, ["cas-race", key]) => cas_race(key, &req),
        (Method::Post, ["get-many"]) => get_many(req.body()),
        (Method::Post, ["cas-handles", key]) => cas_handles(key, query_number(&req, "count")),
        (Method::Post, ["open-stores"]) => open_stores(query_number(&req, "count")),
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

/// Makes a CAS handle, waits, then swaps without ever calling `current`
/// (on both of Spin's stores that writes unconditionally).
fn cas(key: &str, delay_ms: i64, value: &[u8]) -> Response {
    let (_bucket, handle) = match cas_handle(key) {
        Ok(opened) => opened,
        Err(e) => return wasi_error(e),
    };
    sleep_ms(delay_ms);
    match atomics::swap(handle, value) {
        Ok(()) => text(200, "won"),
        Err(atomics::CasError::CasFailed(_)) => text(409, "lost"),
        Err(atomics::CasError::StoreError(e)) => wasi_error(e),
    }
}

/// Opens `default` and makes a compare-and-swap handle for `key`; the
/// bucket is returned too, kept open as long as the handle (the
/// reference's call sequence).
fn cas_handle(key: &str) -> Result<(wasi_store::Bucket, atomics::Cas), wasi_store::Error> {
    let bucket = wasi_store::open("default")?;
    let handle = atomics::Cas::new(&bucket, key)?;
    Ok((bucket, handle))
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

/// Sleeps inside the request (wasi:clocks monotonic-clock `subscribe` and
/// `poll`, as std's `sleep` does on wasip2), so that two requests overlap
/// as the reference's race scenarios need.
fn sleep_ms(ms: i64) {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms as u64));
    }
}

/// One side of a compare-and-swap race, as the reference's probe plays it:
/// wait `wait_ms`, open `default`, `cas.new key`, `current`, wait
/// `hold_ms`, `swap` the body in. Answers 200 with
/// `current=<value|absent> swap=<ok|cas-failed>`; a store error is 503.
fn cas_race(key: &str, req: &Request) -> Response {
    sleep_ms(query_number(req, "wait_ms"));
    let (_bucket, handle) = match cas_handle(key) {
        Ok(opened) => opened,
        Err(e) => return wasi_error(e),
    };
    let current = match handle.current() {
        Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
        Ok(None) => "absent".to_owned(),
        Err(e) => return wasi_error(e),
    };
    sleep_ms(query_number(req, "hold_ms"));
    let swap = match atomics::swap(handle, req.body()) {
        Ok(()) => "ok".to_owned(),
        Err(atomics::CasError::CasFailed(_)) => "cas-failed".to_owned(),
        Err(atomics::CasError::StoreError(e)) => return wasi_error(e),
    };
    text(200, format!("current={current} swap={swap}"))
}

/// `batch.get-many` of the body's keys (one per line) on `default`: one
/// line per pair answered, `key=value` or `key absent`; a store error is
/// 503 with the error.
fn get_many(body: &[u8]) -> Response {
    let keys: Vec<String> = String::from_utf8_lossy(body)
        .lines()
        .map(str::to_owned)
        .collect();
    let pairs = match wasi_store::open("default").and_then(|b| batch::get_many(&b, &keys)) {
        Ok(pairs) => pairs,
        Err(e) => return wasi_error(e),
    };
    let lines: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| match value {
            Some(value) => format!("{key}={}", String::from_utf8_lossy(&value)),
            None => format!("{key} absent"),
        })
        .collect();
    text(200, lines.join("\n"))
}

/// Makes `count` cas handles on `key` and keeps them all: answers how many
/// were made, and the first error (Spin's cas table holds 256).
fn cas_handles(key: &str, count: i64) -> Response {
    let bucket = match wasi_store::open("default") {
        Ok(b) => b,
        Err(e) => return wasi_error(e),
    };
    let mut kept = Vec::new();
    for _ in 0..count {
        match atomics::Cas::new(&bucket, key) {
            Ok(h) => kept.push(h),
            Err(e) => return text(200, format!("made={} error={e:?}", kept.len())),
        }
    }
    text(200, format!("made={}", kept.len()))
}

/// Opens `default` `count` times with Spin's interface and keeps every
/// store: answers how many opened, and the first error (Spin's store table
/// holds 256).
fn open_stores(count: i64) -> Response {
    let mut kept = Vec::new();
    for _ in 0..count {
        match Store::open("default") {
            Ok(s) => kept.push(s),
            Err(e) => return text(200, format!("opened={} error={e:?}", kept.len())),
        }
    }
    text(200, format!("opened={}", kept.len()))
}
