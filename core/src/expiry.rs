//! When a session ends, and when a read should record that it was seen.

use crate::record::SessionRecord;

/// The two timeouts of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// A session unused for this long ends.
    pub idle_timeout_secs: u64,
    /// A session ends this long after its creation, however busy.
    pub absolute_timeout_secs: u64,
}

/// `last_seen_at` is rewritten only when it lags by more than the idle
/// timeout divided by this, so that most reads write nothing.
pub const TOUCH_FRACTION: u64 = 60;

impl Default for ExpiryPolicy {
    /// One hour idle (as in the tutorial's sample), one day at most.
    fn default() -> Self {
        ExpiryPolicy {
            idle_timeout_secs: 3600,
            absolute_timeout_secs: 86_400,
        }
    }
}

impl ExpiryPolicy {
    /// The first second at which the session no longer counts as live. A
    /// remembered session ([`SessionRecord::remember_secs`]) has that
    /// lifetime as its idle timeout, and at least as much as its absolute
    /// one.
    pub fn expires_at(&self, record: &SessionRecord) -> i64 {
        let (idle, absolute) = match record.remember_secs {
            Some(remember) => (remember, remember.max(self.absolute_timeout_secs)),
            None => (self.idle_timeout_secs, self.absolute_timeout_secs),
        };
        let idle_end = record.last_seen_at.saturating_add(secs(idle));
        let absolute_end = record.created_at.saturating_add(secs(absolute));
        idle_end.min(absolute_end)
    }

    /// When a session created at `now` expires, if never seen again.
    pub fn expiry_of_new_session(&self, now: i64) -> i64 {
        now.saturating_add(secs(self.idle_timeout_secs.min(self.absolute_timeout_secs)))
    }

    /// True once `now` has reached [`ExpiryPolicy::expires_at`], or when
    /// the record has [`ended`](SessionRecord::ended).
    pub fn is_expired(&self, record: &SessionRecord, now: i64) -> bool {
        record.is_ended() || now >= self.expires_at(record)
    }

    /// How far `last_seen_at` may lag behind a request before the request
    /// writes it: 1/[`TOUCH_FRACTION`] of the idle timeout, at least one
    /// second. An idle session may therefore end up to this much early.
    pub fn touch_granularity_secs(&self) -> u64 {
        (self.idle_timeout_secs / TOUCH_FRACTION).max(1)
    }

    /// True when a request at `now` should record itself in `last_seen_at`.
    pub fn needs_touch(&self, record: &SessionRecord, now: i64) -> bool {
        now.saturating_sub(record.last_seen_at) >= secs(self.touch_granularity_secs())
    }
}

/// Seconds as an `i64` offset, saturating (a timeout counts at most
/// `i64::MAX` seconds).
pub(crate) fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    fn record(created: i64, last_seen: i64) -> SessionRecord {
        let mut r = SessionRecord::new(created, String::new());
        r.last_seen_at = last_seen;
        r
    }

    #[test]
    fn idle_boundary() {
        let policy = ExpiryPolicy {
            idle_timeout_secs: 60,
            absolute_timeout_secs: 1000,
        };
        let r = record(T0, T0 + 10);
        assert_eq!(policy.expires_at(&r), T0 + 70);
        assert!(!policy.is_expired(&r, T0 + 69));
        assert!(policy.is_expired(&r, T0 + 70));
    }

    #[test]
    fn absolute_boundary_wins_over_activity() {
        let policy = ExpiryPolicy {
            idle_timeout_secs: 60,
            absolute_timeout_secs: 100,
        };
        let r = record(T0, T0 + 90);
        assert_eq!(policy.expires_at(&r), T0 + 100);
        assert!(!policy.is_expired(&r, T0 + 99));
        assert!(policy.is_expired(&r, T0 + 100));
    }

    #[test]
    fn a_remembered_session_lives_its_own_lifetime() {
        let policy = ExpiryPolicy {
            idle_timeout_secs: 60,
            absolute_timeout_secs: 100,
        };
        let mut r = record(T0, T0 + 90);
        r.remember_secs = Some(1000);
        // Idle for up to 1000 s, and past the 100 s absolute timeout.
        assert_eq!(policy.expires_at(&r), T0 + 1000);
        r.last_seen_at = T0 + 50;
        r.remember_secs = Some(30);
        // A short lifetime shortens the idle timeout, not the absolute one.
        assert_eq!(policy.expires_at(&r), T0 + 80);
    }

    #[test]
    fn huge_timeouts_do_not_overflow() {
        let policy = ExpiryPolicy {
            idle_timeout_secs: u64::MAX,
            absolute_timeout_secs: u64::MAX,
        };
        let r = record(T0, T0);
        assert_eq!(policy.expires_at(&r), i64::MAX);
        assert!(!policy.is_expired(&r, i64::MAX - 1));
    }

    #[test]
    fn touch_granularity() {
        let policy = ExpiryPolicy {
            idle_timeout_secs: 3600,
            absolute_timeout_secs: 86_400,
        };
        assert_eq!(policy.touch_granularity_secs(), 60);
        let r = record(T0, T0);
        assert!(!policy.needs_touch(&r, T0 + 59));
        assert!(policy.needs_touch(&r, T0 + 60));
        let tiny = ExpiryPolicy {
            idle_timeout_secs: 5,
            absolute_timeout_secs: 10,
        };
        assert_eq!(tiny.touch_granularity_secs(), 1);
        assert!(!tiny.needs_touch(&r, T0));
        assert!(tiny.needs_touch(&r, T0 + 1));
    }
}
