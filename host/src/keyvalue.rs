//! `wasi:keyvalue/store` and `wasi:keyvalue/atomics` at `0.2.0-draft2` (the
//! WIT spin-sdk 5.2.0 ships, vendored unchanged in `wit/deps/keyvalue`),
//! backed by the edge's store.
//!
//! - One bucket, `default`: the same data as the `fermyon:spin/key-value`
//!   store `default` (both are `Edge::kv`). Any other identifier is
//!   `no-such-store`.
//! - `cas` is a true compare-and-swap, unlike Spin's default store, which
//!   accepts a swap made from a stale read. `cas.new` reads the key and keeps
//!   that value; `current()` returns it; `swap` writes only if the key still
//!   holds it, in one atomic step of the backend
//!   ([`KvBackend::compare_and_swap`]). When it does not, `swap` writes
//!   nothing and fails with `cas-failed` carrying a new `cas` that holds what
//!   the key holds now, so a retry compares against the latest value.
//! - `increment` keeps the counter as Spin does: an `s64` in 8 bytes,
//!   little-endian (an absent key counts as 0). A value of any other length is
//!   an `other` error, as is overflow. It is a compare-and-swap loop, so
//!   concurrent increments lose nothing.
//! - `list-keys` returns every key in one page (`cursor: none`); a cursor,
//!   which this host never hands out, is an `other` error.
//! - `wasi:keyvalue/batch` is not provided.

use wasmtime::component::Resource;

use crate::HostState;
use crate::kv::KvBackend;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        // Synchronous, as `fermyon:spin/key-value`: the stores answer from
        // memory or a local SQLite file.
        imports: { default: trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

pub use bindings::wasi::keyvalue::{atomics, store};

/// An open `default` bucket. It holds nothing: every call goes to `Edge::kv`.
#[derive(Debug)]
pub struct Bucket;

/// A compare-and-swap in progress: the key and the value it held when the
/// operation was made (`None`: absent), which `swap` requires it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cas {
    key: String,
    current: Option<Vec<u8>>,
}

impl Cas {
    /// The value the key held when this operation was made.
    pub fn current(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }
}

const DEFAULT_BUCKET: &str = "default";

/// Starts a compare-and-swap on `key`: reads what it holds now.
pub(crate) fn cas_new(kv: &dyn KvBackend, key: String) -> anyhow::Result<Cas> {
    let current = kv.get(&key)?;
    Ok(Cas { key, current })
}

/// Writes `value` if the key still holds what `cas` read. `Ok(Err(fresh))`:
/// it did not; nothing was written and `fresh` holds the key's value now.
pub(crate) fn cas_swap(
    kv: &dyn KvBackend,
    cas: Cas,
    value: &[u8],
) -> anyhow::Result<Result<(), Cas>> {
    Ok(kv
        .compare_and_swap(&cas.key, cas.current.as_deref(), value)?
        .map_err(|current| Cas {
            key: cas.key,
            current,
        }))
}

/// Adds `delta` to the 8-byte little-endian counter at `key` (absent: 0) and
/// returns the new value.
pub(crate) fn increment(kv: &dyn KvBackend, key: &str, delta: i64) -> anyhow::Result<i64> {
    let mut seen = kv.get(key)?;
    loop {
        let old = match seen.as_deref() {
            None => 0,
            Some(bytes) => i64::from_le_bytes(bytes.try_into().map_err(|_| {
                anyhow::anyhow!(
                    "the value of {key:?} is {} bytes, not an 8-byte little-endian s64",
                    bytes.len()
                )
            })?),
        };
        let new = old.checked_add(delta).ok_or_else(|| {
            anyhow::anyhow!("incrementing {key:?} ({old}) by {delta} overflows s64")
        })?;
        match kv.compare_and_swap(key, seen.as_deref(), &new.to_le_bytes())? {
            Ok(()) => return Ok(new),
            // Someone else wrote in between: retry from what is there now.
            Err(current) => seen = current,
        }
    }
}

fn other(e: anyhow::Error) -> store::Error {
    store::Error::Other(format!("{e:#}"))
}

impl store::Host for HostState {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        if identifier != DEFAULT_BUCKET {
            return Ok(Err(store::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(Bucket)?))
    }
}

impl store::HostBucket for HostState {
    fn get(
        &mut self,
        _: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(self.edge.kv.get(&key).map_err(other))
    }

    fn set(
        &mut self,
        _: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        Ok(self.edge.kv.set(&key, &value).map_err(other))
    }

    fn delete(
        &mut self,
        _: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        Ok(self.edge.kv.delete(&key).map_err(other))
    }

    fn exists(
        &mut self,
        _: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        Ok(self.edge.kv.get(&key).map(|v| v.is_some()).map_err(other))
    }

