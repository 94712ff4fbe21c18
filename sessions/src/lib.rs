//! HTTP sessions for [Spin](https://spinframework.dev) WebAssembly
//! components, kept in Spin's key-value store.
//!
//! ```
//! use spin_sessions::{Config, MemoryStore, Sessions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a Spin component: `spin_sessions::spin::sessions()?`, which opens
//! // the `default` store and reads the settings from Spin variables.
//! let sessions = Sessions::new(MemoryStore::new(), Config::default())?;
//!
//! let request = http::Request::get("/").body(())?;
//! let mut session = sessions.load(&request)?;
//! let visits: u64 = session.get("visits")?.unwrap_or(0);
//! session.insert("visits", visits + 1)?;
//!
//! let mut response = http::Response::new(format!("visit number {}", visits + 1));
//! session.save(&mut response)?;
//! assert!(response.headers().contains_key("set-cookie"));
//! # Ok(())
//! # }
//! ```
//!
//! What it guarantees, on Spin's stores as they really are (SQLite and
//! Redis, defects included):
//!
//! - **No lost updates.** A save is a compare-and-swap that re-applies the
//!   request's own changes when another request saved first: changes to
//!   different keys are all kept; for the same key the last save wins.
//! - **Nothing stored for anonymous visitors.** A session is created by its
//!   first change. A visitor with nothing stored can still get a CSRF token
//!   for a form ([`Session::csrf_token`]), signed for a *pending* identifier
//!   that only this application can issue.
//! - **Expiry without background tasks.** Idle and absolute timeouts are
//!   checked from timestamps on every load; sessions whose clients never
//!   return are swept a bounded step at a time by the requests that create
//!   sessions, through an expiry index in the store.
//! - **A cap** on the number of stored sessions (`max_sessions`).
//! - **Constant work per request**, whatever the number of sessions: a
//!   load is one read, a save one write plus what the store needs to make
//!   it safe.
//!
//! The pieces: [`Sessions`] (the store and the [`Config`]), [`Session`] (a
//! request's session), [`Error`], and for components the [`spin`] module
//! (wasm only): Spin's store, settings from Spin variables, and the
//! `wasi:http` entry point.
// Documentation built for another target than wasm32 has no `spin` module:
// its links go to docs.rs, which documents the wasm32-wasip2 build.
#![cfg_attr(
    not(target_arch = "wasm32"),
    doc = "\n\n[`spin`]: https://docs.rs/spin-sessions/latest/spin_sessions/spin/index.html"
)]
// docs.rs (nightly, `--cfg docsrs`) labels what needs a feature or wasm32.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(feature = "axum")]
pub mod axum;
mod body;
mod config;
mod error;
mod request;
mod session;
#[cfg(target_arch = "wasm32")]
pub mod spin;

pub use body::{BodyError, RequestBody};
pub use config::{Config, ConfigError, VARIABLES};
pub use error::Error;
pub use request::CROSS_ORIGIN_VARY;
pub use session::Session;
pub use spin_sessions_core::time;
pub use spin_sessions_core::{
    CookieConfig, ExpiryPolicy, MemoryStore, SameSite, Secure, SessionStore, StoreError,
};

use std::sync::Arc;

use session::{Held, RequestFacts};
use spin_sessions_core::{CookieId, Found, PendingId, Prefixed, SessionManager};

/// Sessions in a store, with their configuration, used to
/// [`load`](Sessions::load) each request's [`Session`]. Made once per
/// request, or once per instance and shared by the requests a reused
/// instance serves (nothing of one request stays in it:
/// [`spin::shared_sessions`] on wasm).
#[cfg_attr(
    not(target_arch = "wasm32"),
    doc = "\n\n[`spin::shared_sessions`]: https://docs.rs/spin-sessions/latest/spin_sessions/spin/fn.shared_sessions.html"
)]
pub struct Sessions<S: SessionStore> {
    manager: SessionManager<Prefixed<S>>,
    config: Config,
}

impl<S: SessionStore> Sessions<S> {
    /// Sessions in `store`, configured by `config` (checked: cookie
    /// settings that browsers would refuse are an error).
    pub fn new(store: S, config: Config) -> Result<Self, Error> {
        config.validate()?;
        let manager = SessionManager::new(
            Prefixed::new(store, config.key_prefix.clone()),
            config.expiry,
        )
        .with_max_sessions(config.max_sessions)
        .with_protection_window(config.protection_window_secs);
        Ok(Sessions { manager, config })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store the sessions are in (without the key prefix).
    pub fn store(&self) -> &S {
        self.manager.store().inner()
    }

    /// The session of `request`, found by its cookie: one read when the
    /// cookie names a stored session, none when there is no cookie. An
    /// expired or unreadable record is deleted on the way (one write), and
    /// the visitor starts afresh with nothing stored.
    pub fn load<B>(&self, request: &http::Request<B>) -> Result<Session<'_, S>, Error> {
        let mut session = self.load_at(request, unix_now())?;
        session.read_clock_at_save();
        Ok(session)
    }

