//! The key-value store behind `fermyon:spin/key-value`: in memory, or in a
//! SQLite file so that a restarted edge keeps its last applied config.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;

/// A key-value store as Spin's default store behaves: whole values, one key
/// per write, each write atomic.
pub trait KvBackend: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Sets `key` to `value`, replacing what was there.
    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()>;
    /// Removes `key`; not an error when absent.
    fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// All keys.
    fn keys(&self) -> anyhow::Result<Vec<String>>;
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
