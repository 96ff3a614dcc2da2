//! The two databases the store runs on, behind one small interface: SQLite
//! (a file, the default) and PostgreSQL (`postgres://` URLs, for replicas).
//!
//! The store's statements are written once, in the SQL both accept, with
//! `?N` placeholders; PostgreSQL gets them as `$N`. Parameters and columns
//! are [`Value`]s: integers, reals, text, bytes or NULL. A PostgreSQL
//! parameter takes the type the server infers for it (a BIGINT column, a
//! TEXT column), so one statement serves both.
//!
//! The `postgres` client blocks on a runtime of its own. Inside the service's
//! (multi-thread) runtime its calls run in [`tokio::task::block_in_place`],
//! as SQLite's calls block the thread too.

use std::cell::Cell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

/// A store error: the database's own, or a column that is not what the
/// store wrote there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed, or its connection did.
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// A column that cannot be read as what the store expects there.
    #[error("column {column}: {message}")]
    Column {
        /// Its index in the row.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A statement expected a row and got none.
    #[error("no row")]
    NoRow,
    /// A value the store could not encode (a plan document to JSON).
    #[error("encoding a value: {0}")]
    Encode(String),
    /// The PostgreSQL connection broke inside a transaction (it is made
    /// again for the next one).
    #[error("the PostgreSQL connection broke inside a transaction")]
    Broken,
    /// A leader-made write by a replica that does not hold the lease (or
    /// holds an older token than the row): nothing was written.
    #[error("this replica does not hold the leader lease (its token {ours}, the lease's {stored})")]
    Fenced {
        /// The token this replica wrote with (0: none).
        ours: i64,
        /// The lease's token.
        stored: i64,
    },
    /// The thread a PostgreSQL call ran on panicked.
    #[error("a PostgreSQL call panicked")]
    Runtime,
    /// The TLS settings in a PostgreSQL URL cannot be used.
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
}

impl Error {
    /// A column that cannot be read as `what`.
    pub fn column(column: usize, message: impl std::fmt::Display) -> Error {
        Error::Column {
            column,
            message: message.to_string(),
        }
    }
}

