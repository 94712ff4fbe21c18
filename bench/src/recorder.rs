//! A [`SessionStore`] in memory that spin-sessions-core's own code fills: the
//! prefill creates its sessions through the `spin-sessions` library
//! on it, so the keys, the record JSON and the index layout are exactly
//! what the component writes, and only then copies what it holds into
//! SQLite or Redis.
//!
//! Counters are kept apart, as numbers: each backend stores them in its
//! own encoding (SQLite 8 little-endian bytes, Redis decimal text), and
//! spin-sessions-core reads a counter only through `increment`, never `get`.
//! Thread-safe, so several threads can create sessions at once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use spin_sessions_core::store::{SessionStore, Snapshot, StoreError, Swap};

/// What the store holds: plain values and counters.
#[derive(Default)]
pub struct Contents {
    /// Keys set with `set`, `set_many` or a swap.
    pub values: HashMap<String, Vec<u8>>,
    /// Keys only ever changed with `increment`.
    pub counters: HashMap<String, i64>,
}

/// The store, shared by the threads that fill it (see the module docs).
#[derive(Default)]
pub struct Recorder {
    contents: Mutex<Contents>,
}

impl Recorder {
    /// What the store holds now.
    pub fn into_contents(self) -> Contents {
        self.contents
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Contents> {
        // A thread that panicked while filling fails the prefill anyway
        // (its join reports it): what it left is still consistent.
        self.contents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`Recorder`] read, for a later compare-and-swap.
pub struct RecordedSnapshot {
    key: String,
    value: Option<Vec<u8>>,
}

impl Snapshot for RecordedSnapshot {
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

impl Contents {
    /// What `key` holds: a value, or a counter as decimal text (what a
    /// compare-and-swap of a counter sees; the library reads either of
    /// Spin's encodings).
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        self.values
            .get(key)
            .cloned()
            .or_else(|| self.counters.get(key).map(|n| n.to_string().into_bytes()))
    }

    /// Stores `value` at `key`: as a counter if `key` is one (the signing
    /// key's winner is swapped from one number to another).
    fn write(&mut self, key: String, value: &[u8]) {
        let number = std::str::from_utf8(value).ok().and_then(|t| t.parse().ok());
        match (self.counters.get_mut(&key), number) {
            (Some(counter), Some(n)) => *counter = n,
            _ => {
                self.counters.remove(&key);
                self.values.insert(key, value.to_vec());
            }
        }
    }
}

/// An honest store: a swap writes if and only if the key is unchanged, and
/// says so. The prefill makes no concurrent swaps of one key anyway.
impl SessionStore for &Recorder {
    type Snapshot = RecordedSnapshot;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().read(key))
    }

    fn snapshot(&self, key: &str) -> Result<RecordedSnapshot, StoreError> {
        Ok(RecordedSnapshot {
            key: key.to_owned(),
            value: self.get(key)?,
        })
    }

    fn swap(
        &self,
        snapshot: RecordedSnapshot,
        value: &[u8],
    ) -> Result<Swap<RecordedSnapshot>, StoreError> {
        let mut contents = self.lock();
        let current = contents.read(&snapshot.key);
        if current != snapshot.value {
            return Ok(Swap::NotConfirmed(RecordedSnapshot {
                key: snapshot.key,
                value: current,
            }));
        }
        contents.write(snapshot.key, value);
        Ok(Swap::Done)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().values.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut contents = self.lock();
        contents.values.remove(key);
        contents.counters.remove(key);
        Ok(())
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut contents = self.lock();
        for (key, value) in entries {
            contents.values.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut contents = self.lock();
        for key in keys {
            contents.values.remove(key);
            contents.counters.remove(key);
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut contents = self.lock();
        let counter = contents.counters.entry(key.to_owned()).or_insert(0);
        *counter = counter.wrapping_add(delta);
        Ok(*counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_apart_and_swaps_are_honest() {
        let recorder = Recorder::default();
        let store = &recorder;
        assert_eq!(store.increment("n", 2).unwrap(), 2);
        assert_eq!(store.increment("n", -1).unwrap(), 1);
        // A counter reads, and swaps, as decimal text, and stays a counter.
        assert_eq!(store.get("n").unwrap(), Some(b"1".to_vec()));
        let counter = store.snapshot("n").unwrap();
        assert!(matches!(store.swap(counter, b"5").unwrap(), Swap::Done));
        assert_eq!(store.increment("n", 0).unwrap(), 5);
        store.set("k", b"a").unwrap();
        let stale = store.snapshot("k").unwrap();
        let fresh = store.snapshot("k").unwrap();
        assert!(matches!(store.swap(fresh, b"b").unwrap(), Swap::Done));
        match store.swap(stale, b"c").unwrap() {
            Swap::NotConfirmed(now) => assert_eq!(now.value(), Some(&b"b"[..])),
            Swap::Done => panic!("a stale swap must not be stored"),
        }
        store.delete_many(&["n".into(), "k".into()]).unwrap();
        let contents = recorder.into_contents();
        assert!(contents.values.is_empty() && contents.counters.is_empty());
    }
}
