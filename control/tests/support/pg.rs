//! A temporary PostgreSQL cluster for the data tests: Debian's server
//! binaries, a free loopback port, WAL archiving, base backups and
//! point-in-time recovery into a copy. Every server a [`Pg`] starts is
//! stopped when it is dropped, and its directory is removed with the last
//! handle.
//!
//! initdb and postgres refuse to run as root: as root, they (and
//! pg_basebackup, and the copies of its backups) run as `nobody`, through
//! `setpriv`, in a directory that user owns. `psql` runs as the caller, over
//! TCP, as the cluster's superuser (trust authentication, loopback only).

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The cluster's superuser (`initdb -U`).
pub const SUPERUSER: &str = "postgres";
/// The database every helper connects to; created when the cluster starts.
pub const DATABASE: &str = "shop";

/// How long a server may take to accept connections, or a copy to recover.
const START_LIMIT: Duration = Duration::from_secs(60);

/// libpq and server variables that would redirect a command run here.
const PG_VARS: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGCLUSTER",
    "PGTARGETSESSIONATTRS",
];

/// The server binaries: `$ROLLOUT_PG_BIN`, or Debian's
/// `/usr/lib/postgresql/<N>/bin` with the highest N (not on PATH there).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROLLOUT_PG_BIN") {
        return PathBuf::from(dir);
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten();
    let newest = versions
        .filter_map(|e| {
            let e = e.ok()?;
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((n, bin))
        })
        .max_by_key(|(n, _)| *n);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server is not installed (no /usr/lib/postgresql/<N>/bin/initdb): \
             apt-get install postgresql (scripts/test.sh does), or set ROLLOUT_PG_BIN"
        ),
    }
}

/// Who runs the server binaries.
#[derive(Debug, Clone, Copy)]
enum RunAs {
    /// The caller, who is not root.
    Caller,
    /// This uid and gid (the caller is root).
    User(u32, u32),
}