/// A store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parameter or a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A real number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}
impl From<&&str> for Value {
    fn from(v: &&str) -> Value {
        Value::Text((*v).to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}
impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Value {
        Value::Blob(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// Parameters for a statement: `params![a, b]`.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($v)),*][..]
    };
}
pub(crate) use params;

/// A type a column reads as.
pub trait FromValue: Sized {
    /// `value`, from column `column`.
    fn from_value(value: &Value, column: usize) -> Result<Self>;
}

impl FromValue for i64 {
    fn from_value(value: &Value, column: usize) -> Result<i64> {
        match value {
            Value::Int(v) => Ok(*v),
            other => Err(Error::column(
                column,
                format!("{other:?} is not an integer"),
            )),
        }
    }
}
impl FromValue for u32 {
    fn from_value(value: &Value, column: usize) -> Result<u32> {
        let v = i64::from_value(value, column)?;
        u32::try_from(v).map_err(|_| Error::column(column, format!("{v} is out of range")))
    }
}
impl FromValue for f64 {
    fn from_value(value: &Value, column: usize) -> Result<f64> {
        match value {
            Value::Real(v) => Ok(*v),
            Value::Int(v) => Ok(*v as f64),
            other => Err(Error::column(column, format!("{other:?} is not a number"))),
        }
    }
}
impl FromValue for String {
    fn from_value(value: &Value, column: usize) -> Result<String> {
        match value {
            Value::Text(v) => Ok(v.clone()),
            other => Err(Error::column(column, format!("{other:?} is not text"))),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(value: &Value, column: usize) -> Result<Vec<u8>> {
        match value {
            Value::Blob(v) => Ok(v.clone()),
            other => Err(Error::column(column, format!("{other:?} is not bytes"))),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value, column: usize) -> Result<Option<T>> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}

/// One row of a result.
#[derive(Debug)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i` as `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let value = self
            .0
            .get(i)
            .ok_or_else(|| Error::column(i, "no such column"))?;
        T::from_value(value, i)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let mismatch = || -> Box<dyn StdError + Sync + Send> {
            format!("cannot send {self:?} as PostgreSQL {ty}").into()
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Value::Text(v) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    // PostgreSQL text cannot hold NUL (SQLite's can): a
                    // hook's output or an edge's error may carry one.
                    if v.contains('\0') {
                        v.replace('\0', "\u{fffd}")
                            .as_str()
                            .to_sql(&Type::TEXT, out)
                    } else {
                        v.as_str().to_sql(&Type::TEXT, out)
                    }
                }
                _ => Err(mismatch()),
            },
            Value::Blob(v) => match *ty {
                Type::BYTEA => v.as_slice().to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Column `i` of a PostgreSQL row as a [`Value`].
fn pg_value(row: &postgres::Row, i: usize) -> Result<Value> {
    let ty = row.columns()[i].type_().clone();
    let value = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|v| Value::Real(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        Type::VOID => None,
        other => {
            return Err(Error::column(
                i,
                format!("unexpected PostgreSQL type {other}"),
            ));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

/// `?N` placeholders as PostgreSQL's `$N` (the store's SQL has no `?` in
/// its string literals).
fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}

/// Runs `f`, which blocks on PostgreSQL, where blocking is allowed: in
/// place outside any runtime, in [`tokio::task::block_in_place`] on a
/// multi-thread one, on a thread of its own on a current-thread one.
fn blocking<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        Ok(_) => std::thread::scope(|s| s.spawn(f).join()).unwrap_or(Err(Error::Runtime)),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its value whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A PostgreSQL connection, made again when it broke (a server restart, a
/// failover), with its prepared statements.
pub struct PgConn {
    url: String,
    client: Mutex<Option<postgres::Client>>,
    statements: Mutex<HashMap<String, postgres::Statement>>,
    /// Inside a transaction: a broken connection is then an error, not a
    /// reason to connect again halfway through.
    in_tx: AtomicBool,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").finish_non_exhaustive()
    }
}

impl Drop for PgConn {
    /// The client says goodbye to the server, which blocks: where blocking
    /// is allowed, or on a thread of its own.
    fn drop(&mut self) {
        let Some(client) = lock(&self.client).take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Err(_) => drop(client),
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| drop(client));
            }
            Ok(_) => {
                let _ = std::thread::spawn(move || drop(client)).join();
            }
        }
    }
}

/// `url` without the TLS parameters the client library does not read
/// (`sslrootcert`; `sslmode=verify-ca` and `verify-full` become `require`,
/// since every certificate is verified anyway), and the `sslrootcert` path.
fn tls_settings(url: &str) -> Result<(String, Option<String>)> {
    // The query starts after the user information, which the client
    // library takes to end at the first '@': a password may hold a '?'.
    let after_userinfo = url.find('@').map_or(0, |at| at + 1);
    let Some(mark) = url[after_userinfo..].find('?').map(|q| after_userinfo + q) else {
        return Ok((url.to_owned(), None));
    };
    let (base, query) = (&url[..mark], &url[mark + 1..]);
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            // libpq's name for the system's roots: the Mozilla roots here.
            Some(("sslrootcert", "system")) => root_cert = None,
            Some(("sslrootcert", path)) => {
                let path = percent_decode(path)
                    .ok_or_else(|| Error::Tls("sslrootcert is not a valid path".to_owned()))?;
                root_cert = Some(path);
            }
            Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, root_cert))
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The TLS client for PostgreSQL connections: rustls, trusting the CA
/// certificates in the PEM file `root_cert`, or the Mozilla roots.
fn tls_connector(root_cert: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
                .map_err(|e| Error::Tls(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Tls(format!(
                    "sslrootcert {path} holds no usable CA certificate"
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PgConn {
    /// Connects to `url`.
    pub fn connect(url: &str) -> Result<PgConn> {
        let conn = PgConn {
            url: url.to_owned(),
            client: Mutex::new(None),
            statements: Mutex::new(HashMap::new()),
            in_tx: AtomicBool::new(false),
        };
        blocking(|| conn.client().map(drop))?;
        Ok(conn)
    }

    /// The live client, connecting when there is none or it broke.
    fn client(&self) -> Result<MutexGuard<'_, Option<postgres::Client>>> {
        let mut slot = lock(&self.client);
        let broken = slot.as_ref().is_none_or(postgres::Client::is_closed);
        if broken {
            if self.in_tx.load(Ordering::SeqCst) && slot.is_some() {
                return Err(Error::Broken);
            }
            lock(&self.statements).clear();
            *slot = Some(Self::open(&self.url)?);
        }
        Ok(slot)
    }

    /// A new session with the store's limits. A replica frozen or cut off
    /// inside a transaction must not hold the writers' lock for long: the
    /// server ends a session idle in a transaction after 2 s (its
    /// transactions are milliseconds long), TCP keepalives and a user
    /// timeout notice a peer that vanished, and no statement or lock wait
    /// runs unbounded.
    ///
    /// TLS follows the URL's `sslmode`: `disable` never uses it; `prefer`
    /// (the default) uses it when the server offers it; `require`,
    /// `verify-ca` and `verify-full` refuse a server that does not. Whenever
    /// TLS is used the server's certificate is verified, chain and host
    /// name, against the CA certificates in `sslrootcert` (a PEM file, as
    /// libpq names it) or, without it, the Mozilla roots.
    fn open(url: &str) -> Result<postgres::Client> {
        let (url, root_cert) = tls_settings(url)?;
        let mut config: postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("rollout");
        }
        config
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(5))
            .tcp_user_timeout(std::time::Duration::from_secs(10));
        let mut client = match config.get_ssl_mode() {
            postgres::config::SslMode::Disable => config.connect(postgres::NoTls)?,
            _ => config
                .connect(tls_connector(root_cert.as_deref())?)
                .map_err(|e| {
                    let mut text = e.to_string();
                    let mut source = StdError::source(&e);
                    while let Some(cause) = source {
                        text = format!("{text}: {cause}");
                        source = cause.source();
                    }
                    if text.contains("TLS") {
                        Error::Tls(format!(
                            "{text}: the server's certificate must verify (chain and host name) \
                             against the CA in sslrootcert=/path/ca.pem, or the public roots \
                             without it; sslmode=disable connects in the clear"
                        ))
                    } else {
                        Error::Postgres(e)
                    }
                })?,
        };
        client.batch_execute(
            "SET idle_in_transaction_session_timeout = '2s';
             SET lock_timeout = '10s';
             SET statement_timeout = '30s';",
        )?;
        Ok(client)
    }

    fn statement(&self, client: &mut postgres::Client, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = lock(&self.statements).get(sql) {
            return Ok(s.clone());
        }
        let prepared = client.prepare(&pg_sql(sql))?;
        lock(&self.statements).insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize> {
        blocking(|| {
            let mut slot = self.client()?;
            let client = slot.as_mut().ok_or(Error::Broken)?;
            let stmt = self.statement(client, sql)?;
            Ok(client.execute(&stmt, &Self::refs(params))? as usize)
        })
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        blocking(|| {
            let mut slot = self.client()?;
            let client = slot.as_mut().ok_or(Error::Broken)?;
            let stmt = self.statement(client, sql)?;
            let rows = client.query(&stmt, &Self::refs(params))?;
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| pg_value(r, i))
                        .collect::<Result<_>>()
                        .map(Row)
                })
                .collect()
        })
    }

    fn batch(&self, sql: &str) -> Result<()> {
        blocking(|| {
            let mut slot = self.client()?;
            let client = slot.as_mut().ok_or(Error::Broken)?;
            Ok(client.batch_execute(sql)?)
        })
    }
}

/// A connection to either database.
#[derive(Debug)]
pub enum Conn {
    /// A SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL database.
    Pg(Box<PgConn>),
}

/// Where statements run: a connection, or a transaction on one.
pub trait Sql {
    /// The connection.
    fn conn(&self) -> &Conn;

    /// Runs a statement; the rows it changed.
    fn execute(&self, sql: &str, params: &[Value]) -> Result<usize> {
        match self.conn() {
            Conn::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
            Conn::Pg(c) => c.execute(sql, params),
        }
    }

    /// Every row of a query, each through `f`.
    fn query_map<T>(
        &self,
        sql: &str,
        params: &[Value],
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self.conn() {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let row = Row((0..columns)
                        .map(|i| sqlite_value(r.get_ref(i)?))
                        .collect::<rusqlite::Result<_>>()?);
                    out.push(f(&row)?);
                }
                Ok(out)
            }
            Conn::Pg(c) => c.query(sql, params)?.iter().map(f).collect(),
        }
    }

    /// The first row of a query through `f`, if there is one.
    fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        let mut first = self.query_map(sql, params, |r| Ok(Some(r.0.clone())))?;
        match first.first_mut().and_then(Option::take) {
            Some(values) => (f.take().expect("once"))(&Row(values)).map(Some),
            None => Ok(None),
        }
    }

