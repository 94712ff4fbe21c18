//! `fermyon:spin/key-value@2.0.0`: Spin's own key-value interface.

use wasmtime::component::Resource;

use super::{guest_result, KvError, KvHost, OpKind, OpenError, OpenStore};
use crate::bindings::fermyon::spin::key_value::{self, Error};

/// The host side of a `store` resource.
pub struct SpinStore(pub(crate) OpenStore);

fn other(e: KvError) -> Error {
    Error::Other(e.message().to_owned())
}

impl KvHost {
    fn spin_store(&self, store: &Resource<SpinStore>) -> wasmtime::Result<OpenStore> {
        Ok(self.table.get(store)?.0.clone())
    }
}

impl key_value::Host for KvHost {}

impl key_value::HostStore for KvHost {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<SpinStore>, Error>> {
        let backend = match self.open_backend(&label).await {
            Ok(backend) => backend,
            Err(OpenError::AccessDenied) => return Ok(Err(Error::AccessDenied)),
            Err(OpenError::NoSuchStore) => return Ok(Err(Error::NoSuchStore)),
            Err(OpenError::TableFull) => return Ok(Err(Error::StoreTableFull)),
            Err(OpenError::Other(e)) => return guest_result(Err(e), other),
        };
        let handle = self.table.push(SpinStore(OpenStore { label, backend }))?;
        Ok(Ok(handle))
    }

    async fn get(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let store = self.spin_store(&store)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.get(&key).await, other)
    }

    async fn set(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store = self.spin_store(&store)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.set(&key, &value).await, other)
    }

    async fn delete(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store = self.spin_store(&store)?;
        if let Err(e) = self.begin(OpKind::Write) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.delete(&key).await, other)
    }

    async fn exists(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let store = self.spin_store(&store)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.exists(&key).await, other)
    }

    async fn get_keys(
        &mut self,
        store: Resource<SpinStore>,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let store = self.spin_store(&store)?;
        if let Err(e) = self.begin(OpKind::Read) {
            return guest_result(Err(e), other);
        }
        guest_result(store.backend.keys().await, other)
    }

    async fn drop(&mut self, store: Resource<SpinStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        self.store_closed();
        Ok(())
    }
}
