//! Sessions for an axum router (feature `axum`): a [`SessionLayer`] that
//! loads the request's session before the handler and saves it after, and
//! a [`Session`] extractor, the way tower-sessions users are used to.
//!
//! ```
//! use axum::{routing::get, Router};
//! use spin_sessions::axum::{Session, SessionLayer};
//! use spin_sessions::{Error, MemoryStore, Sessions};
//! use std::sync::Arc;
//!
//! async fn visits(session: Session<MemoryStore>) -> Result<String, Error> {
//!     let count: u64 = session.get("visits")?.unwrap_or(0) + 1;
//!     session.insert("visits", count)?;
//!     Ok(format!("Visit number {count}"))
//! }
//!
//! # fn main() -> Result<(), Error> {
//! let sessions = Arc::new(Sessions::new(MemoryStore::new(), Default::default())?);
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::new(sessions));
//! # Ok(())
//! # }
//! ```
//!
//! In a Spin component (wasm), `Session` defaults to Spin's store, and
//! `SessionLayer::spin()` takes the settings from Spin variables, once per
//! instance ([`crate::spin::shared_sessions`]).
//!
//! The save happens when the handler's response is ready: a store failure
//! then replaces the response by [`Error::into_response`]'s (a 503 that
//! says whether anything was saved), as any other error does. Handlers
//! that return `Result<_, Error>` get the same answers for their own
//! errors.
#![cfg_attr(
    not(target_arch = "wasm32"),
    doc = "\n\n[`crate::spin::shared_sessions`]: https://docs.rs/spin-sessions/latest/spin_sessions/spin/fn.shared_sessions.html"
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_core::body::Body;
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, SessionStore, Sessions};

/// The store a [`Session`] is in unless named: Spin's in a component, the
/// in-memory one in native tests.
#[cfg(target_arch = "wasm32")]
pub type DefaultStore = crate::spin::SpinStore;
/// The store a [`Session`] is in unless named: Spin's in a component, the
/// in-memory one in native tests.
#[cfg(not(target_arch = "wasm32"))]
pub type DefaultStore = crate::MemoryStore;

/// A tower layer that gives every request its [`Session`].
///
/// A router with this layer can be built once and kept for the requests
/// an instance serves (its clones are cheap): the layer looks its sessions
/// up at each request.
pub struct SessionLayer<S: SessionStore = DefaultStore> {
    source: Source<S>,
}

/// Where a [`SessionLayer`] finds its sessions.
enum Source<S: SessionStore> {
    /// Given once, by [`SessionLayer::new`].
    Given(Arc<Sessions<S>>),
    /// Looked up at each request: a reused instance's shared sessions,
    /// remade when their settings are due to be read again.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))] // made by `spin()`
    Lookup(fn() -> Result<Arc<Sessions<S>>, Error>),
}

impl<S: SessionStore> Source<S> {
    fn sessions(&self) -> Result<Arc<Sessions<S>>, Error> {
        match self {
            Source::Given(sessions) => Ok(sessions.clone()),
            Source::Lookup(lookup) => lookup(),
        }
    }
}

impl<S: SessionStore> Clone for Source<S> {
    fn clone(&self) -> Self {
        match self {
            Source::Given(sessions) => Source::Given(sessions.clone()),
            Source::Lookup(lookup) => Source::Lookup(*lookup),
        }
    }
}

impl<S: SessionStore> Clone for SessionLayer<S> {
    fn clone(&self) -> Self {
        SessionLayer {
            source: self.source.clone(),
        }
    }
}

impl<S: SessionStore> SessionLayer<S> {
    /// Sessions from `sessions`.
    pub fn new(sessions: Arc<Sessions<S>>) -> Self {
        SessionLayer {
            source: Source::Given(sessions),
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl SessionLayer<crate::spin::SpinStore> {
    /// Sessions in Spin's `default` store, with the settings from Spin
    /// variables, read once per instance and looked up at each request (see
    /// [`crate::spin::shared_sessions`]), so a router built once keeps
    /// following them. Settings that do not read (an invalid variable) make
    /// every request answer that error (a 500 that names the variable in
    /// the log).
    pub fn spin() -> Self {
        SessionLayer {
            source: Source::Lookup(crate::spin::shared_sessions),
        }
    }
}

impl<S: SessionStore, I> tower_layer::Layer<I> for SessionLayer<S> {
    type Service = SessionService<S, I>;

    fn layer(&self, inner: I) -> Self::Service {
        SessionService {
            source: self.source.clone(),
            inner,
        }
    }
}

/// The service [`SessionLayer`] wraps a router (or any service) in.
pub struct SessionService<S: SessionStore, I> {
    source: Source<S>,
    inner: I,
}

impl<S: SessionStore, I: Clone> Clone for SessionService<S, I> {
    fn clone(&self) -> Self {
        SessionService {
            source: self.source.clone(),
            inner: self.inner.clone(),
        }
    }
}

type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

impl<S, I, B> tower_service::Service<http::Request<B>> for SessionService<S, I>
where
    S: SessionStore + Send + Sync + 'static,
    S::Snapshot: Send,
    I: tower_service::Service<http::Request<B>, Response = Response> + Send,
    I::Future: Send + 'static,
    I::Error: Send + 'static,
{
    type Response = Response;
    type Error = I::Error;
    type Future = ResponseFuture<I::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let sessions = match self.source.sessions() {
            Ok(sessions) => sessions,
            Err(err) => {
                eprintln!("spin-sessions: {err}");
                return Box::pin(std::future::ready(Ok(err.into_response())));
            }
        };
        let session = match sessions.load_shared(&request) {
            Ok(session) => Session::new(session),
            Err(err) => return Box::pin(std::future::ready(Ok(err.into_response()))),
        };
        request.extensions_mut().insert(session.clone());
        let handled = self.inner.call(request);
        Box::pin(async move {
            let mut response = handled.await?;
            if let Some(session) = session.take() {
                if let Err(err) = session.save(&mut response) {
                    eprintln!("spin-sessions: {err}");
                    return Ok(err.into_response());
                }
            }
            Ok(response)
        })
    }
}

/// The request's session, as a handler extracts it: a handle on the
/// [`crate::Session`] the [`SessionLayer`] loaded (clones share it). The
/// layer saves it once the handler has answered; a handle kept past that
/// finds the session gone (errors, or nothing).
pub struct Session<S: SessionStore + 'static = DefaultStore> {
    inner: Arc<Mutex<Option<crate::Session<'static, S>>>>,
}

impl<S: SessionStore + 'static> Clone for Session<S> {
    fn clone(&self) -> Self {
        Session {
            inner: self.inner.clone(),
        }
    }
}

