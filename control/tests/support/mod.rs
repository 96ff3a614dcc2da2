//! Harness for the control end-to-end tests: the real `rollout` binary as a
//! child process, edges (the built component in rollout-host) with SQLite
//! stores, origins and a gate that can delay or cut an edge off, all on
//! loopback.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test uses a different part of the harness"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rollout_host::{AllowList, Edge, RunningEdge, SqliteKv};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

pub use rollout_tests::{Origin, arm_for, client, config, secret};

pub const ADMIN: &str = "admin-token-0123";
pub const DEPLOY: &str = "deploy-token-4567";
pub const READ: &str = "read-token-89ab";

/// The `rollout` binary under test.
pub fn rollout_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rollout"))
}

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rollout-control-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rollout serve` as a child process; killed on drop.
#[derive(Debug)]
pub struct Control {
    child: tokio::process::Child,
    pub url: String,
    db: PathBuf,
    dir: PathBuf,
    listen: SocketAddr,
}

impl Control {
    /// Starts a control service with its store in `dir`, on any free port.
    pub async fn start(dir: &Path) -> Control {
        Control::start_with(dir, &[]).await
    }

    /// The same, with more `rollout serve` arguments.
    pub async fn start_with(dir: &Path, extra: &[&str]) -> Control {
        std::fs::write(dir.join("control.key"), secret().to_text()).expect("key file");
        std::fs::write(
            dir.join("tokens"),
            format!("admin ops {ADMIN}\ndeploy ci {DEPLOY}\nread viewer {READ}\n"),
        )
        .expect("token file");
        std::fs::write(
            dir.join("serve-args"),
            extra.iter().map(|a| format!("{a}\n")).collect::<String>(),
        )
        .expect("args file");
        Control::spawn(dir, "127.0.0.1:0".parse().expect("addr")).await
    }

    async fn spawn(dir: &Path, listen: SocketAddr) -> Control {
        let extra = std::fs::read_to_string(dir.join("serve-args")).unwrap_or_default();
        let db = store_in(dir);
        let mut child = tokio::process::Command::new(rollout_bin())
            .arg("serve")
            .arg("--db")
            .arg(&db)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--key")
            .arg(dir.join("control.key"))
            .arg("--tokens")
            .arg(dir.join("tokens"))
            .args(["--reconcile-every", "200ms", "--push-timeout", "1s"])
            // A restarted service waits out its old lease: keep that short.
            .args(["--lease-ttl", "1s"])
            .args(["--unreachable-after", "60s", "--verify-every", "1s"])
            .args(extra.lines())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("rollout serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("control service prints its address within 30 s")
            .expect("read stdout")
            .expect("control service exited before listening");
        let url = line
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let listen = url
            .trim_start_matches("http://")
            .parse()
            .expect("listen address");
        Control {
            child,
            url,
            db,
            dir: dir.to_owned(),
            listen,
        }
    }

    /// The SQLite file (on PostgreSQL: the database URL, see [`on_postgres`]).
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Sends signal `name` (`STOP`, `CONT`, ...) to the service.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the service runs");
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {name} {pid}");
    }

    /// Polls plan `id` until `check` holds (or panics after `limit`).
    pub async fn plan_until(
        &self,
        id: i64,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let p = self.get(&format!("/v1/plans/{id}")).await;
            if check(&p) {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "plan {id} after {limit:?}: {p}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The versions `plan:<id>` committed, oldest first, as (version,
    /// route web's weight, reason).
    pub async fn plan_versions(&self, id: i64) -> Vec<(u64, f64, String)> {
        let history = self.get("/v1/versions?limit=1000").await;
        let mut out = Vec::new();
        for v in history["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .rev()
        {
            if v["actor"] != format!("plan:{id}") {
                continue;
            }
            let n = v["version"].as_u64().expect("version");
            let full = self.get(&format!("/v1/versions/{n}")).await;
            let weight = full["config"]["routes"][0]["new_weight"]
                .as_f64()
                .expect("weight");
            out.push((
                n,
                weight,
                v["reason"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        out
    }

    /// SIGTERM, as a service manager's stop does; waits for it to exit.
    pub async fn terminate(&mut self) {
        self.signal("TERM");
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the service exits within 15 s of SIGTERM")
            .expect("wait");
        assert!(status.success(), "the service exited {status} on SIGTERM");
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// Starts it again on the same store and address.
    pub async fn restart(&mut self) {
        let _ = self.child.kill().await;
        *self = Control::spawn(&self.dir, self.listen).await;
    }

    /// Runs the CLI against this service with `token`.
    pub async fn cli(&self, token: &str, args: &[&str]) -> Run {
        cli(&self.url, token, args).await
    }

    /// The status as JSON.
    pub async fn status(&self) -> Value {
        let run = self.cli(READ, &["status", "--output", "json"]).await;
        assert_eq!(run.code, 0, "status failed: {}", run.stderr);
        run.json()
    }

    /// GETs an API path with the read token.
    pub async fn get(&self, path: &str) -> Value {
        client()
            .get(format!("{}{path}", self.url))
            .bearer_auth(READ)
            .send()
            .await
            .expect("api reachable")
            .json()
            .await
            .expect("json")
    }
}

/// What a CLI run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} / {:?}", self.stdout, self.stderr))
    }
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "rollout failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `rollout ARGS` with `ROLLOUT_URL` and `ROLLOUT_TOKEN` set, stdin empty.
pub async fn cli(url: &str, token: &str, args: &[&str]) -> Run {
    cli_stdin(url, token, args, b"").await
}

/// Runs `rollout ARGS` with `input` on stdin.
pub async fn cli_stdin(url: &str, token: &str, args: &[&str], input: &[u8]) -> Run {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(rollout_bin())
        .args(args)
        .env("ROLLOUT_URL", url)
        .env("ROLLOUT_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rollout runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // The CLI may stop reading early (at its limit): a broken pipe is its answer.
    let _ = stdin.write_all(input).await;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("rollout finishes within 60 s")
        .expect("rollout runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An edge with its own SQLite store, trusting `public_key` (the test key by default).
pub async fn edge(
    dir: &Path,
    name: &str,
    old: &Origin,
    new: &Origin,
    public_key: Option<String>,
) -> RunningEdge {
    edge_between(dir, name, &old.url(), &new.url(), public_key, None).await
}

/// An edge with its own SQLite store in front of origins `old` and `new`,
/// with metrics when given.
pub async fn edge_between(
    dir: &Path,
    name: &str,
    old: &str,
    new: &str,
    public_key: Option<String>,
    metrics: Option<Arc<rollout_host::Metrics>>,
) -> RunningEdge {
    let kv = SqliteKv::open(&dir.join(format!("{name}.sqlite"))).expect("edge store");
    let variables = [
        (
            "public_key".to_owned(),
            public_key.unwrap_or_else(|| secret().public_key().to_string()),
        ),
        ("old_origin".to_owned(), old.to_owned()),
    ]
    .into();
    let edge = Edge {
        kv: Arc::new(kv),
        variables,
        allow: AllowList::new(&[old.to_owned(), new.to_owned()]).expect("allow list"),
    };
    RunningEdge::start_with_metrics(
        rollout_tests::runtime(),
        edge,
        "127.0.0.1:0".parse().expect("addr"),
        metrics,
    )
    .await
    .expect("edge starts")
}

/// An edge's base URL.
pub fn url(e: &RunningEdge) -> String {
    format!("http://{}", e.addr)
}

/// Two origins and a scratch directory: where every test starts.
#[derive(Debug)]
pub struct Rig {
    pub scratch: Scratch,
    pub old: Origin,
    pub new: Origin,
}

impl Rig {
    pub async fn start(name: &str) -> Rig {
        Rig {
            scratch: Scratch::new(name),
            old: Origin::start("old").await,
            new: Origin::start("new").await,
        }
    }

    /// An edge in front of both origins, trusting the test key, with its own store.
    pub async fn edge(&self, name: &str) -> RunningEdge {
        edge(&self.scratch.0, name, &self.old, &self.new, None).await
    }

    /// A config file with route web at `weight` %; its path.
    pub fn config(&self, name: &str, weight: f64) -> String {
        config_file(&self.scratch.0, name, &self.old, &self.new, weight)
    }

    /// An edge behind a [`Gate`], registered by the gate's address with a
    /// new control service, holding version 1 (10 %).
    pub async fn gated(&self, name: &str) -> (RunningEdge, Gate, Control) {
        let edge = self.edge(name).await;
        let gate = Gate::start(edge.addr).await;
        let control = self.control(&[gate.url()]).await;
        control.push_wait(&self.config("v1.json", 10.0)).await;
        (edge, gate, control)
    }

    /// A control service with its store in the scratch directory and
    /// `edges` registered by the admin token.
    pub async fn control(&self, edges: &[String]) -> Control {
        let control = Control::start(&self.scratch.0).await;
        for e in edges {
            control.cli(ADMIN, &["edges", "add", e]).await.ok();
        }
        control
    }
}

impl Control {
    /// `rollout push FILE --wait` with the deploy token, which must succeed;
    /// its JSON output.
    pub async fn push_wait(&self, file: &str) -> Value {
        let args = [
            "push",
            file,
            "--wait",
            "--timeout",
            "20s",
            "--output",
            "json",
        ];
        self.cli(DEPLOY, &args).await.ok().json()
    }

    /// `rollout set-weight web PERCENT --wait` with the deploy token, which
    /// must succeed.
    pub async fn set_weight_wait(&self, percent: &str) -> Run {
        let args = [
            "set-weight",
            "web",
            percent,
            "--wait",
            "--timeout",
            "20s",
            "--output",
            "json",
        ];
        self.cli(DEPLOY, &args).await.ok()
    }

    /// `rollout status --wait`, which must succeed; its JSON output.
    pub async fn converged(&self) -> Value {
        let args = ["status", "--wait", "--timeout", "20s", "--output", "json"];
        self.cli(READ, &args).await.ok().json()
    }

    /// How many versions the history holds.
    pub async fn version_count(&self) -> usize {
        self.get("/v1/versions?limit=1000").await["versions"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// What an edge holds: (version, digest).
pub async fn held(edge: SocketAddr) -> (u64, Option<String>) {
    rollout_tests::applied(&client(), edge).await
}

/// Writes a config with one route at `weight` % and returns its path.
pub fn config_file(dir: &Path, name: &str, old: &Origin, new: &Origin, weight: f64) -> String {
    let path = dir.join(name);
    let doc = config(&old.url(), &new.url(), weight, serde_json::json!({}));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("json")).expect("config file");
    path.to_string_lossy().into_owned()
}

/// An origin that answers 200, or 500 for an even share of requests:
/// `per_100` of every 100 fail, spread out (request n fails when n·k/100
/// reaches the next whole number).
#[derive(Debug)]
pub struct FlakyOrigin {
    pub addr: SocketAddr,
    per_100: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlakyOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FlakyOrigin {
    pub async fn start(name: &'static str, per_100: u64) -> FlakyOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let share = Arc::new(AtomicU64::new(per_100));
        let (k, n) = (share.clone(), Arc::new(AtomicU64::new(0)));
        let app = axum::Router::new().fallback(move || {
            let (k, n) = (k.clone(), n.clone());
            async move {
                let i = n.fetch_add(1, Ordering::SeqCst);
                let k = k.load(Ordering::SeqCst);
                let fails = (i + 1) * k / 100 > i * k / 100;
                let status = if fails {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                };
                (status, [("x-origin", name)], name)
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FlakyOrigin {
            addr,
            per_100: share,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the share of failures.
    pub fn fail(&self, per_100: u64) {
        self.per_100.store(per_100, Ordering::SeqCst);
    }
}

/// Gate modes.
pub const PASS: u64 = 0;
/// Every connection is closed at once, as if the edge were down.
pub const DOWN: u64 = u64::MAX;

/// A TCP relay in front of an edge: passes traffic, holds each new
/// connection for a delay (ms), or cuts everything off.
#[derive(Debug)]
pub struct Gate {
    pub addr: SocketAddr,
    mode: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
    upstream: Arc<std::sync::Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gate {
    pub async fn start(upstream: SocketAddr) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gate");
        let addr = listener.local_addr().expect("gate addr");
        let mode = Arc::new(AtomicU64::new(PASS));
        let epoch = Arc::new(AtomicU64::new(0));
        let (m, e) = (mode.clone(), epoch.clone());
        let target = Arc::new(std::sync::Mutex::new(upstream));
        let t = target.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                let (m, e) = (m.clone(), e.clone());
                let upstream = *t.lock().expect("gate target");
                tokio::spawn(async move {
                    let born = e.load(Ordering::SeqCst);
                    let delay = m.load(Ordering::SeqCst);
                    if delay == DOWN {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    // Down now, or the mode changed while it was held: cut.
                    if m.load(Ordering::SeqCst) == DOWN || e.load(Ordering::SeqCst) != born {
                        return;
                    }
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Relay until either side closes or the gate changes mode.
                    let relay = tokio::io::copy_bidirectional(&mut down, &mut up);
                    let cut = async {
                        while e.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    tokio::select! {
                        _ = relay => {}
                        () = cut => {}
                    }
                });
            }
        });
        Gate {
            addr,
            mode,
            epoch,
            upstream: target,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends new connections to `upstream` (and cuts open ones), as if the
    /// edge behind this address had been replaced.
    pub fn retarget(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("gate target") = upstream;
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// PASS, DOWN, or a delay in ms for each new connection. Open
    /// connections are cut, so the new mode applies to the next request.
    pub fn set(&self, mode: u64) {
        self.mode.store(mode, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state of each edge in a status reply, by URL order.
pub fn states(status: &Value) -> Vec<String> {
    status["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// PUTs `body` with `signature` to `edge`'s admin path: (status, JSON reply).
pub async fn put_envelope(edge: SocketAddr, body: Vec<u8>, signature: &str) -> (u16, Value) {
    let resp = client()
        .put(format!("http://{edge}{}", rollout_core::edge::ADMIN_PATH))
        .header(rollout_core::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .expect("edge answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json reply"))
}
pub mod pg;

/// Whether the services these tests start keep their store in PostgreSQL
/// (`ROLLOUT_TEST_STORE=postgres`): each in a database of its own, on one
/// cluster the test binary starts on first use. Otherwise, SQLite files.
pub fn on_postgres() -> bool {
    std::env::var("ROLLOUT_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The store of the service whose files are in `dir`: `control.sqlite`
/// there, or (on PostgreSQL) a new database, the same one on every restart.
pub fn store_in(dir: &Path) -> PathBuf {
    // A store given to this service (replicas share one), or made for it.
    let saved = dir.join("store-url");
    if let Ok(url) = std::fs::read_to_string(&saved) {
        return PathBuf::from(url);
    }
    if !on_postgres() {
        return dir.join("control.sqlite");
    }
    let url = new_pg_store();
    std::fs::write(&saved, &url).expect("store-url file");
    PathBuf::from(url)
}

/// `n` `set-weight web I.5` calls at once (I from 0), spread over the
/// services at `urls` in turn: each commits or gets 409. The committed
/// ones, by version: the weight each wrote. Panics on a version issued
/// twice or any other outcome.
pub async fn concurrent_set_weights(
    urls: &[String],
    n: usize,
) -> std::collections::BTreeMap<u64, String> {
    let runs = futures_util::future::join_all((0..n).map(|i| {
        let percent = format!("{i}.5");
        let url = urls[i % urls.len()].clone();
        async move {
            let args = ["set-weight", "web", &percent, "--output", "json"];
            (percent.clone(), cli(&url, DEPLOY, &args).await)
        }
    }))
    .await;
    let mut winners = std::collections::BTreeMap::new();
    for (percent, run) in &runs {
        match run.code {
            0 => {
                let v = run.json()["version"].as_u64().expect("version");
                assert!(
                    winners.insert(v, percent.clone()).is_none(),
                    "version {v} issued twice"
                );
            }
            3 => assert!(
                run.stderr.contains("409"),
                "a loser says 409: {}",
                run.stderr
            ),
            other => panic!("set-weight exited {other}: {}", run.stderr),
        }
    }
    println!(
        "{n} concurrent set-weight calls over {} service(s): {} committed, {} got 409",
        urls.len(),
        winners.len(),
        n - winners.len()
    );
    assert!(!winners.is_empty());
    winners
}

/// Runs `sqlite` on the store at `db` when it is a SQLite file, or
/// `postgres` (with psql) when it is a PostgreSQL URL: what an operator, or
/// an attacker, with direct access to the database could do.
pub fn store_exec(db: &Path, sqlite: &str, postgres: &str) {
    let location = db.to_string_lossy();
    if location.starts_with("postgres://") {
        let out = std::process::Command::new(pg::bin_dir().join("psql"))
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-d",
                &location,
                "-c",
                postgres,
            ])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {postgres:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        rusqlite::Connection::open(db)
            .expect("open the store")
            .execute_batch(sqlite)
            .unwrap_or_else(|e| panic!("{sqlite}: {e}"));
    }
}

/// A copy of the store at `db` as it is now (the service must be stopped):
/// a SQLite file copied beside it in `dir`, or a PostgreSQL database copied
/// on the same server. Its location, for the `store-url` file [`store_in`]
/// reads: what a database that fails over to a lagging standby, or is
/// restored from a backup, comes back as.
pub fn store_snapshot(db: &Path, dir: &Path, name: &str) -> PathBuf {
    if db.to_string_lossy().starts_with("postgres://") {
        return pg_copy(db, name);
    }
    let copy = dir.join(format!("{name}.sqlite"));
    std::fs::copy(db, &copy).expect("copy the store file");
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", copy.display())).expect("copy the WAL");
        }
    }
    copy
}

/// The rows `sql` selects from the store at `db` (a SQLite file, opened
/// read-only, or a PostgreSQL URL, read with psql), every column as text.
/// `None` when the store cannot be read: a test reading while a service is
/// killed and restarted retries rather than fails.
pub fn store_rows(db: &Path, sql: &str) -> Option<Vec<Vec<String>>> {
    let location = db.to_string_lossy();
    if location.starts_with("postgres://") {
        let out = std::process::Command::new(pg::bin_dir().join("psql"))
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-d"])
            .arg(&*location)
            .arg("-c")
            .arg(sql)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        return Some(
            text.lines()
                .map(|line| line.split('\t').map(str::to_owned).collect())
                .collect(),
        );
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    let mut stmt = conn.prepare(sql).ok()?;
    let columns = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            (0..columns)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => String::new(),
                        rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                        rusqlite::types::ValueRef::Real(x) => x.to_string(),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                    })
                })
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .ok()?;
    rows.collect::<rusqlite::Result<_>>().ok()
}

/// A copy of the PostgreSQL store at `db` (a URL; nobody may be connected
/// to it) as a new database on the same server, named after it and `name`:
/// its URL.
pub fn pg_copy(db: &Path, name: &str) -> PathBuf {
    let url = db.to_string_lossy();
    let (server, source) = url.rsplit_once('/').expect("a database URL");
    let copy = format!("{source}_{name}");
    let admin = format!("{server}/postgres");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new(pg::bin_dir().join("psql"))
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", &admin, "-c"])
            .arg(format!("CREATE DATABASE {copy} TEMPLATE {source}"))
            .output()
            .expect("psql runs");
        if out.status.success() {
            return PathBuf::from(format!("{server}/{copy}"));
        }
        let error = String::from_utf8_lossy(&out.stderr);
        // A killed service's sessions end a moment after it.
        assert!(
            error.contains("being accessed by other users") && std::time::Instant::now() < deadline,
            "copying {source}: {error}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster [`new_pg_store`] makes databases on. Statics are never
/// dropped: a watcher process stops it once the test binary has exited.
static STORE_CLUSTER: std::sync::Mutex<Option<pg::Pg>> = std::sync::Mutex::new(None);

/// A new, empty database on the test binary's PostgreSQL cluster: its URL.
pub fn new_pg_store() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut cluster = STORE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if cluster.is_none() {
        let pg = pg::Pg::start("store");
        pg.stop_after(std::process::id());
        *cluster = Some(pg);
    }
    let pg = cluster.as_ref().expect("started above");
    let name = format!("store_{}", N.fetch_add(1, Ordering::SeqCst));
    pg.psql(&format!("CREATE DATABASE {name}"));
    format!(
        "postgres://{}@127.0.0.1:{}/{name}",
        pg::SUPERUSER,
        pg.port()
    )
}
