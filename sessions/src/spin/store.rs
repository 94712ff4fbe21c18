//! [`SessionStore`] over Spin's key-value store, through `wasi:keyvalue`
//! (store, atomics, and the batch writes; never the batch read, which
//! Spin's Redis store breaks).

use spin_sessions_core::{SessionStore, Snapshot, StoreError, Swap};

use super::bindings::wasi::keyvalue::{atomics, batch, store};

/// One opened bucket of Spin's key-value store.
pub struct SpinStore {
    bucket: store::Bucket,
}

impl SpinStore {
    /// Opens the store named `label` (it must be listed in the component's
    /// `key_value_stores`).
    pub fn open(label: &str) -> Result<Self, StoreError> {
        store::open(label)
            .map(|bucket| SpinStore { bucket })
            .map_err(store_error)
    }
}

fn store_error(err: store::Error) -> StoreError {
    StoreError(match err {
        store::Error::NoSuchStore => "no such store".to_owned(),
        store::Error::AccessDenied => "access denied".to_owned(),
        store::Error::Other(message) => message,
    })
}

/// A `wasi:keyvalue` compare-and-swap handle with the value it read.
pub struct SpinSnapshot {
    cas: atomics::Cas,
    value: Option<Vec<u8>>,
}

impl Snapshot for SpinSnapshot {
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

impl SpinSnapshot {
    /// Reads the handle's value. Spin's SQLite store reads in `current`, and
    /// its swap compares against that read; Spin's Redis store `WATCH`es the
    /// key there. Either way a swap is only meaningful after it.
    fn read(cas: atomics::Cas) -> Result<Self, StoreError> {
        let value = cas.current().map_err(store_error)?;
        Ok(SpinSnapshot { cas, value })
    }
}

impl SessionStore for SpinStore {
    type Snapshot = SpinSnapshot;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bucket.get(key).map_err(store_error)
    }

    fn snapshot(&self, key: &str) -> Result<SpinSnapshot, StoreError> {
        SpinSnapshot::read(atomics::Cas::new(&self.bucket, key).map_err(store_error)?)
    }

    fn swap(&self, snapshot: SpinSnapshot, value: &[u8]) -> Result<Swap<SpinSnapshot>, StoreError> {
        match atomics::swap(snapshot.cas, value) {
            Ok(()) => Ok(Swap::Done),
            // Spin's Redis store answers this after a successful write too:
            // the caller tells from what the key now holds.
            Err(atomics::CasError::CasFailed(fresh)) => {
                Ok(Swap::NotConfirmed(SpinSnapshot::read(fresh)?))
            }
            Err(atomics::CasError::StoreError(err)) => Err(store_error(err)),
        }
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.bucket.set(key, value).map_err(store_error)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bucket.delete(key).map_err(store_error)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        batch::set_many(&self.bucket, entries).map_err(store_error)
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        batch::delete_many(&self.bucket, keys).map_err(store_error)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        atomics::increment(&self.bucket, key, delta).map_err(store_error)
    }

    fn back_off(&self, pause: std::time::Duration) {
        // wasi:clocks' monotonic timer. In a reused WASI 0.3 instance this
        // holds the instance, as every key-value call does (ARCHITECTURE.md,
        // "Living with stores"): only a session written by several requests
        // at once waits, and for a few milliseconds.
        std::thread::sleep(pause);
    }
}
