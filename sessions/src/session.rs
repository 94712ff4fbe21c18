//! [`Session`]: one request's view of its session, and the save that
//! writes what the request changed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::OsRng;
use rand::TryRngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sessions_core::id::{client_key, constant_time_eq, random_token};
use spin_sessions_core::manager::CSRF_TOKEN_LEN;
use spin_sessions_core::{
    Admission, Change, Changes, PendingId, SessionRecord, SessionStore, StoredValue, UpdateError,
    UpdateFn,
};

use crate::{Error, Sessions};

/// A request's session, loaded by [`Sessions::load`].
///
/// Reads and changes happen in memory; [`Session::save`] writes what
/// changed, once, and sets or clears the cookie on the response. A session
/// that was never stored and holds nothing stays that way: an anonymous
/// visitor costs no write and no stored record.
///
/// Concurrent saves of one session merge: each save re-applies its own
/// changes to what the store holds, so changes to different keys are all
/// kept, and for the same key the last save wins.
pub struct Session<'s, S: SessionStore> {
    sessions: Held<'s, S>,
    /// The time the session was loaded at.
    now: i64,
    /// The save reads the clock again: a request that took long must not
    /// keep alive a session that expired meanwhile.
    clock_at_save: bool,
    /// The stored session the cookie leads to, if it is live.
    stored: Option<spin_sessions_core::Session>,
    /// The pending identifier of a visitor with nothing stored: the one
    /// the cookie carried (checked), or one issued by this request. (The
    /// signing key behind it is cached by the manager.)
    pending: Option<PendingId>,
    /// `pending` was issued by this request: the response must carry it.
    pending_is_new: bool,
    /// What the session holds as this request sees it, changes included.
    view: SessionRecord,
    /// This request's changes, to be applied again on a lost race.
    changes: Changes,
    /// The identifier is to be replaced at save.
    cycle: bool,
    /// The session is to be deleted at save.
    destroy: bool,
    /// What the request says of its origin and client.
    request: RequestFacts,
}

/// How a [`Session`] holds the [`Sessions`] it came from: borrowed, for
/// the length of a request, or shared, by a handle that outlives the borrow
/// ([`Sessions::load_shared`]).
pub(crate) enum Held<'s, S: SessionStore> {
    Borrowed(&'s Sessions<S>),
    Shared(std::sync::Arc<Sessions<S>>),
}

impl<S: SessionStore> std::ops::Deref for Held<'_, S> {
    type Target = Sessions<S>;

    fn deref(&self) -> &Sessions<S> {
        match self {
            Held::Borrowed(sessions) => sessions,
            Held::Shared(sessions) => sessions,
        }
    }
}

/// What [`Sessions::load`] read of the request besides the cookie.
pub(crate) struct RequestFacts {
    /// The client came over https: `Secure` for `Secure::Auto`.
    pub https: bool,
    /// The request carried a cookie of the session's name.
    pub had_cookie: bool,
    /// The request changes state: the response varies with its origin.
    pub unsafe_method: bool,
    /// It changes state and comes from another origin.
    pub cross_origin: bool,
    /// The client's address as the request gave it, for the quota of new
    /// sessions, if known (parsed and hashed only when a session is
    /// created: most requests create none).
    pub client_address: Option<String>,
}

impl<'s, S: SessionStore> Session<'s, S> {
    pub(crate) fn new(
        sessions: Held<'s, S>,
        now: i64,
        request: RequestFacts,
        stored: Option<spin_sessions_core::Session>,
        pending: Option<(PendingId, String)>,
    ) -> Self {
        let (pending, token) = pending.unzip();
        let view = match &stored {
            Some(session) => session.record().clone(),
            None => SessionRecord::new(now, token.unwrap_or_default()),
        };
        Session {
            sessions,
            now,
            clock_at_save: false,
            request,
            stored,
            pending,
            pending_is_new: false,
            view,
            changes: Changes::new(),
            cycle: false,
            destroy: false,
        }
    }

