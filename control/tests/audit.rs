//! `rollout audit --verify` against a real store: a history the service
//! wrote verifies; the same history with a body changed, a parent link
//! broken, a version removed or the wrong key does not, and the failure
//! names the version and what is wrong.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

/// A control service's store with versions 1 to 4 (no edges), copied out of
/// the killed service: a SQLite file, or (on PostgreSQL) a database.
async fn history(scratch: &Scratch) -> PathBuf {
    let mut control = Control::start(&scratch.0).await;
    let (old, new) = ("http://127.0.0.1:9001", "http://127.0.0.1:9002");
    for (i, weight) in [1.0, 5.0, 25.0, 50.0].into_iter().enumerate() {
        let path = scratch.path(&format!("v{i}.json"));
        let doc = config(old, new, weight, serde_json::json!({}));
        std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("config file");
        let file = path.to_string_lossy().into_owned();
        control.cli(DEPLOY, &["push", &file]).await.ok();
    }
    control.kill().await;
    if on_postgres() {
        return pg_copy(control.db(), "copy");
    }
    // A copy holding everything the killed service committed (its WAL too).
    let copy = scratch.path("copy.sqlite");
    let conn = rusqlite::Connection::open(scratch.path("control.sqlite")).expect("open store");
    conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
        .expect("copy store");
    copy
}

/// A copy of `db` named `name` with `sql` (SQLite) or `pg` (PostgreSQL) run
/// on it, version triggers and foreign keys lifted first.
fn tampered(db: &Path, name: &str, sql: &str, pg: &str) -> PathBuf {
    if on_postgres() {
        let copy = pg_copy(db, name);
        store_exec(
            &copy,
            "",
            &format!("SET session_replication_role = replica; {pg}"),
        );
        return copy;
    }
    let out = db.with_file_name(format!("{name}.sqlite"));
    std::fs::copy(db, &out).expect("copy");
    let conn = rusqlite::Connection::open(&out).expect("open copy");
    conn.execute_batch(
        "DROP TRIGGER versions_no_update; DROP TRIGGER versions_no_delete; PRAGMA foreign_keys = OFF;",
    )
    .expect("lift triggers");
    conn.execute_batch(sql).expect("tamper");
    out
}

async fn verify(db: &Path, extra: &[&str]) -> Run {
    let db = db.to_string_lossy().into_owned();
    let mut args = vec!["audit", "--verify", "--db", &db];
    args.extend(extra);
    // No service is needed: the check reads the file.
    cli("http://127.0.0.1:9", READ, &args).await
}

