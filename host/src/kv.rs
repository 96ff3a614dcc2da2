//! The key-value store behind `fermyon:spin/key-value` and
//! `wasi:keyvalue/store` (both see the one `default` store): in memory, or in
//! a SQLite file so that a restarted edge keeps its last applied config.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;

/// A key-value store as Spin's default store behaves: whole values, one key
/// per write, each write atomic; plus a true compare-and-swap, which
/// `wasi:keyvalue/atomics` is built on.
pub trait KvBackend: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Sets `key` to `value`, replacing what was there.
    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()>;
    /// Removes `key`; not an error when absent.
    fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// All keys.
    fn keys(&self) -> anyhow::Result<Vec<String>>;
    /// Sets `key` to `value` only if it now holds `expected` (`None`: only
    /// if absent), as one atomic step: no write by anyone can land between
    /// the comparison and the write.
    ///
    /// `Ok(Ok(()))`: swapped. `Ok(Err(current))`: `key` did not hold
    /// `expected`; nothing was written and `current` is what it holds now.
    /// `Err`: the store itself failed.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> anyhow::Result<Result<(), Option<Vec<u8>>>>;
}

/// A store that lives as long as the process.
#[derive(Debug, Default)]
pub struct MemoryKv(Mutex<BTreeMap<String, Vec<u8>>>);

impl MemoryKv {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding this lock cannot leave the map half-written.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }
    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.map().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.map().remove(key);
        Ok(())
    }
    fn keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.map().keys().cloned().collect())
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> anyhow::Result<Result<(), Option<Vec<u8>>>> {
        // One lock for the comparison and the write.
        let mut map = self.map();
        let current = map.get(key).map(Vec::as_slice);
        if current != expected {
            return Ok(Err(current.map(<[u8]>::to_vec)));
        }
        map.insert(key.to_owned(), value.to_vec());
        Ok(Ok(()))
    }
}

/// A store in one SQLite file (WAL), created on first use.
#[derive(Debug)]
pub struct SqliteKv(Mutex<rusqlite::Connection>);