impl RunAs {
    fn detect() -> RunAs {
        // /proc/self belongs to the process's effective user.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            return RunAs::Caller;
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "nobody"])
                .output()
                .expect("id runs");
            assert!(
                out.status.success(),
                "the tests run as root and there is no user nobody to run PostgreSQL as"
            );
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("a numeric id")
        };
        RunAs::User(id("-u"), id("-g"))
    }

    /// `program` as this user, in `dir`, with no PG* variable of ours.
    fn command(self, program: &Path, dir: &Path) -> Command {
        let mut cmd = match self {
            RunAs::Caller => Command::new(program),
            RunAs::User(uid, gid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "--"])
                    .arg(program);
                c
            }
        };
        for v in PG_VARS {
            cmd.env_remove(v);
        }
        cmd.env("LC_ALL", "C").current_dir(dir);
        cmd
    }

    /// Creates `path` (a directory) owned by this user.
    fn mkdir(self, path: &Path) {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.own(path);
    }

    /// Gives `path` to this user.
    fn own(self, path: &Path) {
        if let RunAs::User(uid, gid) = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

/// Runs `cmd` to the end; panics with its output unless it succeeds.
fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port nothing listens on now (the server may still lose a race for it:
/// [`Pg`] retries).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The temporary directory every server of one cluster lives in; removed
/// when the last handle goes.
#[derive(Debug)]
struct Root {
    dir: PathBuf,
    bin: PathBuf,
    user: RunAs,
    archive: PathBuf,
    sockets: PathBuf,
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA (`ca.crt`) and a server certificate it issued for `localhost` and
/// `127.0.0.1`, made with openssl in `dir`: the server's (certificate, key).
fn certify(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir);
        run(cmd, &format!("openssl {}", args.join(" ")));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=rollout test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("extensions file");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("key mode");
    (dir.join("server.crt"), key)
}

/// How to reach a server with psql: cheap to clone into a task.
#[derive(Debug, Clone)]
pub struct Conn {
    psql: PathBuf,
    pub port: u16,
}

impl Conn {
    fn command(&self, sql: &str) -> Vec<String> {
        [
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            DATABASE,
            "-c",
            sql,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs `sql` (one or more statements); its output, trimmed. Panics
    /// on an error.
    pub fn psql(&self, sql: &str) -> String {
        let mut cmd = Command::new(&self.psql);
        cmd.args(self.command(sql)).env("PGCONNECT_TIMEOUT", "10");
        for v in PG_VARS {
            cmd.env_remove(v);
        }
        run(cmd, &format!("psql -c {sql:?}")).trim().to_owned()
    }

    /// The same from async code, without blocking a runtime thread: the
    /// output, or psql's error.
    pub async fn query(&self, sql: &str) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new(&self.psql);
        cmd.args(self.command(sql))
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for v in PG_VARS {
            cmd.env_remove(v);
        }
        let out = cmd.output().await.map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Runs `sql`; `None` on any error.
    fn query_now(&self, sql: &str) -> Option<String> {
        let mut cmd = Command::new(&self.psql);
        cmd.args(self.command(sql))
            .env("PGCONNECT_TIMEOUT", "2")
            .stdin(Stdio::null());
        for v in PG_VARS {
            cmd.env_remove(v);
        }
        let out = cmd.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// [`Conn::psql`] in another database.
    fn psql_in(&self, db: &str, sql: &str) -> String {
        let mut args = self.command(sql);
        let i = args.iter().position(|a| a == "-d").expect("-d") + 1;
        args[i] = db.to_owned();
        let mut cmd = Command::new(&self.psql);
        cmd.args(args);
        for v in PG_VARS {
            cmd.env_remove(v);
        }
        run(cmd, &format!("psql -d {db} -c {sql:?}"))
            .trim()
            .to_owned()
    }

    /// A number `sql` selects.
    pub fn count(&self, sql: &str) -> i64 {
        let out = self.psql(sql);
        out.parse()
            .unwrap_or_else(|e| panic!("{sql}: not a number ({e}): {out:?}"))
    }
}

/// A running PostgreSQL server on 127.0.0.1: the cluster [`Pg::start`]
/// made, or a copy [`Pg::recover_copy`] recovered from its backup.
#[derive(Debug)]
pub struct Pg {
    root: Arc<Root>,
    data: PathBuf,
    log: PathBuf,
    server: Option<Child>,
    conn: Conn,
}

impl Pg {
    /// initdb, then a server with WAL archiving into its own archive
    /// directory, on a free port; database [`DATABASE`] created.
    pub fn start(name: &str) -> Pg {
        Pg::start_with(name, false)
    }

    /// The same, also taking TLS (`ssl=on`) with a certificate for
    /// `localhost` and `127.0.0.1` issued by a CA made for it:
    /// [`Pg::ca`] is that CA's certificate.
    pub fn start_tls(name: &str) -> Pg {
        Pg::start_with(name, true)
    }

    /// The CA certificate (PEM) a server from [`Pg::start_tls`] is
    /// certified by.
    pub fn ca(&self) -> PathBuf {
        self.root.dir.join("ca.crt")
    }

    fn start_with(name: &str, tls: bool) -> Pg {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bin = bin_dir();
        let user = RunAs::detect();
        let dir = std::env::temp_dir().join(format!(
            "rollout-pg-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        user.mkdir(&dir);
        let root = Arc::new(Root {
            archive: dir.join("archive"),
            sockets: dir.join("sockets"),
            dir,
            bin,
            user,
        });
        user.mkdir(&root.archive);
        user.mkdir(&root.sockets);

        let data = root.dir.join("data");
        let mut initdb = user.command(&root.bin.join("initdb"), &root.dir);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            // This cluster lives for one test: no need to fsync its files.
            .arg("--no-sync");
        run(initdb, "initdb");

        let archive = root.archive.display();
        let mut settings = vec![
            "wal_level=replica".to_owned(),
            "archive_mode=on".to_owned(),
            format!("archive_command=test ! -f '{archive}/%f' && cp '%p' '{archive}/%f'"),
        ];
        if tls {
            let (cert, key) = certify(&root.dir);
            root.user.own(&cert);
            root.user.own(&key);
            settings.extend([
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", cert.display()),
                format!("ssl_key_file={}", key.display()),
            ]);
        }
        let pg = Pg::launch(root, data, "live", &settings);
        pg.conn
            .psql_in("postgres", &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    /// Starts a server on `data` on a free port (another if it loses the
    /// port to someone), and waits until it accepts connections.
    fn launch(root: Arc<Root>, data: PathBuf, name: &str, settings: &[String]) -> Pg {
        let log = root.dir.join(format!("{name}.log"));
        for _attempt in 0..5 {
            let port = free_port();
            // Each attempt's own log: an earlier port clash is not this one's error.
            let file = std::fs::File::create(&log).expect("server log");
            let mut cmd = root.user.command(&root.bin.join("postgres"), &root.dir);
            cmd.arg("-D").arg(&data);
            let fixed = [
                "listen_addresses=127.0.0.1".to_owned(),
                format!("port={port}"),
                format!("unix_socket_directories={}", root.sockets.display()),
                // One test's cluster: crash safety is not what it tests.
                "fsync=off".to_owned(),
                "logging_collector=off".to_owned(),
            ];
            for s in fixed.iter().chain(settings) {
                cmd.arg("-c").arg(s);
            }
            let server = cmd
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log"))
                .stderr(file)
                .spawn()
                .expect("postgres starts");
            let mut pg = Pg {
                conn: Conn {
                    psql: root.bin.join("psql"),
                    port,
                },
                root: root.clone(),
                data: data.clone(),
                log: log.clone(),
                server: Some(server),
            };
            match pg.wait_ready() {
                Ok(()) => return pg,
                Err(log) if log.contains("could not bind") || log.contains("in use") => {
                    // Drop reaps it; try another port.
                }
                Err(log) => panic!("postgres on {} did not start:\n{log}", data.display()),
            }
        }
        panic!("postgres found no free port in 5 tries ({})", log.display())
    }

    /// Waits until the server accepts connections; its log when it exits
    /// first or takes too long.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if self.exited() {
                return Err(self.log_tail());
            }
            let mut ready = self
                .root
                .user
                .command(&self.root.bin.join("pg_isready"), &self.root.dir);
            ready
                .args(["-q", "-h", "127.0.0.1", "-t", "1", "-p"])
                .arg(self.conn.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if ready.status().is_ok_and(|s| s.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not accepting connections after {START_LIMIT:?}\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server process has ended.
    fn exited(&mut self) -> bool {
        self.server
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }

    /// Starts a watcher that stops this server (immediate shutdown) and
    /// removes its directory once process `pid` has exited: for a server
    /// that lives in a static, which is never dropped.
    #[expect(
        clippy::zombie_processes,
        reason = "the watcher outlives this process on purpose; init reaps it"
    )]
    pub fn stop_after(&self, pid: u32) {
        let Some(server) = self.server.as_ref().map(Child::id) else {
            return;
        };
        let dir = self.root.dir.display();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             kill -QUIT {server} 2>/dev/null; \
             for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 {server} 2>/dev/null || break; sleep 0.5; done; \
             rm -rf '{dir}'"
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the watcher starts");
    }

    /// The connection, to clone into tasks.
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.conn.port
    }

    /// Runs `sql` in [`DATABASE`] as the superuser; the output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        self.conn.psql(sql)
    }

    /// A number `sql` selects.
    pub fn count(&self, sql: &str) -> i64 {
        self.conn.count(sql)
    }

    /// What a hook command needs to reach this server: the libpq variables,
    /// and PSQL (the client of the same installation, which
    /// examples/hooks/pg-restore-point.sh runs).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".to_owned()),
            ("PGPORT", self.conn.port.to_string()),
            ("PGUSER", SUPERUSER.to_owned()),
            ("PGDATABASE", DATABASE.to_owned()),
            ("PSQL", self.conn.psql.display().to_string()),
        ]
    }

    /// The WAL archive `archive_command` copies segments into.
    pub fn archive(&self) -> &Path {
        &self.root.archive
    }

    /// `pg_basebackup` (fast checkpoint, the WAL it needs streamed along)
    /// into a new directory `name` beside the cluster; its path.
    pub fn base_backup(&self, name: &str) -> PathBuf {
        let dest = self.root.dir.join(name);
        let mut cmd = self
            .root
            .user
            .command(&self.root.bin.join("pg_basebackup"), &self.root.dir);
        cmd.args(["-h", "127.0.0.1", "-U", SUPERUSER, "-p"])
            .arg(self.conn.port.to_string())
            .arg("-D")
            .arg(&dest)
            .args(["-X", "stream", "--checkpoint=fast", "--no-sync"]);
        run(cmd, "pg_basebackup");
        dest
    }

    /// Ends the current WAL segment and waits until `archive_command` has
    /// archived it, so everything written so far (a restore point too) can
    /// be recovered from the archive. The segment's name.
    pub fn switch_wal(&self) -> String {
        let segment = self.psql("SELECT pg_walfile_name(pg_switch_wal())");
        let path = self.root.archive.join(&segment);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.is_file() {
            assert!(
                Instant::now() < deadline,
                "WAL segment {segment} not archived within 30 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        segment
    }

    /// Point-in-time recovery into a copy: `backup` (from
    /// [`Pg::base_backup`], older than the point) copied into a new
    /// directory, recovery settings appended to its postgresql.conf
    /// (`restore_command` from this cluster's archive, `recovery_target_name`,
    /// `recovery_target_action = 'promote'`, no archiving of its own),
    /// recovery.signal, started on another free port. Returns once recovery
    /// has ended (`pg_is_in_recovery()` is false). This cluster is left as
    /// it is.
    pub fn recover_copy(&self, backup: &Path, target: &str) -> Pg {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("copy-{}", N.fetch_add(1, Ordering::SeqCst));
        let data = self.root.dir.join(&name);
        let mut cp = self.root.user.command(Path::new("cp"), &self.root.dir);
        cp.arg("-a").arg(backup).arg(&data);
        run(cp, "copying the base backup");

        assert!(
            target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "restore point name {target:?}"
        );
        let archive = self.root.archive.display();
        let conf = data.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .expect("the copy's postgresql.conf");
        write!(
            f,
            "\n# Point-in-time recovery into this copy.\n\
             restore_command = 'cp \"{archive}/%f\" \"%p\"'\n\
             recovery_target_name = '{target}'\n\
             recovery_target_action = 'promote'\n\
             archive_mode = off\n"
        )
        .expect("recovery settings");
        drop(f);
        let signal = data.join("recovery.signal");
        std::fs::write(&signal, "").expect("recovery.signal");
        self.root.user.own(&signal);

        let started = Instant::now();
        let mut copy = Pg::launch(self.root.clone(), data, &name, &[]);
        loop {
            if copy.conn.query_now("SELECT pg_is_in_recovery()").as_deref() == Some("f") {
                return copy;
            }
            if copy.exited() || started.elapsed() > START_LIMIT {
                panic!(
                    "the copy did not finish recovering to {target:?}:\n{}",
                    copy.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pg {
    /// Stops the server (immediate shutdown: this server's state is thrown
    /// away with its directory) and waits for it to exit.
    fn drop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        if server.try_wait().ok().flatten().is_none() {
            let mut stop = self
                .root
                .user
                .command(&self.root.bin.join("pg_ctl"), &self.root.dir);
            stop.arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "20"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = stop.status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = server.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.wait();
    }
}
