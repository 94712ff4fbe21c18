//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`, as Spin implements
//! them on top of the same stores as `fermyon:spin/key-value`.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::fermyon::SpinStore;
use super::{
    guest_result, trap, CasHandle, KvError, KvHost, KvResult, OpKind, OpenError, OpenStore,
    SwapError,
};
use crate::bindings::wasi::keyvalue::{atomics, batch, store};

/// The host side of a `bucket` resource.
pub struct Bucket(pub(crate) OpenStore);

/// The host side of a `cas` resource: the backend's handle, and the bucket
/// it was made from (Spin makes the fresh handle of a `cas-failed` from that
/// bucket, if the guest still has it open).
pub struct Cas {
    bucket_rep: u32,
    key: String,
    handle: Arc<dyn CasHandle>,
}

fn other(e: KvError) -> store::Error {
    store::Error::Other(e.message().to_owned())
}

impl KvHost {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<OpenStore> {
        Ok(self.table.get(bucket)?.0.clone())
    }

    /// The store behind a bucket handle that may since have been dropped
    /// (Spin looks it up by its number in its store table, which both
    /// interfaces share).
    fn store_by_rep(&self, rep: u32) -> Option<OpenStore> {
        if let Ok(bucket) = self.table.get(&Resource::<Bucket>::new_borrow(rep)) {
            return Some(bucket.0.clone());
        }
        let spin = self
            .table
            .get(&Resource::<SpinStore>::new_borrow(rep))
            .ok()?;
        Some(spin.0.clone())
    }

    /// A cas handle in the table, as Spin's `cas.new` makes one.
    async fn push_cas(
        &mut self,
        store: &OpenStore,
        bucket_rep: u32,
        key: String,
    ) -> wasmtime::Result<KvResult<Resource<Cas>>> {
        let handle = match self.new_cas_handle(&store.backend, &key).await {
            Ok(handle) => handle,
            Err(e) => return Ok(Err(e)),
        };
        let cas = Cas {
            bucket_rep,
            key,
            handle,
        };
        Ok(Ok(self.table.push(cas)?))
    }

    /// What Spin hands back after a refused swap: a new handle on the same
    /// bucket and key, on which it has already called `current`.
    async fn fresh_cas(
        &mut self,
        bucket_rep: u32,
        key: String,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Some(store) = self.store_by_rep(bucket_rep) else {
            return Ok(Err(atomics::CasError::StoreError(
                store::Error::NoSuchStore,
            )));
        };
        let fresh = match self.push_cas(&store, bucket_rep, key).await? {
            Ok(fresh) => fresh,
            Err(e) => return store_error(e),
        };
        let handle = self.table.get(&fresh)?.handle.clone();
        if let Err(e) = handle.current().await {
            // The new handle stays in the table, as in Spin.
            return store_error(e);
        }
        Ok(Err(atomics::CasError::CasFailed(fresh)))
    }
}

/// A backend error from a swap: a trap, or `store-error(other(...))`.
fn store_error<T>(e: KvError) -> wasmtime::Result<Result<T, atomics::CasError>> {
    if e.is_trap() {
        return Err(trap(&e));
    }
    Ok(Err(atomics::CasError::StoreError(other(e))))
}

impl store::Host for KvHost {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        let backend = match self.open_backend(&identifier).await {
            Ok(backend) => backend,
            Err(OpenError::AccessDenied) => return Ok(Err(store::Error::AccessDenied)),
            Err(OpenError::NoSuchStore) => return Ok(Err(store::Error::NoSuchStore)),
            // Spin reports a full table on this interface as `other`.
            Err(OpenError::TableFull) => {
                return Ok(Err(store::Error::Other("store table full".into())))
            }
            Err(OpenError::Other(e)) => return guest_result(Err(e), other),
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
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.get(&key).await, other)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.set(&key, &value).await, other)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.delete(&key).await, other)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.exists(&key).await, other)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return guest_result(Err(e), other);
        }
        // Spin returns every key in one page and refuses cursors.
        if cursor.is_some() {
            return Ok(Err(store::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        let keys = store.backend.keys().await;
        guest_result(keys, other).map(|r| r.map(|keys| store::KeyResponse { keys, cursor: None }))
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
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.increment(&key, delta).await, other)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        // Spin never removes a swapped handle from its table: it stays (and,
        // on Redis, its connection stays open) until the instance ends.
        let (bucket_rep, key, handle) = {
            let cas = self.table.get(&cas)?;
            (cas.bucket_rep, cas.key.clone(), cas.handle.clone())
        };
        if let Err(e) = self.begin(OpKind::Write) {
            return store_error(e);
        }
        match handle.swap(value).await {
            Ok(()) => Ok(Ok(())),
            Err(SwapError::CasFailed(_)) => self.fresh_cas(bucket_rep, key).await,
            Err(SwapError::Store(e)) => store_error(e),
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
        // No read: on SQLite a new handle does no I/O; on Redis it opens a
        // connection, counted as one.
        if let Err(e) = self.fault_check() {
            return guest_result(Err(e), other);
        }
        let made = self.push_cas(&store, bucket.rep(), key).await?;
        guest_result(made, other)
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let handle = self.table.get(&cas)?.handle.clone();
        if let Err(e) = self.begin(OpKind::Read) {
            return guest_result(Err(e), other);
        }
        guest_result(handle.current().await, other)
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        self.cas_closed();
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
            return guest_result(Err(e), other);
        }
        if keys.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        guest_result(store.backend.get_many(keys).await, other)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return guest_result(Err(e), other);
        }
        if key_values.is_empty() {
            return Ok(Ok(()));
        }
        guest_result(store.backend.set_many(key_values).await, other)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let store = self.bucket(&bucket)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return guest_result(Err(e), other);
        }
        if keys.is_empty() {
            return Ok(Ok(()));
        }
        guest_result(store.backend.delete_many(keys).await, other)
    }
}
