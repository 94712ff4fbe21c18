//! What can go wrong with a session, and the HTTP answer each deserves.

use http::StatusCode;
use spin_sessions_core::{CreateError, StoreError, Uncertainty, UpdateError};

use crate::config::ConfigError;

/// Why a session could not be loaded or saved.
///
/// Every variant maps to the answer a client should get
/// ([`Error::status`], [`Error::into_response`]): a store failure is a 503
/// that may be retried, a value of the wrong type is the application's bug
/// (500), and so on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The key-value store failed; nothing of the request was stored.
    Store(StoreError),
    /// The store did not confirm the save, and no read can tell whether it
    /// landed: the change may or may not be stored. (Never guessed: a save
    /// is not applied again on a chance that it was lost.)
    Unknown(Uncertainty),
    /// Too many requests of the session saved at once; nothing was saved.
    Contended,
    /// The session ended (signed out, expired, evicted, or its identifier
    /// replaced) before this request's save could land; nothing was saved.
    Ended,
    /// A stored value is not of the type asked for, or a value could not
    /// be serialised.
    Value {
        /// The value's key.
        key: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// The configuration is invalid.
    Config(ConfigError),
    /// A handle on the session was used after the session was saved (an
    /// axum [`Session`](crate::axum) kept past its handler).
    Saved,
    /// This client has created its quota of new sessions this minute
    /// (`new_sessions_per_minute`); nothing was stored.
    RateLimited {
        /// Seconds until the quota's minute is over.
        retry_after_secs: u64,
    },
    /// The cap on sessions is reached and every stored session is in use
    /// (within the protection window); nothing was stored, and the
    /// sessions in use keep working.
    Full {
        /// Seconds after which room may have been made.
        retry_after_secs: u64,
    },
}

impl Error {
    /// The status a response to the failed request should have.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Store(_) | Error::Unknown(_) | Error::Contended | Error::Full { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Ended => StatusCode::CONFLICT,
            Error::Value { .. } | Error::Config(_) | Error::Saved => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// How long a client should wait before trying again, when it should.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Store(_) | Error::Contended => Some(1),
            Error::RateLimited { retry_after_secs } | Error::Full { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }

    /// A short plain-text response for the client: the status, a message
    /// that reveals nothing of the store, and `Retry-After` where it
    /// applies. The full error is for the log ([`std::fmt::Display`]).
    pub fn into_response<B: From<String>>(&self) -> http::Response<B> {
        let message = match self {
            Error::Store(_) => {
                "The session store is unavailable; nothing was saved. Please try again shortly."
            }
            Error::Unknown(_) => {
                "The session store did not confirm the change: it may or may not have been \
                 saved. Please check before trying again."
            }
            Error::Contended => "Too many requests of this session at once; please try again.",
            Error::Ended => {
                "This session ended before the request could be saved; nothing was saved."
            }
            Error::Value { .. } | Error::Config(_) | Error::Saved => {
                "The server could not use this session."
            }
            Error::RateLimited { .. } => {
                "Too many new sessions from your address; please wait a minute and try again."
            }
            Error::Full { .. } => "The site is busy; please try again in a minute.",
        };
        let mut builder = http::Response::builder()
            .status(self.status())
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(http::header::CACHE_CONTROL, "no-store");
        if let Some(secs) = self.retry_after_secs() {
            builder = builder.header(http::header::RETRY_AFTER, secs);
        }
        builder
            .body(B::from(format!("{message}\n")))
            .expect("constant headers are valid")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Store(err) => err.fmt(f),
            Error::Unknown(why) => write!(f, "the save may or may not be stored: {why}"),
            Error::Contended => f.write_str("too many concurrent saves of the session"),
            Error::Ended => f.write_str("the session ended while it was being saved"),
            Error::Value { key, source } => write!(f, "session value {key:?}: {source}"),
            Error::Config(err) => err.fmt(f),
            Error::Saved => f.write_str("the session was used after it was saved"),
            Error::RateLimited { .. } => {
                f.write_str("the client's quota of new sessions is used up")
            }
            Error::Full { .. } => f.write_str("the session store is full of sessions in use"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(err) => Some(err),
            Error::Value { source, .. } => Some(source),
            Error::Config(err) => Some(err),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Store(err)
    }
}

impl From<UpdateError> for Error {
    fn from(err: UpdateError) -> Self {
        match err {
            UpdateError::Store(err) => Error::Store(err),
            UpdateError::Gone => Error::Ended,
            UpdateError::Contended => Error::Contended,
            UpdateError::Unknown(why) => Error::Unknown(why),
        }
    }
}

impl From<CreateError> for Error {
    fn from(err: CreateError) -> Self {
        match err {
            CreateError::Store(err) => Error::Store(err),
            CreateError::RateLimited { retry_after_secs } => {
                Error::RateLimited { retry_after_secs }
            }
            CreateError::Full { retry_after_secs } => Error::Full { retry_after_secs },
        }
    }
}

impl From<ConfigError> for Error {
    fn from(err: ConfigError) -> Self {
        Error::Config(err)
    }
}
