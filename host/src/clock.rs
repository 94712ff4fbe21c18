//! The guests' wall clock: real time plus an offset the host controls, so
//! tests can make time pass (session expiry) without waiting. The monotonic
//! clock is left real: it measures durations, which must not jump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::HostWallClock;

/// The offset added to real time, shared by the host and every instance.
#[derive(Debug, Clone, Default)]
pub struct ClockOffset(Arc<AtomicU64>);

impl ClockOffset {
    /// Moves the guests' clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Saturate rather than wrap: a clock that jumps back would be worse
        // than one stuck at the far future.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                Some(current.saturating_add(nanos))
            });
    }

    /// The current offset.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// What the guests read as "now", since the Unix epoch.
    pub fn now(&self) -> Duration {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        real.saturating_add(self.get())
    }
}

/// `wasi:clocks/wall-clock` for one instance.
pub struct OffsetWallClock(pub ClockOffset);

impl HostWallClock for OffsetWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.0.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward() {
        let offset = ClockOffset::default();
        let before = offset.now();
        offset.advance(Duration::from_secs(3600));
        let after = OffsetWallClock(offset.clone()).now();
        assert!(after >= before + Duration::from_secs(3600));
        assert!(after < before + Duration::from_secs(3660));
        assert_eq!(offset.get(), Duration::from_secs(3600));
    }
}
