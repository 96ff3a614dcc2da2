//! Key rotation, break glass and adoption from the outside: an operator's
//! mistakes, a lying edge, the holder of a retired key or a deploy token.
//!
//! `held_up`: properties that held from the start.
//! `findings`: properties an adversarial pass found broken, each fixed
//! since; these are their regression tests.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rollout_control::keys::Keyring;
use rollout_core::{Digest, EnvelopeDoc, SecretKey};
use support::*;

/// An edge's GET reply.
async fn report(edge: SocketAddr) -> serde_json::Value {
    client()
        .get(format!("http://{edge}{}", rollout_core::edge::ADMIN_PATH))
        .send()
        .await
        .expect("edge answers")
        .json()
        .await
        .expect("json")
}

/// The keys in the control service's key file now.
fn key_file(rig: &Rig) -> Keyring {
    let text = std::fs::read_to_string(rig.scratch.path("control.key")).expect("key file");
    Keyring::parse(&text).expect("a key file")
}

/// The stored digest of `version`.
async fn digest_of(control: &Control, version: u64) -> Digest {
    control.get(&format!("/v1/versions/{version}")).await["digest"]
        .as_str()
        .expect("a digest")
        .parse()
        .expect("hex digest")
}

/// An envelope body as break glass makes one: `version` over `parent`,
/// declaring `keys`.
fn envelope(rig: &Rig, version: u64, parent: Option<Digest>, keys: &[&SecretKey]) -> Vec<u8> {
    EnvelopeDoc {
        version,
        parent,
        issued_at: rollout_control::time::format_ms(rollout_control::store::now_ms()),
        actor: "break-glass:ops".into(),
        reason: "adversarial".into(),
        config: config(&rig.old.url(), &rig.new.url(), 50.0, serde_json::json!({})),
        keys: Some(keys.iter().map(|k| k.public_key().to_string()).collect()),
    }
    .to_body()
}

/// `rollout adopt` of (`body`, `signature`) with the deploy token.
async fn adopt(control: &Control, rig: &Rig, name: &str, body: &[u8], signature: &str) -> Run {
    let path = rig.scratch.path(name);
    let record = rollout_api::AdoptRequest {
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
        signature: signature.to_owned(),
    };
    std::fs::write(&path, serde_json::to_vec(&record).expect("json")).expect("record");
    control
        .cli(
            DEPLOY,
            &["adopt", path.to_str().expect("utf-8"), "--output", "json"],
        )
        .await
}