    /// The value stored under `key`, as a `T`; `None` when there is none.
    /// A value that is not a `T` is an error ([`Error::Value`]).
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.view
            .data
            .get(key)
            .map(|value| value.to().map_err(|source| value_error(key, source)))
            .transpose()
    }

    /// Stores `value` under `key` (written at [`Session::save`]). The
    /// first value stored for a visitor creates their session.
    ///
    /// Of two requests that insert under one key at once, the one that
    /// saves last wins (per key: inserts under other keys are all kept).
    /// For a value computed from the stored one, use [`Session::update`].
    pub fn insert<T: Serialize>(&mut self, key: &str, value: T) -> Result<(), Error> {
        let value = StoredValue::new(&value).map_err(|source| value_error(key, source))?;
        self.change(Change::Insert(key.to_owned(), value));
        Ok(())
    }

    /// Replaces the value under `key` by `f` of it (`None` when there is
    /// none), and returns the new value. Unlike `get`, `+ 1`, `insert`,
    /// this composes with concurrent requests: `f` is kept with the
    /// request's changes and applied again to whatever a concurrent save
    /// stored, so 200 concurrent increments add 200 (and one is never
    /// counted twice: see [`Session::save`]). Should a concurrent save
    /// store something that is not a `T`, the update leaves it alone.
    pub fn update<T, F>(&mut self, key: &str, f: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        // What the request sees must be a T: otherwise it is the
        // application's mistake, answered at once.
        self.get::<T>(key)?;
        let function: UpdateFn = Arc::new(move |old: Option<&StoredValue>| {
            let old = match old {
                None => None,
                Some(value) => Some(value.to::<T>().ok()?),
            };
            StoredValue::new(&f(old)).ok()
        });
        self.change(Change::Update(key.to_owned(), function));
        self.get(key)?
            .ok_or_else(|| value_error(key, serde::de::Error::custom("the update made no value")))
    }

    /// Removes the value under `key` and returns it, as a `T`.
    pub fn remove<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, Error> {
        let value = self.get(key)?;
        if self.view.data.contains_key(key) {
            self.change(Change::Remove(key.to_owned()));
        }
        Ok(value)
    }

    /// Removes every value, flash values included. The session itself
    /// stays, with its identifier and CSRF token.
    pub fn clear(&mut self) {
        if !self.view.data.is_empty() || !self.view.flash.is_empty() {
            self.change(Change::Clear);
        }
    }

    /// Leaves a one-shot value for a later request: the first
    /// [`Session::take_flash`] of `key` gets it and removes it ("Signed in
    /// as Ada", shown once after a redirect).
    pub fn flash<T: Serialize>(&mut self, key: &str, value: T) -> Result<(), Error> {
        let value = StoredValue::new(&value).map_err(|source| value_error(key, source))?;
        self.change(Change::Flash(key.to_owned(), value));
        Ok(())
    }

    /// Takes the one-shot value under `key`, if an earlier request left
    /// one. Exactly once: the value is removed from the store right away,
    /// by compare-and-swap (with this request's changes so far, in the same
    /// write), and only the request whose write removed it gets it; of two
    /// requests that take it at once, the other gets `None`.
    pub fn take_flash<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, Error> {
        let Some(value) = self.view.flash.get(key) else {
            return Ok(None);
        };
        // Checked before anything is written: a value of the wrong type is
        // the application's mistake.
        value.to::<T>().map_err(|source| value_error(key, source))?;
        let now = self.save_time();
        let Some(stored) = self.stored.as_mut() else {
            // Flash values come from stored sessions only.
            return Ok(None);
        };
        let taken: Mutex<Option<StoredValue>> = Mutex::new(None);
        let changes = &self.changes;
        self.sessions
            .manager()
            .update(stored, &mut rng(), now, |record| {
                changes.apply_to(record);
                // The attempt that lands is the last one made.
                *taken.lock().unwrap_or_else(|e| e.into_inner()) = record.flash.remove(key);
            })?;
        // What this request changed so far is stored: the save writes only
        // what comes after.
        self.changes = Changes::new();
        self.view = stored.record().clone();
        let taken = taken.into_inner().unwrap_or_else(|e| e.into_inner());
        taken
            .map(|value| value.to().map_err(|source| value_error(key, source)))
            .transpose()
    }

    /// The token that this session's forms must carry
    /// ([`Session::verify_csrf`]). A visitor with nothing stored gets one
    /// too, signed for a *pending* identifier that the response hands over
    /// in the cookie; nothing is stored for it. Costs one read the first
    /// time a request asks for a visitor with nothing stored (the store's
    /// signing key; the very first such request in a store also writes
    /// that key).
    pub fn csrf_token(&mut self) -> Result<String, Error> {
        if self.stored.is_none() && self.pending.is_none() && self.view.csrf_token.is_empty() {
            self.issue_pending()?;
        }
        Ok(self.view.csrf_token.clone())
    }

    /// True when `token` is this session's CSRF token (compared in
    /// constant time) and the request does not come from another origin
    /// ([`Session::is_cross_origin`]: checked first, so a token leaked to
    /// another site is no use there). A visitor with neither a session nor
    /// a pending identifier has no token, so nothing verifies.
    pub fn verify_csrf(&self, token: Option<&str>) -> bool {
        if self.request.cross_origin {
            return false;
        }
        let expected = &self.view.csrf_token;
        match token {
            Some(token) if !expected.is_empty() => {
                constant_time_eq(expected.as_bytes(), token.as_bytes())
            }
            _ => false,
        }
    }

    /// True when the request changes state (not GET, HEAD or OPTIONS) and
    /// a browser says it comes from another origin: `Sec-Fetch-Site` is
    /// `cross-site` (or `same-site`, unless `allow_same_site_requests`),
    /// or, without it, `Origin` is not the request's host. Such a request
    /// fails [`Session::verify_csrf`] whatever its token.
    pub fn is_cross_origin(&self) -> bool {
        self.request.cross_origin
    }

    /// Gives the session a new identifier at save, keeping its data: call
    /// it when the visitor signs in or gains rights, so that an identifier
    /// planted or seen before can do nothing. The old identifier is dead
    /// from the save on, and the CSRF token changes with it (a page
    /// rendered after this call already carries the new one).
    pub fn cycle_id(&mut self) {
        self.cycle = true;
        self.view.csrf_token = random_token(&mut rng(), CSRF_TOKEN_LEN);
    }

    /// Deletes the session at save and tells the browser to drop the
    /// cookie. Values read afterwards are gone.
    pub fn destroy(&mut self) {
        self.destroy = true;
        self.view.data.clear();
        self.view.flash.clear();
    }

    /// Makes the session persistent ("remember me"): it then lives
    /// `lifetime` past its last request, whatever the idle and absolute
    /// timeouts, and its cookie outlives the browser session. `None` goes
    /// back to the configured timeouts and cookie.
    pub fn remember(&mut self, lifetime: Option<Duration>) {
        let secs = lifetime.map(|d| d.as_secs().max(1));
        if secs != self.view.remember_secs {
            self.change(Change::Remember(secs));
        }
    }

    /// True when the session is in the store (it was before this request,
    /// and has not been destroyed by it).
    pub fn is_stored(&self) -> bool {
        self.stored.is_some() && !self.destroy
    }

    /// When the session was created (Unix seconds), if it is stored.
    pub fn created_at(&self) -> Option<i64> {
        self.stored.as_ref().map(|_| self.view.created_at)
    }

    /// When a request of the session was last recorded (Unix seconds), if
    /// it is stored. Kept to the touch granularity, a sixtieth of the idle
    /// timeout.
    pub fn last_seen_at(&self) -> Option<i64> {
        self.stored.as_ref().map(|_| self.view.last_seen_at)
    }

    /// When the session ends if no other request comes (Unix seconds), if
    /// it is stored.
    pub fn expires_at(&self) -> Option<i64> {
        let policy = &self.sessions.config().expiry;
        self.stored.as_ref().map(|_| policy.expires_at(&self.view))
    }

    /// The time this request is served at (Unix seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Writes what the request changed and sets the cookie on `response`:
    ///
    /// - nothing changed: no write (but the periodic touch that keeps a
    ///   busy session alive, once per touch granularity);
    /// - a visitor's first change: creates the session under a fresh
    ///   identifier (never the one the cookie carried) and sets the cookie;
    /// - changes to a stored session: one compare-and-swap update, merged
    ///   with concurrent saves;
    /// - [`Session::cycle_id`], [`Session::destroy`]: as they say.
    ///
    /// On an error the response should be replaced by
    /// [`Error::into_response`]. Every error says what was stored: nothing
    /// ([`Error::Store`], [`Error::Ended`], [`Error::Contended`], …), or
    /// that the store could not say ([`Error::Unknown`]). A save is never
    /// applied twice.
    pub fn save<B>(self, response: &mut http::Response<B>) -> Result<(), Error> {
        if self.request.unsafe_method {
            response.headers_mut().append(
                http::header::VARY,
                http::HeaderValue::from_static(crate::CROSS_ORIGIN_VARY),
            );
        }
        let cookie = self.write()?;
        if let Some(value) = cookie {
            let value = http::HeaderValue::try_from(value)
                .expect("cookie names, attributes and identifiers are visible ASCII");
            response
                .headers_mut()
                .append(http::header::SET_COOKIE, value);
        }
        Ok(())
    }

    /// The store's part of [`Session::save`]: returns the `Set-Cookie`
    /// value the response needs, if any.
    fn write(mut self) -> Result<Option<String>, Error> {
        if self.destroy {
            return self.write_destroy();
        }
        match self.stored.take() {
            Some(stored) => self.write_stored(stored),
            None if !self.changes.is_empty() => self.write_new(),
            None if self.pending_is_new => {
                let pending = self.pending.as_ref().expect("issued");
                Ok(Some(self.set_cookie(pending.as_str(), None)))
            }
            None => Ok(None),
        }
    }

    fn write_destroy(mut self) -> Result<Option<String>, Error> {
        if let Some(stored) = self.stored.take() {
            self.sessions.manager().delete(stored)?;
        }
        let cookie = self.sessions.config().cookie.clone();
        Ok(self
            .request
            .had_cookie
            .then(|| cookie.expire_cookie(cookie.is_secure(self.request.https))))
    }

    fn write_stored(
        self,
        mut stored: spin_sessions_core::Session,
    ) -> Result<Option<String>, Error> {
        let manager = self.sessions.manager();
        let changes = &self.changes;
        let now = self.save_time();
        if self.cycle {
            let token = self.view.csrf_token.clone();
            let old_ended = manager.cycle(&mut stored, &mut rng(), now, token, |record| {
                changes.apply_to(record)
            })?;
            if !old_ended {
                eprintln!(
                    "spin-sessions: a session's identifier was replaced, but the store did not \
                     confirm that the old one ended; it lives on, without this request's \
                     changes, until it expires"
                );
            }
            return Ok(Some(self.cookie_for(&stored)));
        }
        let wrote = if changes.is_empty() {
            match manager.touch_if_due(&mut stored, &mut rng(), now) {
                Ok(wrote) => wrote,
                // Another request is writing the session, and records the
                // visit too; or it has just ended, and there is nothing to
                // keep alive; or the store could not say whether the visit
                // was recorded, which changes nothing the visitor sees.
                Err(UpdateError::Contended | UpdateError::Gone | UpdateError::Unknown(_)) => false,
                Err(err) => return Err(err.into()),
            }
        } else {
            manager.update(&mut stored, &mut rng(), now, |record| {
                changes.apply_to(record)
            })?;
            true
        };
        // A persistent cookie is refreshed whenever the session's last-seen
        // time is, so that both age together.
        let persistent = self.max_age(stored.record()).is_some();
        Ok((wrote && persistent).then(|| self.cookie_for(&stored)))
    }

    fn write_new(self) -> Result<Option<String>, Error> {
        let token = if self.view.csrf_token.is_empty() {
            random_token(&mut rng(), CSRF_TOKEN_LEN)
        } else {
            // The token the visitor's pages already carry (signed for the
            // pending identifier), so forms open in other tabs still work.
            self.view.csrf_token.clone()
        };
        let changes = &self.changes;
        let config = self.sessions.config();
        let quota = config.new_sessions_per_minute;
        let client = self
            .request
            .client_address
            .as_ref()
            .filter(|_| quota > 0)
            .map(|raw| client_key(&crate::request::quota_address(raw.clone())));
        let admission = Admission {
            client: client.as_deref(),
            per_minute: quota,
            refuse_when_full: true,
        };
        let created = self.sessions.manager().create_with(
            &mut rng(),
            self.save_time(),
            &admission,
            |record| {
                changes.apply_to(record);
                record.csrf_token = token;
            },
        )?;
        Ok(Some(self.cookie_for(&created)))
    }

    /// The `Set-Cookie` value that hands `stored`'s identifier over.
    fn cookie_for(&self, stored: &spin_sessions_core::Session) -> String {
        self.set_cookie(stored.id().as_str(), self.max_age(stored.record()))
    }

    fn set_cookie(&self, value: &str, max_age_secs: Option<u64>) -> String {
        let cookie = &self.sessions.config().cookie;
        cookie.set_cookie(value, max_age_secs, cookie.is_secure(self.request.https))
    }

    /// The cookie's `Max-Age`: a remembered session's lifetime, or the
    /// configured one.
    fn max_age(&self, record: &SessionRecord) -> Option<u64> {
        record
            .remember_secs
            .or(self.sessions.config().cookie.max_age_secs)
    }

    /// Makes [`Session::save`] read the clock again (see `clock_at_save`).
    pub(crate) fn read_clock_at_save(&mut self) {
        self.clock_at_save = true;
    }

    /// The time the save writes at.
    fn save_time(&self) -> i64 {
        if self.clock_at_save {
            crate::unix_now().max(self.now)
        } else {
            self.now
        }
    }

    fn change(&mut self, change: Change) {
        self.changes.push(change, &mut self.view);
    }

    /// Hands a visitor with nothing stored a pending identifier, and its
    /// token.
    fn issue_pending(&mut self) -> Result<(), Error> {
        let key = self.sessions.manager().signing_key(&mut rng())?;
        let pending = key.issue(&mut rng());
        self.view.csrf_token = key.csrf_token(&pending);
        self.pending = Some(pending);
        self.pending_is_new = true;
        Ok(())
    }
}

impl<S: SessionStore> std::fmt::Debug for Session<'_, S> {
    /// Shows the state and the keys, never the identifier or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("stored", &self.stored.is_some())
            .field("pending", &self.pending.is_some())
            .field("keys", &self.view.data.keys().collect::<Vec<_>>())
            .field("changed", &!self.changes.is_empty())
            .finish()
    }
}

fn value_error(key: &str, source: serde_json::Error) -> Error {
    Error::Value {
        key: key.to_owned(),
        source,
    }
}

/// The operating system's CSPRNG (WASI `random` under Spin).
pub(crate) fn rng() -> rand::rand_core::UnwrapErr<OsRng> {
    OsRng.unwrap_err()
}
