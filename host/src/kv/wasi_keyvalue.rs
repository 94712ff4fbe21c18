//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`, as Spin implements
//! them on top of the same stores as `fermyon:spin/key-value`.

use wasmtime::component::Resource;

use super::{KvError, KvHost, OpKind, OpenError, OpenStore};
use crate::bindings::wasi::keyvalue::{atomics, batch, store};

/// The host side of a `bucket` resource.
pub struct Bucket(pub(crate) OpenStore);

/// The host side of a `cas` resource: the key, and the value the handle saw
/// when it was made. A swap succeeds only if the store still holds that
/// value.
pub struct Cas {
    store: OpenStore,
    key: String,
    seen: Option<Vec<u8>>,
}

fn other(e: KvError) -> store::Error {
    store::Error::Other(e.0)
}

impl KvHost {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<OpenStore> {
        Ok(self.table.get(bucket)?.0.clone())
    }

    /// Reads the current value of `key` into a new cas handle. Shared by
    /// `cas.new` and by a failed `swap`, which hands back a fresh handle.
    async fn make_cas(
        &mut self,
        store: OpenStore,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, store::Error>> {
        let seen = match store.backend.get(&key).await {
            Ok(seen) => seen,
            Err(e) => return Ok(Err(other(e))),
        };
        let handle = self.table.push(Cas { store, key, seen })?;
        Ok(Ok(handle))
    }
}

impl store::Host for KvHost {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        let backend = match self.open_backend(&identifier) {
            Ok(backend) => backend,
            Err(OpenError::AccessDenied) => return Ok(Err(store::Error::AccessDenied)),
            Err(OpenError::NoSuchStore) => return Ok(Err(store::Error::NoSuchStore)),
            // Spin reports a full table on this interface as `other`.
            Err(OpenError::TableFull) => {
                return Ok(Err(store::Error::Other("store table full".into())))
            }
            Err(OpenError::Other(msg)) => return Ok(Err(store::Error::Other(msg))),
        };
        let handle = self.table.push(Bucket(OpenStore {
            label: identifier,
            backend,
        }))?;
        Ok(Ok(handle))
    }
}

impl store::HostBucket for KvHost {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return Ok(Err(other(e)));
        }
        Ok(store.backend.get(&key).await.map_err(other))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return Ok(Err(other(e)));
        }
        Ok(store.backend.set(&key, &value).await.map_err(other))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return Ok(Err(other(e)));
        }
        Ok(store.backend.delete(&key).await.map_err(other))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return Ok(Err(other(e)));
        }
        Ok(store.backend.exists(&key).await.map_err(other))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return Ok(Err(other(e)));
        }
        // Spin returns every key in one page and refuses cursors.
        if cursor.is_some() {
            return Ok(Err(store::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        Ok(store
            .backend
            .keys()
            .await
            .map(|keys| store::KeyResponse { keys, cursor: None })
            .map_err(other))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.store_closed();
        Ok(())
    }
}

impl atomics::Host for KvHost {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return Ok(Err(other(e)));
        }
        Ok(store.backend.increment(&key, delta).await.map_err(other))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        // The guest gives the handle up: it is ours to delete.
        let Cas { store, key, seen } = self.table.delete(cas)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return Ok(Err(atomics::CasError::StoreError(other(e))));
        }
        match store
            .backend
            .compare_and_swap(&key, seen.as_deref(), &value)
            .await
        {
            Ok(true) => Ok(Ok(())),
            // Lost the race: hand back a handle that has seen the value now
            // stored, so the guest can decide and retry, as Spin does.
            Ok(false) => match self.make_cas(store, key).await? {
                Ok(fresh) => Ok(Err(atomics::CasError::CasFailed(fresh))),
                Err(e) => Ok(Err(atomics::CasError::StoreError(e))),
            },
            Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
        }
    }
}

impl atomics::HostCas for KvHost {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return Ok(Err(other(e)));
        }
        self.make_cas(store, key).await
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        // The value the handle saw when it was made: what a swap will compare
        // against. Not a new read, so not counted.
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvHost {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return Ok(Err(other(e)));
        }
        if keys.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        Ok(store.backend.get_many(keys).await.map_err(other))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return Ok(Err(other(e)));
        }
        if key_values.is_empty() {
            return Ok(Ok(()));
        }
        Ok(store.backend.set_many(key_values).await.map_err(other))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return Ok(Err(other(e)));
        }
        if keys.is_empty() {
            return Ok(Ok(()));
        }
        Ok(store.backend.delete_many(keys).await.map_err(other))
    }
}