/// `rollout push FILE --direct --key KEY --edge ...` (no service needed).
async fn break_glass(rig: &Rig, weight: f64, key: &Path, edges: &[String]) -> Run {
    let file = rig.config(&format!("bg-{weight}.json"), weight);
    let record = rig.scratch.path(&format!("bg-{weight}.record.json"));
    let mut args = vec![
        "push".to_owned(),
        file,
        "--direct".to_owned(),
        "--key".to_owned(),
        key.to_string_lossy().into_owned(),
        "--record".to_owned(),
        record.to_string_lossy().into_owned(),
    ];
    for e in edges {
        args.extend(["--edge".to_owned(), e.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli("http://127.0.0.1:9", READ, &args).await
}

/// A push as an edge received it: body and `rollout-signature`.
type Pushed = (Vec<u8>, String);

/// An edge that lies: its GET says it holds `version` (with a made-up
/// digest and no key list); every PUT is answered 503. Counts PUTs.
struct LyingEdge {
    addr: SocketAddr,
    puts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LyingEdge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LyingEdge {
    async fn start(version: u64) -> LyingEdge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let puts = Arc::new(AtomicU64::new(0));
        let counted = puts.clone();
        let reply = serde_json::json!({
            "version": version,
            "digest": "ab".repeat(32),
            "keys": [],
        });
        let app = axum::Router::new().route(
            rollout_core::edge::ADMIN_PATH,
            axum::routing::get(move || {
                let reply = reply.clone();
                async move { axum::Json(reply) }
            })
            .put(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LyingEdge { addr, puts, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

mod held_up {
    use super::*;

    /// Adoption takes only a version that continues the committed chain,
    /// signed by a key the edges trust now: not a fork, not a replay, not
    /// the retired key, not an unknown key, not a signature of another body.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adopt_refuses_forks_replays_retired_and_unknown_signers() {
        let rig = Rig::start("adv-adopt").await;
        let edge = rig.edge("e").await;
        let control = rig.control(&[url(&edge)]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
        let a = secret();
        let a_id = a.public_key().id().to_string();
        control
            .cli(ADMIN, &["keygen", "--retire", &a_id])
            .await
            .ok();
        control.converged().await;
        let b = key_file(&rig).first().clone();
        let x = SecretKey::from_seed([66; 32]);
        let v2 = digest_of(&control, 2).await;
        let v3 = digest_of(&control, 3).await;

        let next = envelope(&rig, 4, Some(v3), &[&b]);
        let other = envelope(&rig, 4, Some(v3), &[&x]);
        let cases: Vec<(&str, Vec<u8>, String)> = vec![
            ("retired key", next.clone(), a.sign(&next)),
            ("unknown key", next.clone(), x.sign(&next)),
            ("unnamed retired key", next.clone(), {
                let s = a.sign(&next);
                s.split(';').next().expect("sig").to_owned()
            }),
            (
                "B's key id over A's signature",
                next.clone(),
                a.sign(&next)
                    .replace(&a_id, &b.public_key().id().to_string()),
            ),
            ("another body's signature", next.clone(), b.sign(&other)),
            ("fork from v2", envelope(&rig, 4, Some(v2), &[&b]), {
                b.sign(&envelope(&rig, 4, Some(v2), &[&b]))
            }),
            ("no parent", envelope(&rig, 4, None, &[&b]), {
                b.sign(&envelope(&rig, 4, None, &[&b]))
            }),
            ("not above v3", envelope(&rig, 3, Some(v3), &[&b]), {
                b.sign(&envelope(&rig, 3, Some(v3), &[&b]))
            }),
        ];
        for (i, (what, body, signature)) in cases.iter().enumerate() {
            // A body changes with its issued_at: sign exactly what is sent.
            let run = adopt(&control, &rig, &format!("case-{i}.json"), body, signature).await;
            assert_ne!(run.code, 0, "{what} adopted: {}", run.stdout);
            assert_eq!(control.version_count().await, 3, "{what}");
        }
        // The real thing, by B over the committed version, is adopted.
        let run = adopt(&control, &rig, "good.json", &next, &b.sign(&next)).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(control.converged().await["version"], 4);
    }

    /// Adoptions raced against commits never fork the chain: every version's
    /// parent is the version before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adopt_raced_with_commits_never_forks_the_history() {
        let rig = Rig::start("adv-adopt-race").await;
        let edge = rig.edge("e").await;
        let control = rig.control(&[url(&edge)]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        let a = secret();
        for round in 0..6u64 {
            let head = control.get("/v1/current").await;
            let head_version = head["version"].as_u64().expect("version");
            let head_digest: Digest = head["digest"]
                .as_str()
                .expect("digest")
                .parse()
                .expect("hex");
            let body = envelope(&rig, head_version + 1, Some(head_digest), &[&a]);
            let signature = a.sign(&body);
            let file = rig.config(&format!("race-{round}.json"), round as f64);
            let record = format!("race-{round}.record");
            let push_args = ["push", file.as_str()];
            let (adopted, pushed) = tokio::join!(
                adopt(&control, &rig, &record, &body, &signature),
                control.cli(DEPLOY, &push_args)
            );
            assert!(
                adopted.code == 0 || pushed.code == 0,
                "one of them lands: {} / {}",
                adopted.stderr,
                pushed.stderr
            );
        }
        let history = control.get("/v1/versions?limit=1000").await;
        let versions = history["versions"].as_array().expect("versions");
        for pair in versions.windows(2) {
            assert_eq!(
                pair[0]["parent"], pair[1]["digest"],
                "{} follows {}",
                pair[0]["version"], pair[1]["version"]
            );
        }
        assert_eq!(control.converged().await["version"], versions[0]["version"]);
    }

    /// An edge away through two whole rotations (A to B, A retired, B to
    /// C, B retired) is taken through both, one signed step at a time, and
    /// never offered a version below what it holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edge_down_through_two_rotations_is_brought_through_both() {
        let rig = Rig::start("adv-two-rotations").await;
        let (late, gate, control) = rig.gated("late").await;
        gate.set(DOWN);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a_id = secret().public_key().id().to_string();
        control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
        control
            .cli(ADMIN, &["keygen", "--retire", &a_id])
            .await
            .ok();
        let b_id = key_file(&rig).first().public_key().id().to_string();
        control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
        control
            .cli(ADMIN, &["keygen", "--retire", &b_id])
            .await
            .ok();
        control
            .cli(DEPLOY, &["push", &rig.config("v6.json", 100.0)])
            .await
            .ok();
        assert_eq!(held(late.addr).await.0, 1);
        gate.set(PASS);
        let status = control.converged().await;
        assert_eq!(
            (status["version"].as_u64(), held(late.addr).await.0),
            (Some(6), 6),
            "{status}"
        );
        let c_id = key_file(&rig).first().public_key().id().to_string();
        assert_eq!(report(late.addr).await["keys"], serde_json::json!([c_id]));
    }

    /// Break glass signs with the first key in its file that every named
    /// edge trusts: mid-rotation, with one edge still on A alone and the
    /// other on B and A, that is A, and both take the push.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn break_glass_signs_with_a_key_every_named_edge_trusts() {
        let rig = Rig::start("adv-bg-signer").await;
        let ahead = rig.edge("ahead").await;
        let behind = rig.edge("behind").await;
        let gate = Gate::start(behind.addr).await;
        let mut control = rig.control(&[url(&ahead), gate.url()]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        gate.set(DOWN);
        tokio::time::sleep(Duration::from_millis(100)).await;
        control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
        control
            .cli(DEPLOY, &["push", &rig.config("v3.json", 10.0)])
            .await
            .ok();
        let on_three = eventually(Duration::from_secs(10), || async {
            held(ahead.addr).await.0 == 3
        })
        .await;
        assert!(on_three);
        control.kill().await;
        gate.set(PASS);
        assert_eq!(
            report(behind.addr).await["keys"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            report(ahead.addr).await["keys"].as_array().map(Vec::len),
            Some(2)
        );
        let key = rig.scratch.path("control.key");
        let run = break_glass(&rig, 100.0, &key, &[url(&ahead), gate.url()]).await;
        assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
        assert_eq!(held(ahead.addr).await.0, 4);
        assert_eq!(held(behind.addr).await.0, 4);
    }
}

mod findings {
    use super::*;

    /// Regression (lock-out by an operator's first step): `keygen --rotate`
    /// before any version exists puts the new key B first, and with no
    /// version yet the service takes "the first key" to be what edges
    /// trust (`/v1/keys` says B is trusted by edges, A is not). Edges were
    /// deployed with A, so version 1 is signed by B and refused by every
    /// edge; it declares B and A, so every later version is signed by B
    /// too, and refused too. No edge ever takes a version until an operator
    /// thinks of retiring the new key B.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_before_the_first_version_keeps_signing_with_the_key_edges_trust() {
        let rig = Rig::start("adv-rotate-first").await;
        let edge = rig.edge("e").await;
        let control = rig.control(&[url(&edge)]).await;
        // Refused until a first version lands: edges trust only the key they
        // were deployed with, so that key must sign first.
        let rotated = control
            .cli(ADMIN, &["keygen", "--rotate", "--output", "json"])
            .await;
        assert_eq!(rotated.code, 3, "{}", rotated.stderr);
        assert!(
            rotated.stderr.contains("no version yet"),
            "{}",
            rotated.stderr
        );
        let rotated = rotated.stderr;
        let mut outcomes = Vec::new();
        for (n, weight) in [(1, 10.0), (2, 20.0)] {
            let run = control
                .cli(
                    DEPLOY,
                    &[
                        "push",
                        &rig.config(&format!("v{n}.json"), weight),
                        "--wait",
                        "--timeout",
                        "10s",
                    ],
                )
                .await;
            outcomes.push((run.code, held(edge.addr).await.0));
        }
        let status = control.status().await;
        assert_eq!(
            outcomes,
            [(0, 1), (0, 2)],
            "(exit, version the edge holds) after each push.\nkeys after --rotate: {rotated}\nedge: {}",
            status["edges"][0]["error"]
        );
    }

    /// Regression (a retired key trusted again): an operator breaks glass with
    /// a backup of the key file taken between `--rotate` and `--retire` (it
    /// holds B and the retired A). Break glass signs with B, which every
    /// edge trusts, but declares every key in the file: edges trust A
    /// again, and a push signed with A, freshly stamped, lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn break_glass_with_a_stale_key_file_never_trusts_a_retired_key_again() {
        let rig = Rig::start("adv-stale-bg").await;
        let edge = rig.edge("e").await;
        let mut control = rig.control(&[url(&edge)]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
        let backup = rig.scratch.path("backup.key");
        std::fs::copy(rig.scratch.path("control.key"), &backup).expect("backup");
        let a = secret();
        let a_id = a.public_key().id().to_string();
        control
            .cli(ADMIN, &["keygen", "--retire", &a_id])
            .await
            .ok();
        control.converged().await;
        let b_id = key_file(&rig).first().public_key().id().to_string();
        assert_eq!(report(edge.addr).await["keys"], serde_json::json!([b_id]));

        // Control is down; break glass with the backup.
        control.kill().await;
        break_glass(&rig, 100.0, &backup, &[url(&edge)]).await.ok();
        let trusted = report(edge.addr).await["keys"].clone();

        // The holder of the retired key A.
        let (body, signature) = rollout_tests::envelope(
            1000,
            config(&rig.old.url(), &rig.new.url(), 0.0, serde_json::json!({})),
        );
        let (status, reply) = put_envelope(edge.addr, body, &signature).await;
        assert_eq!(
            (trusted.clone(), status),
            (serde_json::json!([b_id]), 401),
            "after break glass the edge trusts {trusted}; a push signed with retired {a_id}: {status} {reply}"
        );
    }

    /// Regression (a panic on outside input): break glass numbers its version
    /// one above the highest version any named edge reports, unchecked; an
    /// edge that reports u64::MAX makes it overflow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn break_glass_survives_an_edge_that_reports_the_largest_version() {
        let rig = Rig::start("adv-bg-overflow").await;
        let liar = LyingEdge::start(u64::MAX).await;
        let key = rig.scratch.path("bg.key");
        std::fs::write(&key, format!("{}\n", secret().to_text())).expect("key file");
        let run = break_glass(&rig, 100.0, &key, &[liar.url()]).await;
        assert!(
            run.code != 101 && !run.stderr.contains("panicked"),
            "exit {}: {}",
            run.code,
            run.stderr.trim()
        );
    }

    /// Regression (one compromised edge bricks the fleet): break glass takes
    /// its version from whatever the named edges report. A compromised edge
    /// that reports u64::MAX - 1 makes break glass push version u64::MAX to
    /// every honest edge; nothing can follow it, so the control service,
    /// back, can never bring those edges anywhere again (each refuses with
    /// 409) until their stores are wiped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lying_edge_cannot_number_break_glass_past_what_control_can_follow() {
        let rig = Rig::start("adv-bg-liar").await;
        let honest = rig.edge("honest").await;
        let mut control = rig.control(&[url(&honest)]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        control.kill().await;

        let liar = LyingEdge::start(u64::MAX - 1).await;
        let key = rig.scratch.path("control.key");
        let run = break_glass(&rig, 100.0, &key, &[liar.url(), url(&honest)]).await;
        let after_break_glass = held(honest.addr).await.0;

        control.restart().await;
        let pushed = control
            .cli(
                DEPLOY,
                &[
                    "push",
                    &rig.config("v-next.json", 10.0),
                    "--wait",
                    "--timeout",
                    "10s",
                ],
            )
            .await;
        let status = control.status().await;
        assert_eq!(
            pushed.code,
            0,
            "break glass ({}) left the honest edge at version {after_break_glass}; control's next push: {}\n{}",
            run.stdout.trim(),
            pushed.stderr.trim(),
            status["edges"][0]
        );
        // Break glass refused before sending anything, naming the limit.
        assert_ne!(run.code, 0, "{}", run.stdout);
        assert!(run.stderr.contains("at the limit"), "{}", run.stderr);
        assert_eq!(liar.puts.load(Ordering::SeqCst), 0);
    }

    /// Regression (a refused retire half-happens; racy, so the test retries
    /// the race up to 12 times): `keygen --retire A` rewrites the key file
    /// before it commits the version that retires A. When a deploy commits
    /// in between, the retire answers 409, yet A's secret is gone from the
    /// file. Running it again answers 404 "no key A to retire" and
    /// `/v1/keys` lists only B, while edges still trust A (the racing
    /// commit, signed with the ring read before the file changed, declared
    /// A again) until some later commit happens to declare the new set.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_retire_that_answers_409_leaves_the_key_file_as_it_was() {
        let rig = Rig::start("adv-retire-race").await;
        let edge = rig.edge("e").await;
        let control = rig.control(&[url(&edge)]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        let control = &control;
        for attempt in 0..12u32 {
            let rotated = control
                .cli(ADMIN, &["keygen", "--rotate", "--output", "json"])
                .await
                .ok()
                .json();
            let old = rotated["keys"][1]["id"]
                .as_str()
                .expect("the key before")
                .to_owned();
            control.converged().await;
            let deploys = futures_util::future::join_all((0..6).map(|i| async move {
                let weight = format!("{}", (attempt * 6 + i) % 100);
                control
                    .cli(DEPLOY, &["set-weight", "web", weight.as_str()])
                    .await
            }));
            let (retire, _) = tokio::join!(
                async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    control.cli(ADMIN, &["keygen", "--retire", &old]).await
                },
                deploys
            );
            if retire.code == 0 {
                continue;
            }
            control.converged().await;
            let again = control.cli(ADMIN, &["keygen", "--retire", &old]).await;
            let in_file = key_file(&rig)
                .public_keys()
                .iter()
                .any(|k| k.id().to_string() == old);
            assert!(
                in_file,
                "attempt {attempt}: retire answered {} ({}); the key file no longer holds {old}; \
                 retire again: {} ({}); the edge trusts {}",
                retire.code,
                retire.stderr.trim(),
                again.code,
                again.stderr.trim(),
                report(edge.addr).await["keys"]
            );
            return;
        }
        eprintln!("no retire lost the race in 12 attempts");
    }

    /// Regression (availability across the upgrade): versions committed before
    /// this release carry an unnamed signature and declare no keys. While
    /// such a version is the committed one, the service pushes it unstamped
    /// (`Keyring::stamp` stamps only a signature that names its key), so an
    /// edge that comes back with an empty store, or a new edge, refuses it
    /// ("holds no config ... push stamp") and stays NACK until someone
    /// commits a new version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_edge_is_restored_while_the_committed_version_predates_named_keys() {
        let rig = Rig::start("adv-legacy").await;
        let mut control = rig.control(&[]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        control.kill().await;
        // Version 1 as the release before this one wrote it.
        let a = secret();
        let body = EnvelopeDoc {
            version: 1,
            parent: None,
            issued_at: rollout_control::time::format_ms(rollout_control::store::now_ms()),
            actor: "ci".into(),
            reason: "push".into(),
            config: config(&rig.old.url(), &rig.new.url(), 0.0, serde_json::json!({})),
            keys: None,
        }
        .to_body();
        let unnamed = a.sign(&body).split(';').next().expect("sig").to_owned();
        // The store as the earlier release left it (past its immutability
        // trigger, as someone with write access to the database could).
        let (hex, digest) = (hex::encode(&body), Digest::of(&body).to_string());
        store_exec(
            control.db(),
            &format!(
                "DROP TRIGGER versions_no_update;
                 UPDATE versions SET body = X'{hex}', signature = '{unnamed}', digest = '{digest}'
                 WHERE version = 1;"
            ),
            &format!(
                "ALTER TABLE versions DISABLE TRIGGER versions_no_change;
                 UPDATE versions SET body = '\\x{hex}'::bytea, signature = '{unnamed}',
                    digest = '{digest}' WHERE version = 1;
                 ALTER TABLE versions ENABLE TRIGGER versions_no_change;"
            ),
        );
        control.restart().await;
        let edge = rig.edge("new").await;
        control
            .cli(ADMIN, &["edges", "add", &url(&edge)])
            .await
            .ok();
        let restored = eventually(Duration::from_secs(10), || async {
            held(edge.addr).await.0 == 1
        })
        .await;
        let status = control.status().await;
        assert!(restored, "the new edge: {}", status["edges"][0]);
    }

    /// Regression (low; needs write access to the key file's directory): the
    /// service rewrites its key file through `<name>.tmp`, opened with
    /// create+truncate and mode 0600, which applies only to a new file. A
    /// leftover or planted `control.tmp` keeps its own mode (or is followed
    /// if it is a symlink), and is renamed over the key file: the rotated
    /// key file, new secret included, is then world-readable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotated_key_file_is_private_whatever_temporary_file_was_there() {
        use std::os::unix::fs::PermissionsExt as _;
        let rig = Rig::start("adv-key-mode").await;
        let control = rig.control(&[]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        let tmp = rig.scratch.path("control.tmp");
        std::fs::write(&tmp, "").expect("a leftover temporary file");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
        let mode = std::fs::metadata(rig.scratch.path("control.key"))
            .expect("key file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            mode, 0o600,
            "the key file holding the new secret is mode {mode:o}"
        );
    }

    /// Regression (availability): the fan-out looks for a version that takes a
    /// lagging edge through a rotation only among the 1000 versions below
    /// the committed one (`MAX_KEY_SCAN`). An edge away through a rotation
    /// and then 1000 more versions (plans commit one per step) is never
    /// brought back: it refuses every version with 401 until redeployed.
    /// The same scan loads those 1000 versions, bodies and all, for every
    /// step, on the word of an edge's error text.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edge_down_through_a_rotation_and_a_thousand_versions_is_brought_back() {
        let rig = Rig::start("adv-key-scan").await;
        let (late, gate, control) = rig.gated("late").await;
        gate.set(DOWN);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a_id = secret().public_key().id().to_string();
        control.cli(ADMIN, &["keygen", "--rotate"]).await.ok();
        control
            .cli(ADMIN, &["keygen", "--retire", &a_id])
            .await
            .ok();
        let http = client();
        let mut expected = 3u64;
        for i in 0..1000u64 {
            let req = rollout_api::CreateVersion {
                expected_version: rollout_api::Version::new(expected),
                reason: None,
                change: rollout_api::Change::Patch(rollout_core::config::Patch::SetWeight {
                    route: "web".into(),
                    percent: (i % 100) as f64,
                }),
            };
            let resp = http
                .post(format!("{}/v1/versions", control.url))
                .bearer_auth(DEPLOY)
                .json(&req)
                .send()
                .await
                .expect("api");
            assert_eq!(resp.status().as_u16(), 201, "commit {i}");
            expected += 1;
        }
        gate.set(PASS);
        let caught_up = eventually(Duration::from_secs(15), || async {
            held(late.addr).await.0 == expected
        })
        .await;
        let status = control.status().await;
        assert!(
            caught_up,
            "the edge holds {} of {expected}: {}",
            held(late.addr).await.0,
            status["edges"][0]
        );
    }

    /// Regression (a compromised edge mints fresh stamps for old versions):
    /// the fan-out's rotation step believes an edge's refusal text. An edge
    /// that answers every push "signature key ... is not trusted by this
    /// edge" and lists only A in its GET is sent, freshly stamped, the
    /// newest A-signed version below the committed one: after a rollback,
    /// the very version rolled back from. Replayed within 300 s to an edge
    /// that lost its store, it is applied, which is what push stamps exist
    /// to prevent ("an old version from the store, never stamped, is
    /// refused").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compromised_edge_cannot_get_an_old_version_freshly_stamped() {
        let rig = Rig::start("adv-stamp-oracle").await;
        let control = rig.control(&[]).await;
        control.push_wait(&rig.config("good.json", 0.0)).await;
        control.push_wait(&rig.config("bad.json", 100.0)).await;
        control
            .cli(DEPLOY, &["rollback", "--to", "1", "--reason", "v2 is bad"])
            .await
            .ok();

        // The compromised edge: records what it is sent, refuses by key.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<std::sync::Mutex<Vec<Pushed>>> = Arc::default();
        let record = seen.clone();
        let a_id = secret().public_key().id().to_string();
        let get_reply = serde_json::json!({"version": 0, "digest": null, "keys": [a_id]});
        let app = axum::Router::new().route(
            rollout_core::edge::ADMIN_PATH,
            axum::routing::get(move || {
                let reply = get_reply.clone();
                async move { axum::Json(reply) }
            })
            .put(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let signature = headers
                    .get(rollout_core::SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                record
                    .lock()
                    .expect("record")
                    .push((body.to_vec(), signature));
                async {
                    (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({
                            "status": "nack", "version": 0, "digest": null,
                            "error": "signature key 0000000000000000 is not trusted by this edge (it trusts b600306cfa76723f)"
                        })),
                    )
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        control
            .cli(ADMIN, &["edges", "add", &format!("http://{addr}")])
            .await
            .ok();
        let got_v2 = eventually(Duration::from_secs(10), || async {
            seen.lock()
                .expect("record")
                .iter()
                .any(|(b, _)| b.windows(12).any(|w| w == b"\"version\":2,"))
        })
        .await;
        task.abort();
        let captured = seen
            .lock()
            .expect("record")
            .iter()
            .find(|(b, _)| b.windows(12).any(|w| w == b"\"version\":2,"))
            .cloned();

        // An honest edge that lost its store, not yet reached by control.
        let empty = rig.edge("empty").await;
        let replayed = match captured {
            Some((body, signature)) => Some(put_envelope(empty.addr, body, &signature).await),
            None => None,
        };
        assert!(
            !got_v2 || replayed.as_ref().is_some_and(|(status, _)| *status == 401),
            "control sent the compromised edge version 2 (rolled back from) freshly stamped; \
             replayed to an empty edge: {replayed:?}"
        );
    }

    /// Regression (a version the store cannot hold): adoption accepts any
    /// version above the committed one. One above i64::MAX is stored
    /// clamped, the edges take the body's number, and from then on every
    /// commit is refused or lands below what edges hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn adopt_refuses_a_version_number_the_history_cannot_follow() {
        let rig = Rig::start("adv-adopt-huge").await;
        let edge = rig.edge("e").await;
        let control = rig.control(&[url(&edge)]).await;
        control.push_wait(&rig.config("v1.json", 0.0)).await;
        let a = secret();
        let v1 = digest_of(&control, 1).await;
        let body = envelope(&rig, (1 << 63) + 5, Some(v1), &[&a]);
        let adopted = adopt(&control, &rig, "huge.json", &body, &a.sign(&body)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pushed = control
            .cli(
                DEPLOY,
                &[
                    "push",
                    &rig.config("v-next.json", 10.0),
                    "--wait",
                    "--timeout",
                    "10s",
                ],
            )
            .await;
        assert_eq!(
            pushed.code,
            0,
            "adopt: exit {} {}; the next push: exit {} {}; the edge holds {:?}",
            adopted.code,
            adopted.stdout.trim(),
            pushed.code,
            pushed.stderr.trim(),
            held(edge.addr).await.0
        );
    }
}
