//! Per-instance key-value and variable operation counts, and the test-only
//! fault switch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Whether a guest key-value call reads or writes the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// get, exists, get-keys, list-keys, get-many, cas current.
    Read,
    /// set, delete, set-many, delete-many, increment, swap.
    Write,
}

/// Reads, writes and new store connections across both key-value
/// interfaces, and `fermyon:spin/variables` gets, of one instance (which
/// serves one request under WASI 0.2, possibly many under WASI 0.3). One
/// guest call counts once as a read or a write, whatever it costs the
/// backend; `cas.new` is neither (on SQLite it does no I/O, on Redis it
/// opens a connection, counted as such).
#[derive(Debug, Default)]
pub struct OpCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    connections: AtomicU64,
    var_reads: AtomicU64,
}

/// The counts of an [`OpCounters`] at one moment: a reused instance's
/// request is charged the difference between its start and its end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpCounts {
    /// Key-value reads.
    pub reads: u64,
    /// Key-value writes.
    pub writes: u64,
    /// New store connections.
    pub connections: u64,
    /// `fermyon:spin/variables` gets.
    pub var_reads: u64,
}

impl OpCounts {
    /// What was counted after `earlier` was taken.
    pub fn since(self, earlier: OpCounts) -> OpCounts {
        OpCounts {
            reads: self.reads.saturating_sub(earlier.reads),
            writes: self.writes.saturating_sub(earlier.writes),
            connections: self.connections.saturating_sub(earlier.connections),
            var_reads: self.var_reads.saturating_sub(earlier.var_reads),
        }
    }
}

impl OpCounters {
    /// Counts one operation.
    pub fn record(&self, kind: OpKind) {
        // Relaxed is enough: a request's totals are read once its body has
        // ended, after the host calls it made returned.
        match kind {
            OpKind::Read => self.reads.fetch_add(1, Ordering::Relaxed),
            OpKind::Write => self.writes.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Counts `n` new connections to a store (Redis: the store's shared
    /// connection at its first open, one per cas handle).
    pub fn record_connections(&self, n: u64) {
        if n > 0 {
            self.connections.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// New store connections counted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Reads counted so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Writes counted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Counts one `fermyon:spin/variables` get.
    pub fn record_var_read(&self) {
        self.var_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Variable gets counted so far.
    pub fn var_reads(&self) -> u64 {
        self.var_reads.load(Ordering::Relaxed)
    }

    /// Everything counted so far.
    pub fn counts(&self) -> OpCounts {
        OpCounts {
            reads: self.reads(),
            writes: self.writes(),
            connections: self.connections(),
            var_reads: self.var_reads(),
        }
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