fn public_key() -> String {
    secret().public_key().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_an_intact_history_and_names_every_break() {
    let scratch = Scratch::new("audit");
    let db = history(&scratch).await;
    let pk = public_key();

    let run = verify(&db, &["--public-key", &pk]).await.ok();
    assert!(
        run.stdout.contains("4 versions (1..=4) verify"),
        "{}",
        run.stdout
    );
    let run = verify(&db, &["--public-key", &pk, "--output", "json"])
        .await
        .ok();
    let report = run.json();
    assert_eq!(
        (&report["ok"], &report["versions"], &report["last"]),
        (&Value::Bool(true), &Value::from(4), &Value::from(4))
    );
    // The service's key file works as well as the public key.
    let key_file = scratch.path("control.key").to_string_lossy().into_owned();
    verify(&db, &["--key", &key_file]).await.ok();

    // A changed body: its digest, its signature and the next version's parent break.
    let body = tampered(
        &db,
        "body",
        "UPDATE versions SET body = CAST(replace(CAST(body AS TEXT), '\"reason\":\"push\"', '\"reason\":\"hush\"') AS BLOB)
         WHERE version = 2",
        "UPDATE versions SET body = convert_to(replace(convert_from(body, 'UTF8'),
            '\"reason\":\"push\"', '\"reason\":\"hush\"'), 'UTF8')
         WHERE version = 2",
    );
    let run = verify(&body, &["--public-key", &pk, "--output", "json"]).await;
    assert_eq!(run.code, 9, "{} {}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["ok"], false);
    let breaks: Vec<(u64, String)> = report["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .map(|b| {
            (
                b["version"].as_u64().expect("version"),
                b["kind"].as_str().expect("kind").to_owned(),
            )
        })
        .collect();
    for want in [
        (2, "digest"),
        (2, "metadata"),
        (2, "signature"),
        (3, "parent"),
    ] {
        assert!(
            breaks.contains(&(want.0, want.1.to_owned())),
            "{want:?} in {breaks:?}"
        );
    }
    let text = verify(&body, &["--public-key", &pk]).await;
    assert_eq!(text.code, 9);
    assert!(
        text.stdout.contains("version 2: the body's SHA-256 is"),
        "{}",
        text.stdout
    );
    assert!(text.stderr.contains("does not verify"), "{}", text.stderr);

    // A broken parent link.
    let relink = format!(
        "UPDATE versions SET parent = '{}' WHERE version = 3",
        "ab".repeat(32)
    );
    let parent = tampered(&db, "parent", &relink, &relink);
    let run = verify(&parent, &["--public-key", &pk]).await;
    assert_eq!(run.code, 9, "{}", run.stdout);
    assert!(
        run.stdout.contains("version 3: the stored parent is abab"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("not the digest of version 2's body"),
        "{}",
        run.stdout
    );

    // A version removed: the numbering and the next link break.
    let remove = "DELETE FROM versions WHERE version = 2";
    let removed = tampered(&db, "removed", remove, remove);
    let run = verify(&removed, &["--public-key", &pk]).await;
    assert_eq!(run.code, 9, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("version 3: follows version 1: version 2 missing"),
        "{}",
        run.stdout
    );
    // Gaps may be allowed; the broken link still fails.
    let run = verify(&removed, &["--public-key", &pk, "--allow-gaps"]).await;
    assert_eq!(run.code, 9, "{}", run.stdout);
    assert!(!run.stdout.contains("missing"), "{}", run.stdout);
    assert!(
        run.stdout.contains("note: versions 2..=2"),
        "{}",
        run.stdout
    );

    // Another key: every signature fails, from the first version.
    let other = rollout_core::SecretKey::from_seed([3; 32])
        .public_key()
        .to_string();
    let run = verify(&db, &["--public-key", &other]).await;
    assert_eq!(run.code, 9, "{}", run.stdout);
    assert!(
        run.stdout.starts_with("version 1: the signature"),
        "{}",
        run.stdout
    );

    // Usage: a key is needed, and the file must exist.
    assert_eq!(verify(&db, &[]).await.code, 2);
    let missing = scratch.path("missing.sqlite");
    let run = verify(&missing, &["--public-key", &pk]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!missing.exists(), "the check creates no store");
}

/// Through two key rotations (A to B, A retired, B to C, B retired) each
/// version is checked with the keys its predecessor declares: the history
/// verifies from the key the edges were deployed with, and not from the key
/// file alone once that no longer holds the first signer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_follows_key_rotations() {
    let scratch = Scratch::new("audit-rotation");
    let control = Control::start(&scratch.0).await;
    let push = |name: &str, weight: f64| {
        let path = scratch.path(name);
        let doc = config(
            "http://127.0.0.1:9001",
            "http://127.0.0.1:9002",
            weight,
            serde_json::json!({}),
        );
        std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("config file");
        path.to_string_lossy().into_owned()
    };
    control
        .cli(DEPLOY, &["push", &push("v1.json", 1.0)])
        .await
        .ok();
    let key_file = scratch.path("control.key");
    let first_id = |path: &Path| {
        let text = std::fs::read_to_string(path).expect("key file");
        let line = text
            .lines()
            .find(|l| l.starts_with("ed25519-secret:"))
            .expect("a key");
        line.parse::<rollout_core::SecretKey>()
            .expect("secret key")
            .public_key()
            .id()
            .to_string()
    };
    let a_id = first_id(&key_file);
    control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
    control
        .cli(ADMIN, &["keygen", "--retire", &a_id])
        .await
        .ok();
    let b_id = first_id(&key_file);
    assert_ne!(a_id, b_id);
    control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
    control
        .cli(ADMIN, &["keygen", "--retire", &b_id])
        .await
        .ok();
    control
        .cli(DEPLOY, &["push", &push("v6.json", 50.0)])
        .await
        .ok();

    let db = control.db().to_owned();
    let a = public_key();
    let run = verify(&db, &["--public-key", &a]).await.ok();
    assert!(
        run.stdout.contains("6 versions (1..=6) verify"),
        "{}",
        run.stdout
    );
    // The key file now holds C only, which did not sign version 1.
    let key_path = key_file.to_string_lossy().into_owned();
    let run = verify(&db, &["--key", &key_path]).await;
    assert_eq!(run.code, 9, "{}", run.stdout);
    assert!(
        run.stdout.starts_with("version 1: the signature"),
        "{}",
        run.stdout
    );
    // Both together: A for the start, C ignored once versions declare keys.
    verify(&db, &["--key", &key_path, "--public-key", &a])
        .await
        .ok();
}