impl SqliteKv {
    /// Opens or creates the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<SqliteKv> {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening key-value store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
            [],
        )
        .with_context(|| format!("initialising key-value store {}", path.display()))?;
        Ok(SqliteKv(Mutex::new(conn)))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KvBackend for SqliteKv {
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
        let mut rows = stmt.query([key])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }
    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.conn()
            .prepare_cached("INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
            .execute(rusqlite::params![key, value])?;
        Ok(())
    }
    fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([key])?;
        Ok(())
    }
    fn keys(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT key FROM kv ORDER BY key")?;
        let keys = stmt
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> anyhow::Result<Result<(), Option<Vec<u8>>>> {
        let mut conn = self.conn();
        // IMMEDIATE takes SQLite's write lock before the read, so another
        // connection to the same file (another process) cannot write between
        // the comparison and the write either; the mutex covers this one.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<Vec<u8>> = {
            let mut stmt = tx.prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
            let mut rows = stmt.query([key])?;
            match rows.next()? {
                Some(row) => Some(row.get(0)?),
                None => None,
            }
        };
        if current.as_deref() != expected {
            // Dropping the transaction rolls it back: nothing was written.
            return Ok(Err(current));
        }
        tx.prepare_cached("INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
            .execute(rusqlite::params![key, value])?;
        tx.commit()?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(kv: &dyn KvBackend) {
        assert_eq!(kv.get("a").expect("get"), None);
        kv.set("a", b"1").expect("set");
        kv.set("a", b"2").expect("overwrite");
        kv.set("b", b"").expect("empty value");
        assert_eq!(kv.get("a").expect("get"), Some(b"2".to_vec()));
        assert_eq!(kv.keys().expect("keys"), ["a", "b"]);
        kv.delete("a").expect("delete");
        kv.delete("missing")
            .expect("deleting a missing key is fine");
        assert_eq!(kv.get("a").expect("get"), None);
    }

    /// A CAS made from a stale read fails, writes nothing and hands back
    /// what the key holds now; a CAS from a fresh read succeeds.
    fn stale_cas_fails(kv: &dyn KvBackend) {
        // Absent: only `expected = None` may create the key.
        assert_eq!(
            kv.compare_and_swap("cfg", Some(b"v0"), b"v1").expect("cas"),
            Err(None)
        );
        assert_eq!(kv.get("cfg").expect("get"), None);
        assert_eq!(
            kv.compare_and_swap("cfg", None, b"v1").expect("cas"),
            Ok(())
        );
        // Two writers read v1; the first swaps to v2, the second is stale.
        let read = kv.get("cfg").expect("get");
        assert_eq!(read.as_deref(), Some(&b"v1"[..]));
        assert_eq!(
            kv.compare_and_swap("cfg", read.as_deref(), b"v2")
                .expect("cas"),
            Ok(())
        );
        assert_eq!(
            kv.compare_and_swap("cfg", read.as_deref(), b"v0")
                .expect("cas"),
            Err(Some(b"v2".to_vec()))
        );
        assert_eq!(
            kv.compare_and_swap("cfg", None, b"v0").expect("cas"),
            Err(Some(b"v2".to_vec()))
        );
        assert_eq!(kv.get("cfg").expect("get"), Some(b"v2".to_vec()));
        // Retrying from what the failure returned succeeds; an empty value
        // is a value, not absence.
        assert_eq!(
            kv.compare_and_swap("cfg", Some(b"v2"), b"").expect("cas"),
            Ok(())
        );
        assert_eq!(
            kv.compare_and_swap("cfg", None, b"v3").expect("cas"),
            Err(Some(Vec::new()))
        );
        assert_eq!(
            kv.compare_and_swap("cfg", Some(b""), b"v3").expect("cas"),
            Ok(())
        );
        assert_eq!(kv.get("cfg").expect("get"), Some(b"v3".to_vec()));
    }

    const THREADS: u64 = 8;
    const INCREMENTS: u64 = 500;

    /// `THREADS` threads (thread i on `handles[i % len]`) each add 1 to a
    /// decimal counter `INCREMENTS` times by read and compare-and-swap,
    /// retrying from the value a failed swap returns: no increment may be
    /// lost.
    fn no_lost_updates(handles: &[&dyn KvBackend]) {
        let retries = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for i in 0..THREADS {
                let kv = handles[i as usize % handles.len()];
                let retries = &retries;
                s.spawn(move || {
                    for _ in 0..INCREMENTS {
                        let mut seen = kv.get("counter").expect("get");
                        loop {
                            let n: u64 = seen.as_deref().map_or(0, |v| {
                                std::str::from_utf8(v)
                                    .expect("utf-8")
                                    .parse()
                                    .expect("decimal")
                            });
                            let next = (n + 1).to_string();
                            match kv
                                .compare_and_swap("counter", seen.as_deref(), next.as_bytes())
                                .expect("cas")
                            {
                                Ok(()) => break,
                                Err(current) => {
                                    retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    seen = current;
                                }
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(
            handles[0].get("counter").expect("get"),
            Some((THREADS * INCREMENTS).to_string().into_bytes()),
            "lost updates ({} retries)",
            retries.into_inner()
        );
    }

    fn temp_sqlite(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("rollout-kv-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("kv.sqlite");
        let _ = std::fs::remove_file(&path);
        (dir, path)
    }

    #[test]
    fn memory_store_refuses_a_stale_cas() {
        stale_cas_fails(&MemoryKv::default());
    }

    #[test]
    fn sqlite_store_refuses_a_stale_cas() {
        let (dir, path) = temp_sqlite("stale-cas");
        stale_cas_fails(&SqliteKv::open(&path).expect("open"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memory_store_cas_loses_no_concurrent_increment() {
        no_lost_updates(&[&MemoryKv::default()]);
    }

    #[test]
    fn sqlite_store_cas_loses_no_concurrent_increment() {
        let (dir, path) = temp_sqlite("cas-counter");
        no_lost_updates(&[&SqliteKv::open(&path).expect("open")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sqlite_cas_holds_across_connections_to_one_file() {
        // Two handles on one file (two edges sharing a store, or a restart
        // racing the old process): the IMMEDIATE transaction, not only the
        // mutex, keeps the comparison and the write together.
        let (dir, path) = temp_sqlite("cas-two-conns");
        let a = SqliteKv::open(&path).expect("open a");
        let b = SqliteKv::open(&path).expect("open b");
        no_lost_updates(&[&a, &b]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memory_store_behaves_like_spins() {
        exercise(&MemoryKv::default());
    }

    #[test]
    fn sqlite_store_behaves_like_spins_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("rollout-kv-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("kv.sqlite");
        let _ = std::fs::remove_file(&path);
        exercise(&SqliteKv::open(&path).expect("open"));
        SqliteKv::open(&path)
            .expect("open")
            .set("kept", b"yes")
            .expect("set");
        assert_eq!(
            SqliteKv::open(&path)
                .expect("reopen")
                .get("kept")
                .expect("get"),
            Some(b"yes".to_vec())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