    /// [`Sessions::load`] at the time `now` (Unix seconds) instead of the
    /// clock's, for the load and the save alike: for tests, and for callers
    /// with a clock of their own.
    pub fn load_at<B>(
        &self,
        request: &http::Request<B>,
        now: i64,
    ) -> Result<Session<'_, S>, Error> {
        let (facts, stored, pending) = self.read(request, now)?;
        Ok(Session::new(
            Held::Borrowed(self),
            now,
            facts,
            stored,
            pending,
        ))
    }

    /// [`Sessions::load`] for a session that holds on to these sessions
    /// itself (a [`Session<'static, S>`](Session)): what a handle that
    /// outlives the borrow needs, such as the axum extractor.
    pub fn load_shared<B>(
        self: &Arc<Self>,
        request: &http::Request<B>,
    ) -> Result<Session<'static, S>, Error> {
        let now = unix_now();
        let (facts, stored, pending) = self.read(request, now)?;
        let mut session = Session::new(Held::Shared(self.clone()), now, facts, stored, pending);
        session.read_clock_at_save();
        Ok(session)
    }

    /// What a load reads: the request's facts, and its cookie's session
    /// (one read) or checked pending identifier.
    #[allow(clippy::type_complexity)]
    fn read<B>(
        &self,
        request: &http::Request<B>,
        now: i64,
    ) -> Result<
        (
            RequestFacts,
            Option<spin_sessions_core::Session>,
            Option<(PendingId, String)>,
        ),
        Error,
    > {
        let name = &self.config.cookie.name;
        let headers = request.headers();
        let facts = RequestFacts {
            https: request::is_https(request),
            had_cookie: request::has_cookie(headers, name),
            unsafe_method: !request::is_safe(request.method()),
            cross_origin: request::is_cross_origin(request, self.config.allow_same_site_requests),
            client_address: request::client_address(
                request,
                self.config.client_address_header.as_deref(),
            ),
        };
        let (stored, pending) = match request::session_cookie(headers, name) {
            None => (None, None),
            Some(CookieId::Stored(id)) => (self.live(id, now)?, None),
            Some(CookieId::Pending(text)) => (None, self.pending(&text)?),
        };
        Ok((facts, stored, pending))
    }

    /// The live session of `id`, if there is one.
    fn live(
        &self,
        id: spin_sessions_core::SessionId,
        now: i64,
    ) -> Result<Option<spin_sessions_core::Session>, Error> {
        Ok(match self.manager.lookup(Some(id), now)? {
            Found::Live(session) => Some(session),
            Found::Undecodable(err) => {
                eprintln!("spin-sessions: replacing a session whose record does not decode: {err}");
                None
            }
            Found::NoCookie | Found::Unknown | Found::Expired => None,
        })
    }

    /// The pending identifier `text`, with its form token, if this store's
    /// key signed it (one read). Anything else is no identifier at all: an
    /// identifier this application never issued is never adopted.
    fn pending(&self, text: &str) -> Result<Option<(PendingId, String)>, Error> {
        let Some(key) = self.manager.stored_signing_key()? else {
            return Ok(None);
        };
        Ok(key.verify(text).map(|id| {
            let token = key.csrf_token(&id);
            (id, token)
        }))
    }

    pub(crate) fn manager(&self) -> &SessionManager<Prefixed<S>> {
        &self.manager
    }
}

