//! Per-request key-value operation counts, and the test-only fault switch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Whether a guest key-value call reads or writes the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// get, exists, get-keys, list-keys, get-many, cas new.
    Read,
    /// set, delete, set-many, delete-many, increment, swap.
    Write,
}

/// Reads and writes performed by one request, across both key-value
/// interfaces. One guest call counts once, whatever it costs the backend.
#[derive(Debug, Default)]
pub struct OpCounters {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl OpCounters {
    /// Counts one operation.
    pub fn record(&self, kind: OpKind) {
        // Relaxed is enough: the totals are read only after the guest task
        // has finished, which synchronises through the task join.
        match kind {
            OpKind::Read => self.reads.fetch_add(1, Ordering::Relaxed),
            OpKind::Write => self.writes.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Reads counted so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Writes counted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// While set, every key-value operation of both interfaces fails with
/// `other(message)`. Only the library's test API can set it.
#[derive(Debug, Default)]
pub struct FaultSwitch {
    message: RwLock<Option<String>>,
}

impl FaultSwitch {
    /// Turns the fault on (`Some`) or off (`None`).
    pub fn set(&self, message: Option<String>) {
        *self.message.write().unwrap_or_else(|e| e.into_inner()) = message;
    }

    /// The current fault message, if the fault is on.
    pub fn current(&self) -> Option<String> {
        self.message
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