    /// The first row of a query through `f`; [`Error::NoRow`] when none.
    fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, f)?.ok_or(Error::NoRow)
    }

    /// Runs statements with no parameters (a schema).
    fn batch(&self, sql: &str) -> Result<()> {
        match self.conn() {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(c) => c.batch(sql),
        }
    }
}

fn sqlite_value(v: ValueRef<'_>) -> rusqlite::Result<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

impl Sql for Conn {
    fn conn(&self) -> &Conn {
        self
    }
}

/// What a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// It may write: writers take turns, across every replica on one
    /// database, so what one read is still true when it commits.
    Write,
}

/// The key of the transaction-scoped advisory lock writers on PostgreSQL
/// take in turn (SQLite's `BEGIN IMMEDIATE` is the same rule for a file).
const WRITE_LOCK: i64 = 0x0072_6f6c_6c6f_7574; // "rollout"

/// An open transaction on `conn`; rolled back unless [`Tx::commit`]ted.
#[derive(Debug)]
pub struct RawTx<'c> {
    conn: &'c Conn,
    open: Cell<bool>,
}

impl<'c> RawTx<'c> {
    /// Begins a transaction of `kind`.
    pub fn begin(conn: &'c Conn, kind: TxKind) -> Result<RawTx<'c>> {
        match (conn, kind) {
            (Conn::Sqlite(c), TxKind::Write) => c.execute_batch("BEGIN IMMEDIATE")?,
            (Conn::Pg(c), TxKind::Write) => {
                // Read committed, whatever the database's default: the
                // lock is taken first, then every read sees what the last
                // writer committed (the fence and the head version above all).
                c.batch("BEGIN ISOLATION LEVEL READ COMMITTED")?;
                c.in_tx.store(true, Ordering::SeqCst);
                let tx = RawTx {
                    conn,
                    open: Cell::new(true),
                };
                tx.execute("SELECT pg_advisory_xact_lock(?1)", params![WRITE_LOCK])?;
                return Ok(tx);
            }
        }
        Ok(RawTx {
            conn,
            open: Cell::new(true),
        })
    }

    /// Commits it.
    pub fn commit(self) -> Result<()> {
        self.open.set(false);
        let done = self.batch("COMMIT");
        match self.conn {
            Conn::Pg(c) => c.in_tx.store(false, Ordering::SeqCst),
            // A COMMIT SQLite refused (busy, disk full) can leave the
            // transaction open on the one shared connection: end it.
            Conn::Sqlite(c) if done.is_err() && !c.is_autocommit() => {
                let _ = c.execute_batch("ROLLBACK");
            }
            Conn::Sqlite(_) => {}
        }
        done
    }
}

impl Drop for RawTx<'_> {
    fn drop(&mut self) {
        if self.open.get() {
            let _ = self.batch("ROLLBACK");
            if let Conn::Pg(c) = self.conn {
                c.in_tx.store(false, Ordering::SeqCst);
            }
        }
    }
}