impl<S: SessionStore + 'static> Session<S> {
    fn new(session: crate::Session<'static, S>) -> Self {
        Session {
            inner: Arc::new(Mutex::new(Some(session))),
        }
    }

    /// The session, for the layer to save.
    fn take(&self) -> Option<crate::Session<'static, S>> {
        self.lock().take()
    }

    fn lock(&self) -> MutexGuard<'_, Option<crate::Session<'static, S>>> {
        // A handler that panicked holding the lock left the session as it
        // was before or after one whole change.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the session; an error once it was saved.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut crate::Session<'static, S>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match self.lock().as_mut() {
            Some(session) => f(session),
            None => Err(Error::Saved),
        }
    }

    /// Reads `f` of the session; `default` once it was saved.
    fn read<T>(&self, default: T, f: impl FnOnce(&crate::Session<'static, S>) -> T) -> T {
        self.lock().as_ref().map_or(default, f)
    }

    /// [`crate::Session::get`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.with(|session| session.get(key))
    }

    /// [`crate::Session::insert`].
    pub fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), Error> {
        self.with(|session| session.insert(key, value))
    }

    /// [`crate::Session::update`]: concurrent updates compose.
    pub fn update<T, F>(&self, key: &str, f: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        self.with(|session| session.update(key, f))
    }

    /// [`crate::Session::remove`].
    pub fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.with(|session| session.remove(key))
    }

    /// [`crate::Session::clear`].
    pub fn clear(&self) -> Result<(), Error> {
        self.with(|session| {
            session.clear();
            Ok(())
        })
    }

    /// [`crate::Session::flash`].
    pub fn flash<T: Serialize>(&self, key: &str, value: T) -> Result<(), Error> {
        self.with(|session| session.flash(key, value))
    }

    /// [`crate::Session::take_flash`]: exactly once across concurrent
    /// requests.
    pub fn take_flash<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.with(|session| session.take_flash(key))
    }

    /// [`crate::Session::csrf_token`].
    pub fn csrf_token(&self) -> Result<String, Error> {
        self.with(|session| session.csrf_token())
    }

    /// [`crate::Session::verify_csrf`]: false once the session was saved.
    pub fn verify_csrf(&self, token: Option<&str>) -> bool {
        self.read(false, |session| session.verify_csrf(token))
    }

    /// [`crate::Session::is_cross_origin`].
    pub fn is_cross_origin(&self) -> bool {
        self.read(false, |session| session.is_cross_origin())
    }

    /// [`crate::Session::cycle_id`].
    pub fn cycle_id(&self) -> Result<(), Error> {
        self.with(|session| {
            session.cycle_id();
            Ok(())
        })
    }

    /// [`crate::Session::destroy`].
    pub fn destroy(&self) -> Result<(), Error> {
        self.with(|session| {
            session.destroy();
            Ok(())
        })
    }

    /// [`crate::Session::remember`].
    pub fn remember(&self, lifetime: Option<Duration>) -> Result<(), Error> {
        self.with(|session| {
            session.remember(lifetime);
            Ok(())
        })
    }

    /// [`crate::Session::is_stored`].
    pub fn is_stored(&self) -> bool {
        self.read(false, |session| session.is_stored())
    }

    /// [`crate::Session::created_at`].
    pub fn created_at(&self) -> Option<i64> {
        self.read(None, |session| session.created_at())
    }

    /// [`crate::Session::expires_at`].
    pub fn expires_at(&self) -> Option<i64> {
        self.read(None, |session| session.expires_at())
    }
}

impl<S: SessionStore + 'static> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lock().as_ref() {
            Some(session) => session.fmt(f),
            None => f.write_str("Session(saved)"),
        }
    }
}

/// Why a [`Session`] could not be extracted: the router has no
/// [`SessionLayer`] (a bug of the application: 500).
#[derive(Debug)]
pub struct MissingLayer;

impl IntoResponse for MissingLayer {
    fn into_response(self) -> Response {
        eprintln!("spin-sessions: a handler takes a Session, but the router has no SessionLayer");
        let mut response = Response::new(Body::from("The server could not use this session.\n"));
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response
    }
}

impl<S, St> FromRequestParts<St> for Session<S>
where
    S: SessionStore + Send + Sync + 'static,
    St: Send + Sync,
{
    type Rejection = MissingLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, MissingLayer> {
        parts
            .extensions
            .get::<Session<S>>()
            .cloned()
            .ok_or(MissingLayer)
    }
}

/// An [`Error`] answers as [`Error::into_response`] says: handlers may
/// return `Result<_, Error>`.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Error::into_response::<Body>(&self)
    }
}
