//! Crash loops, all on demand (`#[ignore]`; `scripts/crash.sh` runs them,
//! `scripts/crash.sh --ci` the short form scripts/test.sh uses):
//!
//! 1. **Edge kill loop**: a `rollout-host` (SQLite store) is SIGKILLed at a
//!    random moment while several pushers send it signed versions, then
//!    restarted on the same store file. It must come back holding a version
//!    at least as high as every one it ACKed, whole (the stored envelope
//!    parses, verifies and is byte for byte what was pushed for that
//!    version), and its GET must say what it routes by.
//! 2. **Control kill loop**: `rollout serve` is SIGKILLed while writers
//!    commit (through the API and the CLI) and it fans out to two edges,
//!    then restarted on the same database. Every commit reported as made is
//!    stored with the reported digest, no number is used twice, no edge holds
//!    a version the store lacks, `rollout audit --verify` passes, and the
//!    edges converge on the newest version.
//! 3. **Kill mid fan-out under load**: a steady request load runs through
//!    the edges while the service is killed between a commit reaching one
//!    edge and the other; every response must be a good one, and both edges
//!    must hold the newest version soon after the restart.
//! 4. **Leak check**: minutes of load and pushes; the resident memory and
//!    open file descriptors of `rollout serve` and both `rollout-host`s must
//!    stay within a bound after warm-up.
//!
//! Counts come from the environment (see each test). Every test prints one
//! `crash: ...` line with its figures.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollout_core::edge::stored::Frame;
use rollout_core::edge::{ADMIN_PATH, Held, KV_ACTIVE};
use rollout_core::{Applied, Envelope, SIGNATURE_HEADER};
use rollout_host::{KvBackend as _, SqliteKv};
use serde_json::{Value, json};
use support::*;
use tokio::io::AsyncBufReadExt as _;

// ---------------------------------------------------------------------------
// Settings and figures.

