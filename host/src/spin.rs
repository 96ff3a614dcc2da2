//! `fermyon:spin/key-value@2.0.0` and `fermyon:spin/variables@2.0.0`, generated
//! from the WIT vendored in `wit/deps/spin` and backed by the edge's store.

use wasmtime::component::Resource;

use crate::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/spin",
        world: "fermyon:spin/host",
        // Synchronous: the stores answer from memory or a local SQLite file, and
        // an async host call costs a fiber switch on every request.
        imports: { default: trappable },
        with: { "fermyon:spin/key-value.store": super::KvStore },
    });
}

pub use bindings::fermyon::spin::{key_value, variables};

/// An open handle on the default store. Spin gives components one store,
/// labelled `default`; that is the only label this host knows.
#[derive(Debug)]
pub struct KvStore;

const DEFAULT_LABEL: &str = "default";

fn other(e: anyhow::Error) -> key_value::Error {
    key_value::Error::Other(format!("{e:#}"))
}

impl key_value::HostStore for HostState {
    fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<KvStore>, key_value::Error>> {
        if label != DEFAULT_LABEL {
            return Ok(Err(key_value::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(KvStore)?))
    }

    fn get(
        &mut self,
        _: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        Ok(self.edge.kv.get(&key).map_err(other))
    }

    fn set(
        &mut self,
        _: Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        Ok(self.edge.kv.set(&key, &value).map_err(other))
    }

    fn delete(
        &mut self,
        _: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        Ok(self.edge.kv.delete(&key).map_err(other))
    }

    fn exists(
        &mut self,
        _: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, key_value::Error>> {
        Ok(self.edge.kv.get(&key).map(|v| v.is_some()).map_err(other))
    }

    fn get_keys(
        &mut self,
        _: Resource<KvStore>,
    ) -> wasmtime::Result<Result<Vec<String>, key_value::Error>> {
        Ok(self.edge.kv.keys().map_err(other))
    }

    fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl key_value::Host for HostState {}

impl variables::Host for HostState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        // Spin's rule for variable names: lowercase letters, digits, underscores.
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && name.as_bytes()[0].is_ascii_lowercase();
        if !valid {
            return Ok(Err(variables::Error::InvalidName(name)));
        }
        Ok(self
            .edge
            .variables
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(name)))
    }
}