    fn list_keys(
        &mut self,
        _: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        if cursor.is_some() {
            return Ok(Err(store::Error::Other(
                "unknown cursor: this host lists every key in one page and issues no cursors"
                    .to_owned(),
            )));
        }
        Ok(self
            .edge
            .kv
            .keys()
            .map(|keys| store::KeyResponse { keys, cursor: None })
            .map_err(other))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::HostCas for HostState {
    fn new(
        &mut self,
        _: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, store::Error>> {
        match cas_new(&*self.edge.kv, key) {
            Ok(cas) => Ok(Ok(self.table.push(cas)?)),
            Err(e) => Ok(Err(other(e))),
        }
    }

    fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.current().map(<[u8]>::to_vec)))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    fn increment(
        &mut self,
        _: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, store::Error>> {
        Ok(increment(&*self.edge.kv, &key, delta).map_err(other))
    }

    fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        // `swap` consumes the handle, whatever the outcome.
        let cas = self.table.delete(cas)?;
        Ok(match cas_swap(&*self.edge.kv, cas, &value) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(fresh)) => Err(atomics::CasError::CasFailed(self.table.push(fresh)?)),
            Err(e) => Err(atomics::CasError::StoreError(other(e))),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::kv::{MemoryKv, SqliteKv};
    use crate::{AllowList, Edge};

    fn temp_sqlite(name: &str) -> (std::path::PathBuf, SqliteKv) {
        let dir = std::env::temp_dir().join(format!(
            "rollout-keyvalue-test-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("kv.sqlite");
        let _ = std::fs::remove_file(&path);
        let kv = SqliteKv::open(&path).expect("open");
        (dir, kv)
    }

    /// Two writers start a CAS from the same read; the second one's swap is
    /// stale: it fails, writes nothing, and its fresh handle holds the value
    /// the first wrote, from which a retry succeeds.
    fn stale_cas_is_refused(kv: &dyn KvBackend) {
        let absent = cas_new(kv, "cfg".to_owned()).expect("new");
        assert_eq!(absent.current(), None);
        kv.set("cfg", b"v1").expect("set");
        // Made while the key was absent: stale once anyone creates it.
        let fresh = cas_swap(kv, absent, b"v0")
            .expect("swap")
            .expect_err("a CAS from before the key existed is stale");
        assert_eq!(fresh.current(), Some(&b"v1"[..]));

        let first = cas_new(kv, "cfg".to_owned()).expect("new");
        let second = cas_new(kv, "cfg".to_owned()).expect("new");
        assert_eq!(first.current(), Some(&b"v1"[..]));
        assert_eq!(cas_swap(kv, first, b"v2").expect("swap"), Ok(()));
        let fresh = cas_swap(kv, second, b"v0")
            .expect("swap")
            .expect_err("the second CAS read v1, which is gone");
        assert_eq!(fresh.current(), Some(&b"v2"[..]));
        assert_eq!(kv.get("cfg").expect("get"), Some(b"v2".to_vec()));
        assert_eq!(cas_swap(kv, fresh, b"v3").expect("swap"), Ok(()));
        assert_eq!(kv.get("cfg").expect("get"), Some(b"v3".to_vec()));

        // A delete in between makes a CAS stale too; the fresh handle holds
        // absence, and swapping from it creates the key.
        let before_delete = cas_new(kv, "cfg".to_owned()).expect("new");
        kv.delete("cfg").expect("delete");
        let fresh = cas_swap(kv, before_delete, b"v4")
            .expect("swap")
            .expect_err("the key was deleted");
        assert_eq!(fresh.current(), None);
        assert_eq!(kv.get("cfg").expect("get"), None);
        assert_eq!(cas_swap(kv, fresh, b"v5").expect("swap"), Ok(()));
        assert_eq!(kv.get("cfg").expect("get"), Some(b"v5".to_vec()));
    }

    #[test]
    fn a_stale_cas_fails_with_a_fresh_handle_in_memory() {
        stale_cas_is_refused(&MemoryKv::default());
    }

    #[test]
    fn a_stale_cas_fails_with_a_fresh_handle_in_sqlite() {
        let (dir, kv) = temp_sqlite("stale-cas");
        stale_cas_is_refused(&kv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn increment_keeps_an_s64_as_8_little_endian_bytes() {
        let kv = MemoryKv::default();
        assert_eq!(increment(&kv, "n", 5).expect("from absent"), 5);
        assert_eq!(increment(&kv, "n", -7).expect("down"), -2);
        assert_eq!(
            kv.get("n").expect("get"),
            Some((-2i64).to_le_bytes().to_vec())
        );
        kv.set("text", b"12").expect("set");
        let e = increment(&kv, "text", 1).expect_err("not 8 bytes");
        assert!(e.to_string().contains("2 bytes"), "{e}");
        kv.set("max", &i64::MAX.to_le_bytes()).expect("set");
        let e = increment(&kv, "max", 1).expect_err("overflow");
        assert!(e.to_string().contains("overflows"), "{e}");
        assert_eq!(
            kv.get("max").expect("get"),
            Some(i64::MAX.to_le_bytes().to_vec())
        );
    }

    #[test]
    fn concurrent_increments_lose_nothing() {
        let (dir, sqlite) = temp_sqlite("increment");
        let memory = MemoryKv::default();
        for kv in [&memory as &dyn KvBackend, &sqlite] {
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        for _ in 0..500 {
                            increment(kv, "hits", 1).expect("increment");
                        }
                    });
                }
            });
            assert_eq!(
                kv.get("hits").expect("get"),
                Some(4000i64.to_le_bytes().to_vec())
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn host_state(kv: Arc<dyn KvBackend>) -> HostState {
        let edge = Arc::new(Edge {
            kv,
            variables: HashMap::new(),
            allow: AllowList::default(),
        });
        HostState::new(
            edge,
            None,
            None,
            &[],
            crate::Limits::default().origin_body_timeout,
        )
    }

    fn borrow(bucket: &Resource<Bucket>) -> Resource<Bucket> {
        Resource::new_borrow(bucket.rep())
    }

    #[test]
    fn only_the_default_bucket_opens_and_it_is_the_spin_default_store() {
        let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
        let mut state = host_state(kv.clone());
        assert!(matches!(
            store::Host::open(&mut state, "other".to_owned()).expect("no trap"),
            Err(store::Error::NoSuchStore)
        ));
        let bucket = store::Host::open(&mut state, "default".to_owned())
            .expect("no trap")
            .expect("default opens");
        store::HostBucket::set(&mut state, borrow(&bucket), "a".to_owned(), b"1".to_vec())
            .expect("no trap")
            .expect("set");
        // The fermyon:spin/key-value `default` store sees the same data.
        let spin_store = crate::spin::key_value::HostStore::open(&mut state, "default".to_owned())
            .expect("no trap")
            .expect("spin default opens");
        let seen = crate::spin::key_value::HostStore::get(&mut state, spin_store, "a".to_owned())
            .expect("no trap")
            .expect("get");
        assert_eq!(seen, Some(b"1".to_vec()));
        kv.set("b", b"2").expect("set");
        let got = store::HostBucket::get(&mut state, borrow(&bucket), "b".to_owned())
            .expect("no trap")
            .expect("get");
        assert_eq!(got, Some(b"2".to_vec()));
        assert!(
            store::HostBucket::exists(&mut state, borrow(&bucket), "b".to_owned())
                .expect("no trap")
                .expect("exists")
        );
        let page = store::HostBucket::list_keys(&mut state, borrow(&bucket), None)
            .expect("no trap")
            .expect("list");
        assert_eq!(
            (page.keys, page.cursor),
            (vec!["a".to_owned(), "b".to_owned()], None)
        );
        assert!(matches!(
            store::HostBucket::list_keys(&mut state, borrow(&bucket), Some("x".to_owned()))
                .expect("no trap"),
            Err(store::Error::Other(_))
        ));
        store::HostBucket::delete(&mut state, borrow(&bucket), "a".to_owned())
            .expect("no trap")
            .expect("delete");
        assert_eq!(kv.get("a").expect("get"), None);
        store::HostBucket::drop(&mut state, bucket).expect("drop");
    }

    #[test]
    fn a_stale_swap_fails_with_a_fresh_cas_handle() {
        let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
        kv.set("cfg", b"v1").expect("set");
        let mut state = host_state(kv.clone());
        let bucket = store::Host::open(&mut state, "default".to_owned())
            .expect("no trap")
            .expect("default opens");
        let first = atomics::HostCas::new(&mut state, borrow(&bucket), "cfg".to_owned())
            .expect("no trap")
            .expect("new");
        let second = atomics::HostCas::new(&mut state, borrow(&bucket), "cfg".to_owned())
            .expect("no trap")
            .expect("new");
        let current = atomics::HostCas::current(&mut state, Resource::new_borrow(second.rep()))
            .expect("no trap")
            .expect("current");
        assert_eq!(current, Some(b"v1".to_vec()));
        atomics::Host::swap(&mut state, first, b"v2".to_vec())
            .expect("no trap")
            .expect("the first swap wins");
        let fresh = match atomics::Host::swap(&mut state, second, b"v0".to_vec()).expect("no trap")
        {
            Err(atomics::CasError::CasFailed(fresh)) => fresh,
            Ok(()) => panic!("a swap from a stale read succeeded"),
            Err(atomics::CasError::StoreError(e)) => panic!("store error: {e:?}"),
        };
        assert_eq!(kv.get("cfg").expect("get"), Some(b"v2".to_vec()));
        let current = atomics::HostCas::current(&mut state, Resource::new_borrow(fresh.rep()))
            .expect("no trap")
            .expect("current");
        assert_eq!(current, Some(b"v2".to_vec()));
        atomics::Host::swap(&mut state, fresh, b"v3".to_vec())
            .expect("no trap")
            .expect("a swap from the fresh handle wins");
        assert_eq!(kv.get("cfg").expect("get"), Some(b"v3".to_vec()));
        assert_eq!(
            atomics::Host::increment(&mut state, borrow(&bucket), "n".to_owned(), 3)
                .expect("no trap")
                .expect("increment"),
            3
        );
        store::HostBucket::drop(&mut state, bucket).expect("drop");
    }
}