/// The wall clock in Unix seconds (Spin's `wasi:clocks/wall-clock`).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(sessions: &Sessions<&MemoryStore>, from: &str, now: i64) -> Result<(), Error> {
        let request = http::Request::post("/")
            .header("spin-client-addr", format!("{from}:1000"))
            .body(())
            .unwrap();
        let mut session = sessions.load_at(&request, now)?;
        session.insert("n", 1)?;
        session.save(&mut http::Response::new(()))
    }

    fn load<'s>(
        sessions: &'s Sessions<&MemoryStore>,
        cookie: &str,
    ) -> Session<'s, &'s MemoryStore> {
        let request = http::Request::get("/")
            .header("cookie", cookie)
            .body(())
            .unwrap();
        sessions.load_at(&request, 1_800_000_100).unwrap()
    }

    fn created(
        sessions: &Sessions<&MemoryStore>,
        fill: impl FnOnce(&mut Session<'_, &MemoryStore>),
    ) -> String {
        let request = http::Request::post("/").body(()).unwrap();
        let mut session = sessions.load_at(&request, 1_800_000_000).unwrap();
        fill(&mut session);
        let mut response = http::Response::new(());
        session.save(&mut response).unwrap();
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn concurrent_updates_compose_and_inserts_do_not() {
        let store = MemoryStore::new();
        let sessions = Sessions::new(&store, Config::default()).unwrap();
        let cookie = created(&sessions, |s| s.insert("n", 0u64).unwrap());
        // Two requests read n = 0 at once; each adds one.
        let (mut a, mut b) = (load(&sessions, &cookie), load(&sessions, &cookie));
        assert_eq!(
            a.update("n", |n: Option<u64>| n.unwrap_or(0) + 1).unwrap(),
            1
        );
        assert_eq!(
            b.update("n", |n: Option<u64>| n.unwrap_or(0) + 1).unwrap(),
            1
        );
        a.save(&mut http::Response::new(())).unwrap();
        b.save(&mut http::Response::new(())).unwrap();
        assert_eq!(load(&sessions, &cookie).get::<u64>("n").unwrap(), Some(2));
        // The same with get, + 1, insert: the last save wins.
        let (mut a, mut b) = (load(&sessions, &cookie), load(&sessions, &cookie));
        let n: u64 = a.get("n").unwrap().unwrap();
        a.insert("n", n + 1).unwrap();
        b.insert("n", n + 1).unwrap();
        a.save(&mut http::Response::new(())).unwrap();
        b.save(&mut http::Response::new(())).unwrap();
        assert_eq!(load(&sessions, &cookie).get::<u64>("n").unwrap(), Some(3));
        // An update of a value that is not of its type is refused.
        let mut c = load(&sessions, &cookie);
        assert!(c
            .update("n", |s: Option<String>| s.unwrap_or_default())
            .is_err());
    }

    #[test]
    fn a_flash_is_taken_once_by_requests_at_once() {
        let store = MemoryStore::new();
        let sessions = Sessions::new(&store, Config::default()).unwrap();
        let cookie = created(&sessions, |s| s.flash("notice", "hello").unwrap());
        let (mut a, mut b) = (load(&sessions, &cookie), load(&sessions, &cookie));
        a.insert("seen", true).unwrap();
        let first: Option<String> = a.take_flash("notice").unwrap();
        let second: Option<String> = b.take_flash("notice").unwrap();
        assert_eq!(first.as_deref(), Some("hello"));
        assert_eq!(second, None, "taken already");
        // The change made before the take went with it; the save writes
        // nothing more.
        let writes = store.writes();
        a.save(&mut http::Response::new(())).unwrap();
        b.save(&mut http::Response::new(())).unwrap();
        assert_eq!(store.writes(), writes);
        let after = load(&sessions, &cookie);
        assert_eq!(after.get::<bool>("seen").unwrap(), Some(true));
    }

    #[test]
    fn the_settings_reach_the_sessions() {
        let store = MemoryStore::new();
        let config = Config {
            max_sessions: 2,
            new_sessions_per_minute: 2,
            protection_window_secs: 600,
            ..Config::default()
        };
        let sessions = Sessions::new(&store, config).unwrap();
        let now = 1_800_000_000;
        // A store whose sweep cursor has settled (two minutes old): the cap
        // is enforced.
        let sessions_then = Sessions::new(&store, sessions.config().clone()).unwrap();
        visit(&sessions_then, "192.0.2.9", now - 1000).unwrap();
        visit(&sessions, "192.0.2.1", now).unwrap();
        visit(&sessions, "192.0.2.1", now).unwrap();
        // The quota, per address.
        assert!(matches!(
            visit(&sessions, "192.0.2.1", now),
            Err(Error::RateLimited { .. })
        ));
        // The cap holds only sessions in use: refused, not evicted (the
        // session of 1000 s ago is idle past the window: evicted first).
        let refused = (2..8).find_map(|n| visit(&sessions, &format!("192.0.2.{n}"), now).err());
        assert!(matches!(refused, Some(Error::Full { .. })), "{refused:?}");
        assert_eq!(
            refused.unwrap().status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