/// A count from the environment, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// SplitMix64: small, deterministic, seeded from `ROLLOUT_CRASH_SEED` (or
/// the clock, printed) so a failing run can be replayed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded(what: &str) -> Rng {
        let seed = std::env::var("ROLLOUT_CRASH_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{what}: seed {seed} (ROLLOUT_CRASH_SEED={seed} replays it)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (hi > lo).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// min / median / max of some milliseconds, for the figures.
fn spread(ms: &[f64]) -> String {
    if ms.is_empty() {
        return "-".to_owned();
    }
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    format!("{:.0}/{:.0}/{:.0} ms", v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Problems found, printed (the first `SHOWN`) and counted.
#[derive(Debug, Default)]
struct Problems(Vec<String>);

impl Problems {
    const SHOWN: usize = 40;

    fn add(&mut self, p: String) {
        if self.0.len() < Self::SHOWN {
            println!("  problem: {p}");
        }
        self.0.push(p);
    }

    fn assert_none(&self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problems, the first: {:?}",
            self.0.len(),
            &self.0[..self.0.len().min(5)]
        );
    }
}

// ---------------------------------------------------------------------------
// Child processes: rollout-host and rollout serve.

/// The `rollout-host` binary: `$ROLLOUT_HOST_BIN`, or next to `rollout`
/// (`cargo build -p rollout-host` puts it there).
fn host_bin() -> PathBuf {
    let path = std::env::var_os("ROLLOUT_HOST_BIN").map_or_else(
        || rollout_bin().with_file_name("rollout-host"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: `cargo build --locked -p rollout-host` first (scripts/crash.sh does)",
        path.display()
    );
    path
}

/// What the children log: errors only, unless `ROLLOUT_CRASH_LOG` says more.
fn child_log() -> String {
    std::env::var("ROLLOUT_CRASH_LOG").unwrap_or_else(|_| "error".to_owned())
}

/// A child process that printed the address it listens on.
#[derive(Debug)]
struct Proc {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl Proc {
    /// Starts `cmd` and waits for its first stdout line, which ends in
    /// `http://ADDR`.
    async fn start(mut cmd: tokio::process::Command, what: &str) -> Proc {
        let mut child = cmd
            .env("RUST_LOG", child_log())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{what} prints its address within 30 s"))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("{what} exited before listening"));
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{what} printed {line:?}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proc { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, and wait until it is gone.
    async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

/// How to start one edge again and again: same store file, same port.
#[derive(Debug)]
struct EdgeSpec {
    store: PathBuf,
    old: String,
    new: String,
    port: u16,
}

impl EdgeSpec {
    fn new(dir: &Path, name: &str, old: &str, new: &str) -> EdgeSpec {
        EdgeSpec {
            store: dir.join(format!("{name}.sqlite")),
            old: old.to_owned(),
            new: new.to_owned(),
            port: 0,
        }
    }

    async fn start(&mut self) -> Proc {
        let mut cmd = tokio::process::Command::new(host_bin());
        cmd.arg("--component")
            .arg(rollout_tests::component_path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--store")
            .arg(&self.store)
            .arg("--var")
            .arg(format!("public_key={}", secret().public_key()))
            .arg("--var")
            .arg(format!("old_origin={}", self.old))
            .args(["--allow-outbound", &self.old, "--allow-outbound", &self.new]);
        let edge = Proc::start(cmd, "rollout-host").await;
        self.port = edge.addr.port();
        edge
    }
}

/// How to start the control service again and again: same database, same port.
#[derive(Debug)]
struct ControlSpec {
    dir: PathBuf,
    db: PathBuf,
    port: u16,
}

impl ControlSpec {
    fn new(dir: &Path) -> ControlSpec {
        std::fs::write(dir.join("control.key"), secret().to_text()).expect("key file");
        std::fs::write(
            dir.join("tokens"),
            format!("admin ops {ADMIN}\ndeploy ci {DEPLOY}\nread viewer {READ}\n"),
        )
        .expect("token file");
        ControlSpec {
            db: store_in(dir),
            dir: dir.to_owned(),
            port: 0,
        }
    }

    /// Its store: a SQLite file, or a PostgreSQL database when the tests
    /// run on PostgreSQL (`ROLLOUT_TEST_STORE=postgres`).
    fn db(&self) -> PathBuf {
        self.db.clone()
    }

    async fn start(&mut self) -> Proc {
        let mut cmd = tokio::process::Command::new(rollout_bin());
        cmd.arg("serve")
            .arg("--db")
            .arg(self.db())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--key")
            .arg(self.dir.join("control.key"))
            .arg("--tokens")
            .arg(self.dir.join("tokens"))
            .args(["--reconcile-every", "200ms", "--push-timeout", "1s"])
            // A restarted service waits out its old lease: keep that short.
            .args(["--lease-ttl", "1s"])
            .args(["--verify-every", "1s", "--unreachable-after", "60s"]);
        let control = Proc::start(cmd, "rollout serve").await;
        self.port = control.addr.port();
        control
    }
}

// ---------------------------------------------------------------------------
// Talking to edges and the service without panicking on a dead peer.

/// What an edge's GET reports: (version, digest); `None` when it does not answer.
async fn edge_holds(client: &reqwest::Client, edge: SocketAddr) -> Option<(u64, Option<String>)> {
    let reply: Value = client
        .get(format!("http://{edge}{ADMIN_PATH}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((
        reply["version"].as_u64().unwrap_or(0),
        reply["digest"].as_str().map(str::to_owned),
    ))
}

/// The config of version `v` in the edge loop: odd versions send every key
/// to new, even ones to old, so one routed request shows which one is live.
fn weight_of(v: u64) -> f64 {
    if v % 2 == 1 { 100.0 } else { 0.0 }
}

/// The arm a request gets under version `v` (0: nothing applied, bootstrap old).
fn arm_of(v: u64) -> &'static str {
    if v % 2 == 1 { "new" } else { "old" }
}

/// Version `v` of the edge loop, signed: always the same bytes for the same `v`.
fn signed(v: u64, old: &str, new: &str) -> (Vec<u8>, String) {
    rollout_tests::envelope(v, config(old, new, weight_of(v), json!({})))
}

/// Which database `db` is, for the figures.
fn store_kind(db: &Path) -> &'static str {
    if db.to_string_lossy().starts_with("postgres://") {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// The store's versions, read directly from its database: version -> digest.
fn stored_versions(db: &Path) -> BTreeMap<u64, String> {
    store_rows(db, "SELECT version, digest FROM versions ORDER BY version")
        .expect("read the control store")
        .into_iter()
        .map(|row| (row[0].parse().expect("a version number"), row[1].clone()))
        .collect()
}

/// The newest stored version: (version, digest).
fn newest_stored(db: &Path) -> Option<(u64, String)> {
    store_rows(
        db,
        "SELECT version, digest FROM versions ORDER BY version DESC LIMIT 1",
    )?
    .into_iter()
    .next()
    .map(|row| (row[0].parse().expect("a version number"), row[1].clone()))
}

/// Numbers or digests that occur more than once in the store.
fn stored_duplicates(db: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (what, sql) in [
        (
            "version",
            "SELECT CAST(version AS TEXT), COUNT(*) FROM versions GROUP BY version HAVING COUNT(*) > 1",
        ),
        (
            "digest",
            "SELECT digest, COUNT(*) FROM versions GROUP BY digest HAVING COUNT(*) > 1",
        ),
    ] {
        for row in store_rows(db, sql).expect("read the control store") {
            out.push(format!("{what} {} is stored {} times", row[0], row[1]));
        }
    }
    out
}

/// Commits `doc` through the API, expecting version `expected`:
/// `Ok(Some((version, digest)))` on 201, `Ok(None)` on 409 (with the
/// current version in `expected`), `Err` when the service did not answer
/// or answered something else.
async fn commit(
    client: &reqwest::Client,
    control: &str,
    expected: &mut u64,
    doc: &rollout_core::ConfigDoc,
) -> Result<Option<(u64, String)>, String> {
    let body = json!({"expected_version": *expected, "reason": "crash loop", "config": doc});
    let resp = client
        .post(format!("{control}/v1/versions"))
        .bearer_auth(DEPLOY)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status().as_u16();
    let reply: Value = resp
        .json()
        .await
        .map_err(|e| format!("{status} without a whole reply: {e}"))?;
    match status {
        201 => {
            let version = reply["version"].as_u64().ok_or("201 without a version")?;
            let digest = reply["digest"].as_str().ok_or("201 without a digest")?;
            *expected = version;
            Ok(Some((version, digest.to_owned())))
        }
        409 => {
            *expected = reply["current_version"].as_u64().unwrap_or(*expected);
            Ok(None)
        }
        _ => Err(format!("unexpected {status}: {reply}")),
    }
}

/// Registers `edges` with the service.
async fn register(client: &reqwest::Client, control: &str, edges: &[String]) {
    for url in edges {
        let resp = client
            .post(format!("{control}/v1/edges"))
            .bearer_auth(ADMIN)
            .json(&json!({"url": url}))
            .send()
            .await
            .expect("service answers");
        assert!(
            resp.status().is_success(),
            "adding {url}: {}",
            resp.status()
        );
    }
}

/// Polls until every edge in `edges` holds `want` (version, digest); the
/// time it took, or `None` after `limit`.
async fn until_held(
    client: &reqwest::Client,
    edges: &[SocketAddr],
    want: (u64, &str),
    since: Instant,
    limit: Duration,
) -> Option<f64> {
    loop {
        let mut all = true;
        for e in edges {
            let held = edge_holds(client, *e).await;
            if held
                .as_ref()
                .is_none_or(|(v, d)| *v != want.0 || d.as_deref() != Some(want.1))
            {
                all = false;
                break;
            }
        }
        if all {
            return Some(since.elapsed().as_secs_f64() * 1000.0);
        }
        if since.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. The edge kill loop.

/// What one pusher saw.
#[derive(Debug, Default)]
struct PushCounts {
    acks: u64,
    nacks: u64,
    odd: Vec<String>,
}

/// Sends ever higher versions until the edge stops answering (or `stop`).
/// Every 200 ACK of version v raises `highest_ack` to at least v.
async fn pusher(
    client: reqwest::Client,
    edge: SocketAddr,
    origins: Arc<(String, String)>,
    next: Arc<AtomicU64>,
    highest_ack: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> PushCounts {
    let mut counts = PushCounts::default();
    while !stop.load(Ordering::SeqCst) {
        let v = next.fetch_add(1, Ordering::SeqCst);
        let (body, signature) = signed(v, &origins.0, &origins.1);
        in_flight.fetch_add(1, Ordering::SeqCst);
        let sent = client
            .put(format!("http://{edge}{ADMIN_PATH}"))
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let answer = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.json::<Value>().await.ok().map(|r| (status, r))
            }
            Err(_) => None,
        };
        in_flight.fetch_sub(1, Ordering::SeqCst);
        // No whole answer: the edge is gone. What it did is for the check.
        let Some((status, reply)) = answer else {
            break;
        };
        let held = reply["version"].as_u64();
        match (status, reply["status"].as_str()) {
            (200, Some("ack")) if held == Some(v) => {
                highest_ack.fetch_max(v, Ordering::SeqCst);
                counts.acks += 1;
            }
            (409, Some("nack")) if held.is_some_and(|h| h > v) => counts.nacks += 1,
            _ => counts
                .odd
                .push(format!("push of version {v}: {status} {reply}")),
        }
    }
    counts
}

/// After a restart: what the edge holds must be at least `acked`, be what
/// was pushed for that version, be stored whole, and be what it routes by.
/// The problems, by kind.
async fn check_edge(
    client: &reqwest::Client,
    spec: &EdgeSpec,
    edge: SocketAddr,
    acked: u64,
    pushed: u64,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let Some((version, digest)) = edge_holds(client, edge).await else {
        return vec![("down", "the restarted edge does not answer GET".to_owned())];
    };
    if version < acked {
        out.push((
            "below-ack",
            format!("holds version {version} after ACKing version {acked}"),
        ));
    }
    if version > pushed {
        out.push((
            "invented",
            format!("holds version {version}, above any pushed ({pushed})"),
        ));
    }
    let expected =
        (version > 0).then(|| rollout_tests::digest(&signed(version, &spec.old, &spec.new).0));
    if digest != expected {
        out.push((
            "wrong-digest",
            format!("GET says version {version} with digest {digest:?}, but that version was pushed as {expected:?}"),
        ));
    }

    // The stored value, read from the file the edge has open.
    let stored = SqliteKv::open(&spec.store)
        .and_then(|kv| kv.get(KV_ACTIVE))
        .map_err(|e| format!("{e:#}"));
    match (stored, version) {
        (Err(e), _) => out.push(("torn", format!("the store does not read: {e}"))),
        (Ok(None), 0) => {}
        (Ok(None), v) => out.push((
            "torn",
            format!("GET says version {v}, the store holds nothing"),
        )),
        (Ok(Some(value)), v) => {
            let whole = Frame::parse(&value).ok_or("not a whole frame".to_owned()).and_then(|frame| {
                let envelope = Envelope::parse(frame.envelope).map_err(|e| format!("envelope: {e}"))?;
                secret()
                    .public_key()
                    .verify(frame.envelope, frame.signature)
                    .map_err(|e| format!("signature: {e}"))?;
                let digest_ok = expected.as_deref() == Some(envelope.digest.to_string().as_str());
                if envelope.version != v || !digest_ok {
                    return Err(format!(
                        "the stored envelope is version {} ({}), not what was pushed as version {v}",
                        envelope.version, envelope.digest
                    ));
                }
                let applied = Held::read(Some(&value)).applied();
                let want = Applied {
                    version: v,
                    digest: envelope.digest,
                };
                if applied != Some(want) {
                    return Err(format!("the compact form says {applied:?}, the envelope {want:?}"));
                }
                Ok(())
            });
            if let Err(e) = whole {
                out.push(("torn", format!("stored value for version {v}: {e}")));
            }
        }
    }

    // What it routes by.
    match client
        .get(format!("http://{edge}/"))
        .header("x-user-id", "crash-probe")
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Err(e) => out.push(("untruthful", format!("a routed request failed: {e}"))),
        Ok(resp) => {
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (routed, origin) = (header("x-rollout-version"), header("x-origin"));
            if resp.status() != 200 || routed != version.to_string() || origin != arm_of(version) {
                out.push((
                    "untruthful",
                    format!(
                        "GET says version {version}, a request was routed by version {routed:?} to {origin:?} ({})",
                        resp.status()
                    ),
                ));
            }
        }
    }
    out
}

/// `ROLLOUT_CRASH_EDGE_KILLS` kills (default 50) of an edge while
/// `ROLLOUT_CRASH_PUSHERS` (default 4) pushers send it versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a crash loop: scripts/crash.sh runs it"]
async fn edge_kill_loop() {
    let kills = env_u64("ROLLOUT_CRASH_EDGE_KILLS", 50);
    let pushers = env_u64("ROLLOUT_CRASH_PUSHERS", 4);
    let mut rng = Rng::seeded("edge kill loop");
    let started = Instant::now();
    let scratch = Scratch::new("edge-kill");
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let origins = Arc::new((old.url(), new.url()));
    let mut spec = EdgeSpec::new(&scratch.0, "edge", &old.url(), &new.url());
    let mut edge = spec.start().await;
    let client = client();

    let next = Arc::new(AtomicU64::new(1));
    let highest_ack = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let (mut acks, mut nacks, mut mid_push) = (0u64, 0u64, 0u64);
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut problems = Problems::default();
    let mut restart_ms = Vec::new();

    for kill in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..pushers)
            .map(|_| {
                tokio::spawn(pusher(
                    client.clone(),
                    edge.addr,
                    origins.clone(),
                    next.clone(),
                    highest_ack.clone(),
                    in_flight.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_micros(rng.range(1_000, 60_000))).await;
        if in_flight.load(Ordering::SeqCst) > 0 {
            mid_push += 1;
        }
        edge.kill().await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let counts = t.await.expect("pusher");
            acks += counts.acks;
            nacks += counts.nacks;
            for odd in counts.odd {
                problems.add(format!("kill {kill}: {odd}"));
            }
        }
        let acked = highest_ack.load(Ordering::SeqCst);
        let pushed = next.load(Ordering::SeqCst) - 1;

        let t = Instant::now();
        edge = spec.start().await;
        restart_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        for (kind, p) in check_edge(&client, &spec, edge.addr, acked, pushed).await {
            *by_kind.entry(kind).or_default() += 1;
            problems.add(format!("kill {kill} (highest ACK {acked}): {p}"));
        }
    }
    edge.kill().await;

    let count = |k: &str| by_kind.get(k).copied().unwrap_or(0);
    println!(
        "crash: edge kill loop: kills {kills}, below-ACK {}, torn {}, wrong digest {}, GET untruthful {}, \
         other problems {}; {acks} ACKs, {nacks} NACKs, {mid_push} kills with a push in flight, \
         highest ACK {}, restart {}, {:.1} s",
        count("below-ack"),
        count("torn"),
        count("wrong-digest"),
        count("untruthful"),
        problems.0.len() as u64
            - count("below-ack")
            - count("torn")
            - count("wrong-digest")
            - count("untruthful"),
        highest_ack.load(Ordering::SeqCst),
        spread(&restart_ms),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acks > 0,
        "no push was ever acknowledged: the loop tested nothing"
    );
    problems.assert_none("edge kill loop");
}

// ---------------------------------------------------------------------------
// 2. The control kill loop.

/// Commits reported as made: version -> every digest reported for it.
type Reported = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Commits through the API until the service stops answering (or `stop`).
async fn api_writer(
    client: reqwest::Client,
    control: String,
    origins: Arc<(String, String)>,
    reported: Reported,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Vec<String> {
    let mut odd = Vec::new();
    let mut expected = 0;
    let mut n = seed;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let doc = config(&origins.0, &origins.1, (n % 101) as f64, json!({}));
        match commit(&client, &control, &mut expected, &doc).await {
            Ok(Some((v, d))) => lock(&reported).entry(v).or_default().push(d),
            Ok(None) => {}
            Err(e) if e.starts_with("no answer") || e.contains("without a whole reply") => break,
            Err(e) => {
                odd.push(e);
                break;
            }
        }
    }
    odd
}

/// Commits the CLI writers reported.
static CLI_COMMITS: AtomicU64 = AtomicU64::new(0);

/// Commits with `rollout set-weight` until the service stops answering (or `stop`).
async fn cli_writer(
    control: String,
    reported: Reported,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Vec<String> {
    let mut odd = Vec::new();
    let mut n = seed;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let percent = (n % 101).to_string();
        let run = cli(
            &control,
            DEPLOY,
            &["set-weight", "web", &percent, "--output", "json"],
        )
        .await;
        match run.code {
            0 => {
                let v = run.json();
                match (v["version"].as_u64(), v["digest"].as_str()) {
                    (Some(version), Some(digest)) => {
                        lock(&reported)
                            .entry(version)
                            .or_default()
                            .push(digest.to_owned());
                        CLI_COMMITS.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => odd.push(format!("set-weight said {}", run.stdout)),
                }
            }
            // A conflict with the other writer: go again.
            3 => {}
            // The service is gone (network): this writer is done.
            1 => break,
            c => {
                odd.push(format!("set-weight exited {c}: {}", run.stderr));
                break;
            }
        }
    }
    odd
}

/// `ROLLOUT_CRASH_CONTROL_KILLS` kills (default 20) of `rollout serve` while
/// an API writer and a CLI writer commit and it fans out to two edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a crash loop: scripts/crash.sh runs it"]
async fn control_kill_loop() {
    let kills = env_u64("ROLLOUT_CRASH_CONTROL_KILLS", 20);
    let mut rng = Rng::seeded("control kill loop");
    let started = Instant::now();
    let scratch = Scratch::new("control-kill");
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let origins = Arc::new((old.url(), new.url()));
    let mut edges = Vec::new();
    for i in 0..2 {
        let mut spec = EdgeSpec::new(&scratch.0, &format!("edge-{i}"), &old.url(), &new.url());
        edges.push(spec.start().await);
    }
    let edge_addrs: Vec<SocketAddr> = edges.iter().map(|e| e.addr).collect();
    let mut spec = ControlSpec::new(&scratch.0);
    let mut control = spec.start().await;
    let client = client();
    register(
        &client,
        &control.url(),
        &edges.iter().map(Proc::url).collect::<Vec<_>>(),
    )
    .await;
    let public_key = secret().public_key().to_string();

    let reported: Reported = Arc::default();
    let mut problems = Problems::default();
    let (mut lost, mut duplicated, mut ahead, mut chain, mut unconverged) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    // Restart to every edge on the newest version: when one was behind at
    // the kill (the crash cut its fan-out short), and when none was.
    let (mut behind_ms, mut converge_ms) = (Vec::new(), Vec::new());
    for kill in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let api = tokio::spawn(api_writer(
            client.clone(),
            control.url(),
            origins.clone(),
            reported.clone(),
            stop.clone(),
            rng.next() % 1000,
        ));
        let by_cli = tokio::spawn(cli_writer(
            control.url(),
            reported.clone(),
            stop.clone(),
            rng.next() % 1000,
        ));
        tokio::time::sleep(Duration::from_millis(rng.range(20, 400))).await;
        control.kill().await;
        stop.store(true, Ordering::SeqCst);
        for odd in api
            .await
            .expect("writer")
            .into_iter()
            .chain(by_cli.await.expect("writer"))
        {
            problems.add(format!("kill {kill}: {odd}"));
        }

        // What the edges hold while the service is down.
        let mut held_at_kill = Vec::new();
        for e in &edge_addrs {
            held_at_kill.push((*e, edge_holds(&client, *e).await));
        }

        // What the store holds before the service is back: a restarted
        // service adopts what edges hold above it, which would hide a
        // version pushed before it was durable.
        let stored_at_kill = stored_versions(&spec.db());

        let restarted = Instant::now();
        control = spec.start().await;
        // Every edge comes to the newest version.
        if let Some((v, d)) = newest_stored(&spec.db()) {
            let behind = held_at_kill
                .iter()
                .any(|(_, h)| h.as_ref().is_none_or(|(hv, _)| *hv != v));
            match until_held(
                &client,
                &edge_addrs,
                (v, &d),
                restarted,
                Duration::from_secs(20),
            )
            .await
            {
                Some(ms) if behind => behind_ms.push(ms),
                Some(ms) => converge_ms.push(ms),
                None => {
                    unconverged += 1;
                    problems.add(format!("kill {kill}: the edges did not reach version {v} within 20 s of the restart"));
                }
            }
        }

        let stored = stored_versions(&spec.db());
        // Lost or duplicated: every reported commit is stored, as reported,
        // and no number was reported with two digests.
        for (v, digests) in lock(&reported).iter() {
            match stored.get(v) {
                None => {
                    lost += 1;
                    problems.add(format!(
                        "kill {kill}: version {v} was reported committed and is not stored"
                    ));
                }
                Some(d) if digests.iter().any(|r| r != d) => {
                    lost += 1;
                    problems.add(format!(
                        "kill {kill}: version {v} was reported as {digests:?}, stored as {d}"
                    ));
                }
                Some(_) => {}
            }
            if digests.len() > 1 {
                duplicated += 1;
                problems.add(format!(
                    "kill {kill}: version {v} was reported committed {} times",
                    digests.len()
                ));
            }
        }
        for d in stored_duplicates(&spec.db()) {
            duplicated += 1;
            problems.add(format!("kill {kill}: {d}"));
        }
        // No edge held a version the store lacked when the service died
        // (since the restart each holds the newest stored one), and the
        // restarted service had nothing to adopt back from them.
        for (e, held) in held_at_kill {
            match held {
                Some((0, _)) => {}
                Some((v, d)) if stored_at_kill.get(&v) == d.as_ref() => {}
                held => {
                    ahead += 1;
                    problems.add(format!(
                        "kill {kill}: edge {e} holds {held:?}, which the store does not"
                    ));
                }
            }
        }
        // The chain, end to end.
        let db = spec.db();
        let run = cli(
            &control.url(),
            READ,
            &[
                "audit",
                "--verify",
                "--db",
                &db.to_string_lossy(),
                "--public-key",
                &public_key,
                "--output",
                "json",
            ],
        )
        .await;
        if run.code != 0 || run.json()["ok"] != true {
            chain += 1;
            problems.add(format!(
                "kill {kill}: audit --verify exited {}: {}",
                run.code,
                run.stdout.trim()
            ));
        }
    }
    control.kill().await;

    // Nothing was ever adopted back from an edge: every version an edge
    // held was stored before it was pushed.
    for row in store_rows(
        &spec.db(),
        "SELECT action, detail FROM audit WHERE action IN ('adopt', 'adopt-refused')",
    )
    .expect("read the audit log")
    {
        ahead += 1;
        problems.add(format!("{}: {}", row[0], row[1]));
    }
    let stored = stored_versions(&spec.db());
    let commits = lock(&reported).values().map(Vec::len).sum::<usize>();
    let by_cli = CLI_COMMITS.load(Ordering::SeqCst);
    println!(
        "crash: control kill loop ({}): kills {kills}, commits reported {commits} ({by_cli} by the CLI), stored versions {}, lost {lost}, \
         duplicated {duplicated}, edges ahead of the store {ahead}, audit --verify failures {chain}, \
         not converged {unconverged}; restart to every edge on the newest version: {} kills left an edge \
         behind, {}, the other {} {}; {:.1} s",
        store_kind(&spec.db()),
        stored.len(),
        behind_ms.len(),
        spread(&behind_ms),
        converge_ms.len(),
        spread(&converge_ms),
        started.elapsed().as_secs_f64()
    );
    assert!(
        commits > 0,
        "no commit was ever reported: the loop tested nothing"
    );
    problems.assert_none("control kill loop");
}

// ---------------------------------------------------------------------------
// 3 and 4: a steady load through the edges.

/// What a load saw.
#[derive(Debug, Default)]
struct LoadFigures {
    secs: f64,
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl LoadFigures {
    fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Requests a second, as sent.
    fn rate(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }
}

/// Requests at a steady rate, round robin over some edges, until stopped.
#[derive(Debug)]
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadFigures>,
}

impl Load {
    fn start(edges: Vec<SocketAddr>, rps: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(32)
                .build()
                .expect("client");
            let figures = Arc::new(Mutex::new(LoadFigures::default()));
            // Request n is due n/rps seconds after the start: the average
            // rate holds even when a timer fires late.
            let start = tokio::time::Instant::now();
            let mut requests = tokio::task::JoinSet::new();
            let mut n = 0u64;
            while !flag.load(Ordering::SeqCst) {
                n += 1;
                tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rps as f64))
                    .await;
                let edge = edges[n as usize % edges.len()];
                let (client, figures) = (client.clone(), figures.clone());
                requests.spawn(async move {
                    let outcome = one_request(&client, edge, n).await;
                    let mut f = lock(&figures);
                    f.sent += 1;
                    match outcome {
                        Ok(()) => f.ok += 1,
                        Err(e) => *f.errors.entry(e).or_default() += 1,
                    }
                });
                // Reap what finished, so the set stays small.
                while requests.try_join_next().is_some() {}
            }
            while requests.join_next().await.is_some() {}
            let mut out = std::mem::take(&mut *lock(&figures));
            out.secs = start.elapsed().as_secs_f64();
            out
        });
        Load { stop, task }
    }

    async fn stop(self) -> LoadFigures {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("load")
    }
}

/// One request through an edge: a 200 from one of the origins, whole.
async fn one_request(client: &reqwest::Client, edge: SocketAddr, n: u64) -> Result<(), String> {
    let resp = client
        .get(format!("http://{edge}/load/{n}"))
        .header("x-user-id", format!("user-{}", n % 1000))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status().as_u16();
    let origin = resp
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 || !matches!(origin.as_str(), "old" | "new") || body.is_empty() {
        return Err(format!("status {status} from {origin:?}"));
    }
    Ok(())
}

/// `ROLLOUT_CRASH_FANOUT_KILLS` kills (default 3) of `rollout serve` after a
/// commit reached one edge and before it reached the other, under a steady
/// load of `ROLLOUT_CRASH_RPS` requests a second (default 300) through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a crash loop: scripts/crash.sh runs it"]
async fn control_killed_mid_fan_out_under_load() {
    let kills = env_u64("ROLLOUT_CRASH_FANOUT_KILLS", 3);
    let rps = env_u64("ROLLOUT_CRASH_RPS", 300);
    let mut rng = Rng::seeded("kill mid fan-out under load");
    let started = Instant::now();
    let scratch = Scratch::new("fan-out-kill");
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let mut fast_spec = EdgeSpec::new(&scratch.0, "fast", &old.url(), &new.url());
    let mut slow_spec = EdgeSpec::new(&scratch.0, "slow", &old.url(), &new.url());
    let (fast, slow) = (fast_spec.start().await, slow_spec.start().await);
    // The service reaches the slow edge through a gate that holds each new
    // connection: a kill lands between the two edges' pushes.
    let gate = Gate::start(slow.addr).await;
    let mut spec = ControlSpec::new(&scratch.0);
    let mut control = spec.start().await;
    let client = client();
    register(&client, &control.url(), &[fast.url(), gate.url()]).await;
    let mut expected = 0;
    let first = commit(
        &client,
        &control.url(),
        &mut expected,
        &config(&old.url(), &new.url(), 10.0, json!({})),
    )
    .await
    .expect("first commit")
    .expect("no conflict");
    let both = [fast.addr, slow.addr];
    until_held(
        &client,
        &both,
        (first.0, &first.1),
        Instant::now(),
        Duration::from_secs(20),
    )
    .await
    .expect("both edges hold version 1");

    let load = Load::start(both.to_vec(), rps);
    let mut problems = Problems::default();
    let (mut mid, mut converge_ms) = (0u64, Vec::new());
    for kill in 0..kills {
        let delay = rng.range(300, 900);
        gate.set(delay);
        // Let the gate cut the connection the service keeps open to it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let doc = config(&old.url(), &new.url(), rng.range(0, 101) as f64, json!({}));
        let (v, d) = match commit(&client, &control.url(), &mut expected, &doc).await {
            Ok(Some(c)) => c,
            other => panic!("kill {kill}: commit: {other:?}"),
        };
        // Kill once the fast edge has it, before the gate lets the slow edge's push through.
        let fast_has = until_held(
            &client,
            &[fast.addr],
            (v, &d),
            Instant::now(),
            Duration::from_millis(delay / 2),
        )
        .await;
        control.kill().await;
        gate.set(DOWN);
        let slow_has = edge_holds(&client, slow.addr)
            .await
            .is_some_and(|(sv, _)| sv == v);
        if fast_has.is_some() && !slow_has {
            mid += 1;
        }
        // Down for a while, under load.
        tokio::time::sleep(Duration::from_millis(rng.range(100, 600))).await;
        gate.set(PASS);
        let restarted = Instant::now();
        control = spec.start().await;
        match until_held(&client, &both, (v, &d), restarted, Duration::from_secs(20)).await {
            Some(ms) => converge_ms.push(ms),
            None => problems.add(format!(
                "kill {kill}: the edges did not reach version {v} within 20 s of the restart"
            )),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let figures = load.stop().await;
    control.kill().await;
    for (e, n) in &figures.errors {
        problems.add(format!("{n} requests failed: {e}"));
    }
    println!(
        "crash: kill mid fan-out under load ({}): kills {kills} ({mid} with one edge updated and the other not), \
         requests {} ({:.0}/s), errors {}, convergence after restart {}, {:.1} s",
        store_kind(&spec.db()),
        figures.sent,
        figures.rate(),
        figures.errors(),
        spread(&converge_ms),
        started.elapsed().as_secs_f64()
    );
    assert!(figures.ok > 0, "no request went through");
    problems.assert_none("kill mid fan-out under load");
}

/// Resident memory (KiB) and open file descriptors of a process.
fn sample(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

/// `ROLLOUT_LEAK_SECS` (default 600) of `ROLLOUT_LEAK_RPS` requests a second
/// (default 300) through two edges and a commit every second, sampling the
/// resident memory and open descriptors of `rollout serve` and both
/// `rollout-host`s every `ROLLOUT_LEAK_SAMPLE_SECS` (default 5). After
/// `ROLLOUT_LEAK_WARMUP_SECS` (default 60), no sample may exceed the highest
/// one taken during warm-up by more than the bounds below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ten minutes: scripts/crash.sh --leak"]
async fn leak_check_under_load_with_pushes() {
    /// RSS may grow by this much over its warm-up high (KiB) ...
    const RSS_SLACK_KIB: u64 = 32 * 1024;
    /// ... or by this share of it, whichever is larger.
    const RSS_SLACK_SHARE: f64 = 0.25;
    /// Open descriptors may grow by this many over their warm-up high
    /// (connections come and go with the load's bursts).
    const FD_SLACK: u64 = 64;

    let secs = env_u64("ROLLOUT_LEAK_SECS", 600);
    let warmup = env_u64("ROLLOUT_LEAK_WARMUP_SECS", 60).min(secs / 2);
    let every = env_u64("ROLLOUT_LEAK_SAMPLE_SECS", 5).max(1);
    let rps = env_u64("ROLLOUT_LEAK_RPS", 300);
    let scratch = Scratch::new("leak");
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let mut edges = Vec::new();
    for i in 0..2 {
        let mut spec = EdgeSpec::new(&scratch.0, &format!("edge-{i}"), &old.url(), &new.url());
        edges.push(spec.start().await);
    }
    let mut spec = ControlSpec::new(&scratch.0);
    let mut control = spec.start().await;
    let client = client();
    register(
        &client,
        &control.url(),
        &edges.iter().map(Proc::url).collect::<Vec<_>>(),
    )
    .await;
    let procs: Vec<(String, u32)> = [("rollout serve".to_owned(), control.pid())]
        .into_iter()
        .chain(
            edges
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("rollout-host {i}"), e.pid())),
        )
        .collect();

    let load = Load::start(edges.iter().map(|e| e.addr).collect(), rps);
    let stop = Arc::new(AtomicBool::new(false));
    let pushes = {
        let (client, url, stop) = (client.clone(), control.url(), stop.clone());
        let (old, new) = (old.url(), new.url());
        tokio::spawn(async move {
            let (mut expected, mut n, mut made, mut failed) = (0, 0u64, 0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let doc = config(&old, &new, (n % 101) as f64, json!({}));
                match commit(&client, &url, &mut expected, &doc).await {
                    Ok(Some(_)) => made += 1,
                    Ok(None) => {}
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (made, failed)
        })
    };

    let started = Instant::now();
    let mut samples: HashMap<String, Vec<(f64, u64, u64)>> = HashMap::new();
    while started.elapsed() < Duration::from_secs(secs) {
        let at = started.elapsed().as_secs_f64();
        for (name, pid) in &procs {
            let (rss, fds) = sample(*pid);
            samples
                .entry(name.clone())
                .or_default()
                .push((at, rss, fds));
        }
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (made, failed) = pushes.await.expect("pusher");
    let figures = load.stop().await;
    control.kill().await;

    let mut problems = Problems::default();
    for e in failed {
        problems.add(format!("a commit failed: {e}"));
    }
    for (e, n) in &figures.errors {
        problems.add(format!("{n} requests failed: {e}"));
    }
    println!(
        "crash: leak check: {secs} s, {} requests ({:.0}/s, {} errors), {made} commits, samples every {every} s, warm-up {warmup} s",
        figures.sent,
        figures.rate(),
        figures.errors()
    );
    for (name, _) in &procs {
        let all = &samples[name];
        let (during, after): (Vec<_>, Vec<_>) = all.iter().partition(|s| s.0 < warmup as f64);
        let (Some(first), Some(last)) = (after.first(), after.last()) else {
            problems.add(format!("{name}: no samples after warm-up"));
            continue;
        };
        let high = |v: &[&(f64, u64, u64)], f: fn(&(f64, u64, u64)) -> u64| {
            v.iter().map(|s| f(s)).max().unwrap_or(0)
        };
        let (warm_rss, warm_fds) = (high(&during, |s| s.1), high(&during, |s| s.2));
        let (max_rss, max_fds) = (high(&after, |s| s.1), high(&after, |s| s.2));
        let rss_bound = warm_rss + RSS_SLACK_KIB.max((warm_rss as f64 * RSS_SLACK_SHARE) as u64);
        let fd_bound = warm_fds + FD_SLACK;
        println!(
            "crash: leak check: {name}: RSS first {} / last {} / max {max_rss} KiB after warm-up \
             (at start {} KiB, warm-up high {warm_rss} KiB, bound {rss_bound} KiB); \
             fds first {} / last {} / max {max_fds} after warm-up (at start {}, warm-up high {warm_fds}, bound {fd_bound})",
            first.1, last.1, all[0].1, first.2, last.2, all[0].2
        );
        if max_rss > rss_bound {
            problems.add(format!(
                "{name}: RSS grew to {max_rss} KiB, past {rss_bound} KiB"
            ));
        }
        if max_fds > fd_bound {
            problems.add(format!(
                "{name}: open descriptors grew to {max_fds}, past {fd_bound}"
            ));
        }
        if first.1 == 0 {
            problems.add(format!("{name}: no RSS could be read"));
        }
    }
    problems.assert_none("leak check");
}
