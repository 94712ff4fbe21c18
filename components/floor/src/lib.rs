//! The benchmark's floor: what serving a request costs when the handler
//! does nothing at all. Same SDK, same host, same store as the sessions
//! component, so the ratio of the two is the price of sessions.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: Request) -> Response {
    Response::new(200, "ok")
}
