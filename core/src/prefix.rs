//! A store whose keys all begin with one prefix, so that several
//! applications can share one key-value store without meeting.

use crate::store::{SessionStore, StoreError, Swap};

/// `S`, with `prefix` put before every key it is asked for. Everything the
/// sessions keep (records, the expiry index, the counters, the signing key)
/// goes through it, so two applications with different prefixes never read
/// or sweep each other's keys.
pub struct Prefixed<S> {
    inner: S,
    prefix: String,
}

impl<S> Prefixed<S> {
    /// `inner` under `prefix` (which may be empty: keys are then unchanged).
    pub fn new(inner: S, prefix: impl Into<String>) -> Self {
        Prefixed {
            inner,
            prefix: prefix.into(),
        }
    }

    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }
}

impl<S: SessionStore> SessionStore for Prefixed<S> {
    type Snapshot = S::Snapshot;

    fn back_off(&self, pause: std::time::Duration) {
        self.inner.back_off(pause)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(&self.key(key))
    }

    fn snapshot(&self, key: &str) -> Result<Self::Snapshot, StoreError> {
        self.inner.snapshot(&self.key(key))
    }

    fn swap(
        &self,
        snapshot: Self::Snapshot,
        value: &[u8],
    ) -> Result<Swap<Self::Snapshot>, StoreError> {
        // The snapshot already holds the full key it was taken of.
        self.inner.swap(snapshot, value)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.set(&self.key(key), value)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(&self.key(key))
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(key, value)| (self.key(key), value.clone()))
            .collect();
        self.inner.set_many(&entries)
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        self.inner.delete_many(&keys)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.inner.increment(&self.key(key), delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::store::Snapshot;

    #[test]
    fn every_operation_sees_only_its_prefix() {
        let shared = MemoryStore::new();
        let a = Prefixed::new(&shared, "a/");
        let b = Prefixed::new(&shared, "b/");
        a.set("k", b"1").unwrap();
        b.set_many(&[("k".into(), b"2".to_vec())]).unwrap();
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(a.increment("n", 5).unwrap(), 5);
        assert_eq!(b.increment("n", 1).unwrap(), 1);
        let snapshot = a.snapshot("k").unwrap();
        assert_eq!(snapshot.value(), Some(&b"1"[..]));
        assert!(matches!(a.swap(snapshot, b"3").unwrap(), Swap::Done));
        assert_eq!(shared.peek("a/k").as_deref(), Some(&b"3"[..]));
        b.delete_many(&["k".into()]).unwrap();
        a.delete("n").unwrap();
        let mut keys = shared.keys();
        keys.sort();
        assert_eq!(keys, ["a/k", "b/n"]);
    }
}