impl Sql for RawTx<'_> {
    fn conn(&self) -> &Conn {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c < ?12"),
            "SELECT a FROM t WHERE b = $1 AND c < $12"
        );
    }

    #[test]
    fn columns_read_as_what_was_written_and_refuse_the_rest() {
        let row = Row(vec![
            Value::Int(7),
            Value::Null,
            Value::Text("x".into()),
            Value::Int(-1),
        ]);
        assert_eq!(row.get::<i64>(0).expect("int"), 7);
        assert_eq!(row.get::<Option<String>>(1).expect("null"), None);
        assert_eq!(row.get::<String>(2).expect("text"), "x");
        assert!(row.get::<u32>(3).is_err(), "-1 is not a u32");
        assert!(row.get::<i64>(2).is_err(), "text is not an integer");
        assert!(row.get::<i64>(9).is_err(), "no column 9");
    }

    #[test]
    fn tls_parameters_the_client_library_lacks_are_taken_out_of_the_url() {
        let (url, root) = tls_settings(
            "postgres://u:p@db:5432/r?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .expect("settings");
        assert_eq!(
            url,
            "postgres://u:p@db:5432/r?sslmode=require&connect_timeout=3"
        );
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (url, root) = tls_settings("postgres://db/r").expect("settings");
        assert_eq!((url.as_str(), root), ("postgres://db/r", None));
        let (url, _) = tls_settings("postgres://db/r?sslrootcert=/ca.pem").expect("settings");
        assert_eq!(url, "postgres://db/r");
        // A '?' in the password is not the query.
        let (url, root) =
            tls_settings("postgres://u:pa?ss@db/r?sslrootcert=/ca.pem&sslmode=verify-ca")
                .expect("settings");
        assert_eq!(url, "postgres://u:pa?ss@db/r?sslmode=require");
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (_, root) = tls_settings("postgres://db/r?sslrootcert=system").expect("settings");
        assert_eq!(root, None, "the system's roots");
        assert!(tls_settings("postgres://db/r?sslrootcert=%ZZ").is_err());
        let missing = tls_connector(Some("/nonexistent/ca.pem")).map(|_| ());
        assert!(
            matches!(&missing, Err(Error::Tls(e)) if e.contains("/nonexistent/ca.pem")),
            "{missing:?}"
        );
        assert!(tls_connector(None).is_ok(), "the Mozilla roots");
    }
}
