//! HTTP sessions without I/O.
//!
//! The pieces a session needs, each in its own module, none of which touches
//! the network, the clock or a store directly:
//!
//! - [`id`]: the session identifier a cookie carries (64 characters of
//!   `[A-Za-z0-9]` from a caller-supplied cryptographic RNG), the record
//!   key derived from it with SHA-256, and the signed identifiers of
//!   visitors who have nothing stored yet;
//! - [`changes`]: what a request changed, kept to be applied again to a
//!   fresher record when a concurrent save won;
//! - [`cookie`]: the cookie's settings, reading the `Cookie` header and
//!   writing `Set-Cookie`;
//! - [`record`]: what is stored per session (values by key, one-shot
//!   flash values, a "remember me" lifetime), and its versioned encoding;
//! - [`values`]: the application's values, each kept as its JSON text;
//! - [`expiry`]: idle and absolute timeouts, and when a read should touch;
//! - [`index`]: the expiry index in the store, swept a bounded step per
//!   request, and the cap on the number of sessions;
//! - [`signing`]: the store's one key for pending identifiers, chosen once;
//! - [`store`]: the small [`SessionStore`] trait an adapter implements
//!   (Spin's key-value store in the component, [`MemoryStore`] in tests);
//! - [`manager`]: [`SessionManager`], which finds, creates, updates and
//!   deletes sessions through a store with compare-and-swap;
//! - [`prefix`]: [`Prefixed`], a store whose keys share one prefix, so
//!   that several applications can share a store;
//! - [`time`]: RFC 3339 formatting of Unix times.
//!
//! Times are whole seconds since the Unix epoch, passed in by the caller.

pub mod changes;
pub mod cookie;
pub mod expiry;
pub mod id;
pub mod index;
pub mod manager;
pub mod memory;
pub mod prefix;
pub mod record;
pub mod signing;
pub mod store;
pub mod time;
pub mod values;

pub use changes::{Change, Changes, UpdateFn};
pub use cookie::{CookieConfig, CookieConfigError, SameSite, Secure, COOKIE_NAME};
pub use expiry::ExpiryPolicy;
pub use id::{CookieId, PendingId, SessionId, SigningKey};
pub use manager::{
    Admission, CreateError, Found, Session, SessionManager, Uncertainty, UpdateError,
};
pub use memory::MemoryStore;
pub use prefix::Prefixed;
pub use record::{DecodeError, EndReason, Ending, SessionRecord, RECORD_FORMAT};
pub use store::{SessionStore, Snapshot, StoreError, Swap, Verdict};
pub use values::{StoredValue, Values};
