//! A test fixture component that exports `wasi:http/incoming-handler`
//! directly (no spin-sdk), so the order in which it hands over its response
//! and writes its body is its own choice.
//!
//! It reads the whole request body, then, as the query string says:
//! - `kv=1`: one key-value `get` of the key `handover` in the `default`
//!   store (through `wasi:keyvalue/store@0.2.0-draft2`);
//! - `order=late` (the default): `ResponseOutparam::set` first, then write
//!   and finish the body, as spin-sdk 5.2 does; `order=early`: write and
//!   finish the body first, then `set`;
//! - `length=1`: the response carries a `content-length`.
//! - `pause_ms=N`: wait N ms between the two steps of the hand-over (for a
//!   late one: after `set`, before the body), so that the host certainly
//!   sees the response before its body.
//!
//! The answer is `200` with the short body `handover\n`, or `400` for a query
//! it does not understand.
//!
//! A component only: built for another target, the crate is empty (a native
//! library cannot carry `wasi:http`'s export names).
#![cfg(target_arch = "wasm32")]

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

mod wasi_kv {
    wit_bindgen::generate!({
        path: "../../sessions/wit",
        world: "spin-sessions:platform/keyvalue-imports",
        generate_all,
    });
}
use wasi_kv::wasi::keyvalue::store;

/// The body of every successful answer.
const BODY: &[u8] = b"handover\n";

wasip2::http::proxy::export!(Handover);

struct Handover;

/// When the response is handed to the host relative to its body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// `set`, then the body (spin-sdk's order).
    Late,
    /// The body, finished, then `set`.
    Early,
}

/// What the query string asks for.
struct Plan {
    kv: bool,
    order: Order,
    length: bool,
    pause_ms: u64,
}

impl wasip2::exports::http::incoming_handler::Guest for Handover {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let plan = request.path_with_query().as_deref().map(parse_plan);
        if !read_body(request) {
            return respond(out, 400, b"cannot read the request body\n", &Plan::ERROR);
        }
        let Some(Ok(plan)) = plan else {
            return respond(out, 400, b"bad query\n", &Plan::ERROR);
        };
        if plan.kv {
            if let Err(e) = kv_get() {
                let message = format!("key-value get failed: {e:?}\n");
                return respond(out, 500, message.as_bytes(), &Plan::ERROR);
            }
        }
        respond(out, 200, BODY, &plan);
    }
}

/// Parses `kv`, `order` and `length` from the query; anything else is an
/// error.
fn parse_plan(path_with_query: &str) -> Result<Plan, ()> {
    let mut plan = Plan {
        kv: false,
        order: Order::Late,
        length: false,
        pause_ms: 0,
    };
    let query = path_with_query.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("kv", v) => plan.kv = flag(v)?,
            ("length", v) => plan.length = flag(v)?,
            ("order", "late") => plan.order = Order::Late,
            ("order", "early") => plan.order = Order::Early,
            ("pause_ms", v) => plan.pause_ms = v.parse().map_err(drop)?,
            _ => return Err(()),
        }
    }
    Ok(plan)
}

fn flag(value: &str) -> Result<bool, ()> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(()),
    }
}

/// Reads the request body to its end; false if it cannot be read.
fn read_body(request: IncomingRequest) -> bool {
    let Ok(body) = request.consume() else {
        return false;
    };
    let Ok(stream) = body.stream() else {
        return false;
    };
    loop {
        match stream.blocking_read(16 * 1024) {
            Ok(_) => continue,
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return false,
        }
    }
    // The stream is a child of the body: it goes first.
    drop(stream);
    drop(IncomingBody::finish(body));
    true
}

/// One `get`; the value (normally absent) does not matter.
fn kv_get() -> Result<(), store::Error> {
    store::open("default")?.get("handover").map(drop)
}

impl Plan {
    /// How errors are answered: body first, no pause.
    const ERROR: Plan = Plan {
        kv: false,
        order: Order::Early,
        length: false,
        pause_ms: 0,
    };
}

/// Answers `status` with `body`, handing the response over as `plan` says.
fn respond(out: ResponseOutparam, status: u16, body: &[u8], plan: &Plan) {
    let response = OutgoingResponse::new(headers(body.len(), plan.length));
    // Only an invalid status code fails, and these are all valid.
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    let pause = std::time::Duration::from_millis(plan.pause_ms);
    if plan.order == Order::Late {
        ResponseOutparam::set(out, Ok(response));
        std::thread::sleep(pause);
        write_body(outgoing, body);
    } else {
        write_body(outgoing, body);
        std::thread::sleep(pause);
        ResponseOutparam::set(out, Ok(response));
    }
}

fn headers(len: usize, length: bool) -> Fields {
    let mut entries = vec![("content-type".to_string(), b"text/plain".to_vec())];
    if length {
        entries.push(("content-length".to_string(), len.to_string().into_bytes()));
    }
    // Fixed, valid names and values: this cannot fail.
    Fields::from_list(&entries).unwrap_or_else(|_| Fields::new())
}

/// Writes `body` and finishes it; failures (the client went away) are
/// ignored, as there is nobody left to tell.
fn write_body(outgoing: OutgoingBody, body: &[u8]) {
    if let Ok(mut stream) = outgoing.write() {
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
