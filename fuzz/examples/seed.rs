//! Writes the seed inputs of every fuzz target, from the project's own test
//! fixtures, to `fuzz/corpus/<target>/seed-*`:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seed
//!
//! - config: `core/tests/fixtures/{valid,invalid}/*.json`, the configs of
//!   `core/tests/vectors/{decisions,requests}.json`, and each decision case's
//!   request as the tail after a NUL.
//! - envelope: those configs signed as envelopes (plain, with the signature
//!   after a NUL, with the raw signature bytes appended), and broken ones.
//! - stored: the frames an edge stores for them, bare compact forms, frames
//!   of an older compact form, damaged frames.
//! - request: every raw request of `core/tests/vectors/requests.json` in the
//!   `RequestInput` format, and admin GETs and PUTs.
//! - api: every request body the control service takes.
//!
//! `scripts/fuzz.sh` minimises the corpus afterwards (`cargo fuzz cmin`),
//! which renames what it keeps to content hashes.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rollout_core::edge::stored::{Frame, frame_for};
use rollout_core::edge::{ADMIN_PATH, Active, Trust, receive_push};
use rollout_core::{Envelope, SIGNATURE_HEADER};
use rollout_fuzz::{CONFIG, RequestInput, frame, key, older_frame, signed};
use serde_json::{Value, json};

type Seeds = Vec<(String, Vec<u8>)>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent")
        .to_path_buf()
}

fn read_json(path: &str) -> Value {
    let text = fs::read(root().join(path)).expect("read vector file");
    serde_json::from_slice(&text).expect("vector file is JSON")
}

/// Placeholders of the raw-request corpus, as the seeds fill them.
fn fill(text: &str) -> String {
    text.replace("{{edge}}", "edge.example.com:3000")
        .replace("{{old}}", "old.internal:8081")
        .replace("{{new}}", "new.internal:8082")
        .replace("{{outside}}", "outside.internal:9000")
        .replace("{{closed}}", "[::1]:9")
}

fn fixtures(kind: &str) -> Seeds {
    let dir = root().join("core/tests/fixtures").join(kind);
    let mut out: Seeds = fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap_or_default().to_string_lossy();
            (format!("{kind}-{name}"), fs::read(&p).expect("fixture"))
        })
        .collect();
    out.sort();
    out
}

/// The valid configs every target starts from.
fn configs() -> Seeds {
    let mut out = fixtures("valid");
    let decisions = read_json("core/tests/vectors/decisions.json");
    out.push((
        "decisions".into(),
        decisions["config"].to_string().into_bytes(),
    ));
    let requests = read_json("core/tests/vectors/requests.json");
    out.push((
        "requests".into(),
        fill(&requests["config"].to_string()).into_bytes(),
    ));
    out.push(("fuzz".into(), CONFIG.as_bytes().to_vec()));
    out
}

fn config_seeds() -> Seeds {
    let mut out = configs();
    out.extend(fixtures("invalid"));
    // Each decision case's request after the config, as the target reads
    // its tail: value, path, host, method, client ip.
    let decisions = read_json("core/tests/vectors/decisions.json");
    let config = decisions["config"].to_string();
    for (i, case) in decisions["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let req = &case["request"];
        let value = req["headers"]
            .as_array()
            .and_then(|h| h.first())
            .and_then(|h| h[1].as_str())
            .unwrap_or_default();
        let tail = [
            value,
            req["path"].as_str().unwrap_or("/"),
            req["host"].as_str().unwrap_or_default(),
            req["method"].as_str().unwrap_or("GET"),
            req["client_ip"].as_str().unwrap_or_default(),
        ]
        .join("\0");
        out.push((
            format!("decision-{i:02}"),
            format!("{config}\0{tail}").into_bytes(),
        ));
    }
    out
}

fn envelope_seeds() -> Seeds {
    let mut out = Seeds::new();
    for (i, (name, config)) in configs().into_iter().enumerate() {
        let text = String::from_utf8(config).expect("configs are text");
        let (body, signature) = signed(i as u64 + 1, &text);
        let mut with_sig = body.clone();
        with_sig.push(0);
        with_sig.extend(signature.as_bytes());
        let mut with_raw = body.clone();
        let raw = signature.strip_prefix("ed25519=").expect("prefix");
        with_raw.extend(STANDARD.decode(raw).expect("base64"));
        out.push((name.clone(), body));
        out.push((format!("{name}-nul-signature"), with_sig));
        out.push((format!("{name}-raw-signature"), with_raw));
    }
    let (body, _) = signed(1, CONFIG);
    let text = String::from_utf8(body).expect("text");
    out.push((
        "version-0".into(),
        text.replacen("\"version\":1", "\"version\":0", 1)
            .into_bytes(),
    ));
    for (name, config) in fixtures("invalid").into_iter().take(8) {
        let config = String::from_utf8_lossy(&config);
        let body = format!(
            r#"{{"version":3,"parent":null,"issued_at":"2026-11-30T00:00:00Z","actor":"a","reason":"r","config":{config}}}"#
        );
        out.push((format!("envelope-{name}"), body.into_bytes()));
    }
    out
}

fn stored_seeds() -> Seeds {
    let mut out = vec![
        ("frame".to_owned(), frame().to_vec()),
        ("older-frame".to_owned(), older_frame().to_vec()),
    ];
    for (i, (name, config)) in configs().into_iter().enumerate() {
        let text = String::from_utf8(config).expect("configs are text");
        let (body, signature) = signed(i as u64 + 1, &text);
        let outcome = receive_push(
            None,
            &body,
            Some(&signature),
            &Trust::key(key().public_key()),
        );
        let active: Active = outcome.apply.expect("a valid config applies");
        let value = frame_for(&active, &signature, &body);
        out.push((format!("{name}-compact"), active.to_compact()));
        let parsed = Frame::parse(&value).expect("frame");
        out.push((
            format!("{name}-older"),
            Frame {
                form: parsed.form - 1,
                compact: b"",
                ..parsed
            }
            .to_bytes(),
        ));
        out.push((
            format!("{name}-broken-envelope"),
            Frame {
                form: 0,
                envelope: &body[..body.len() / 2],
                ..parsed
            }
            .to_bytes(),
        ));
        out.push((format!("{name}-frame"), value));
    }
    out
}

/// An origin response that carries what must not reach the client.
const RESPONSE: &[(&str, &[u8])] = &[
    ("content-type", b"text/plain"),
    ("connection", b"x-drop"),
    ("x-drop", b"1"),
    ("x-rollout-arm", b"forged"),
    ("keep-alive", b"5"),
    ("set-cookie", b"a=b"),
];

fn headers(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect()
}

/// A raw HTTP/1 request as the corpus writes it, in the target's format.
fn from_raw(raw: &[u8], flags: u8, status: u16, extra: u8) -> RequestInput {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let body = raw.get(end + 4..).unwrap_or_default().to_vec();
    let mut input = RequestInput::decode(
        &[&[flags][..], &status.to_be_bytes(), &[extra], &raw[..end]].concat(),
    );
    input.response_headers = headers(RESPONSE);
    input.body = body;
    input
}

fn request_seeds() -> Seeds {
    let mut out = Seeds::new();
    let corpus = read_json("core/tests/vectors/requests.json");
    for (i, case) in corpus["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let raw = match (case["request"].as_str(), case["request_base64"].as_str()) {
            (Some(text), _) => fill(text).into_bytes(),
            (None, Some(b64)) => {
                let bytes = STANDARD.decode(b64).expect("base64");
                fill(&String::from_utf8_lossy(&bytes)).into_bytes()
            }
            _ => continue,
        };
        let flags = [0x07, 0x0c, 0x12, 0x06][i % 4];
        let status = [200, 503, 502, 999, 101][i % 5];
        let input = from_raw(&raw, flags, status, i as u8);
        let name = case["name"].as_str().unwrap_or("case");
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(60)
            .collect();
        out.push((format!("corpus-{i:02}-{name}"), input.encode()));
    }

    // The platform's own facts: authority and client address.
    let mut input = from_raw(
        b"GET /api/x?uid=1 HTTP/1.1\r\nX-User-Id: alice\r\nCookie: sid=1; rid=2\r\nX-Forwarded-For: 198.51.100.1\r\nForwarded: for=198.51.100.1\r\ncf-connecting-ip: 1.2.3.4\r\nspin-full-url: x",
        0x07,
        503,
        4,
    );
    input.authority = Some("api.example.com:443".into());
    input.client_ip = Some("2001:db8::1".into());
    out.push(("platform-facts".into(), input.encode()));

    // The admin endpoint: reads, pushes signed and not, against an empty
    // store and the fixed frame, each conflict choice.
    let pushes = [
        ("v9", signed(9, CONFIG).0),
        ("v3", signed(3, CONFIG).0),
        ("v7", signed(7, CONFIG).0),
    ];
    for (i, (name, body)) in pushes.iter().enumerate() {
        for holds in [0, 0x20] {
            let mut input = from_raw(
                format!(
                    "PUT {ADMIN_PATH} HTTP/1.1\r\nHost: edge.example.com\r\nContent-Length: {}",
                    body.len()
                )
                .as_bytes(),
                0x80 | holds,
                200,
                i as u8,
            );
            input.response_headers.clear();
            input.body = body.clone();
            out.push((format!("admin-put-{name}-{holds:02x}"), input.encode()));
        }
    }
    let (body, signature) = signed(9, CONFIG);
    let mut input = from_raw(
        format!(
            "PUT {ADMIN_PATH} HTTP/1.1\r\nHost: edge.example.com\r\n{SIGNATURE_HEADER}: {signature}"
        )
        .as_bytes(),
        0x20,
        200,
        3,
    );
    input.response_headers.clear();
    input.body = body;
    out.push(("admin-put-own-signature".into(), input.encode()));
    for (name, head, flags) in [
        ("get", format!("GET {ADMIN_PATH} HTTP/1.1\r\nHost: e"), 0x20),
        ("post", format!("POST {ADMIN_PATH} HTTP/1.1\r\nHost: e"), 0),
        (
            "bad-key",
            format!("PUT {ADMIN_PATH} HTTP/1.1\r\nHost: e"),
            0xc0,
        ),
        (
            "too-long",
            format!("PUT {ADMIN_PATH} HTTP/1.1\r\nHost: e\r\nContent-Length: 99999999"),
            0x80,
        ),
    ] {
        let input = from_raw(head.as_bytes(), flags, 0, 0);
        out.push((format!("admin-{name}"), input.encode()));
    }
    out
}

fn api_seeds() -> Seeds {
    let plan = json!({
        "schema": 1,
        "steps": [{"set_weight": 1}, {"pause": "2m"}, {"set_weight": 10},
                  {"analysis": {"checks": ["errors", "latency-slo"], "duration": "5m"}},
                  {"set_weight": 50}, {"pause": null}, {"set_weight": 100}],
        "checks": {
            "errors": {"probe": {"path": "/healthz", "host": "shop.example.com"}},
            "latency-slo": {"template": "p99-under-300ms", "failure_limit": 3}
        },
        "background": ["errors"],
        "progress_deadline": "30m",
        "bake": "10m",
        "dry_run": false
    });
    let flag_plan = json!({
        "schema": 1, "flag": "beta",
        "steps": [{"set_weight": 10}, {"pause": null}],
        "checks": {"errors": {"prometheus": {"url": "http://prometheus:9090",
            "query": "sum(rate(x{arm=\"$arm\"}[1m]))", "max_increase": 0.01},
            "interval": "2s", "min_samples": 40}},
        "background": ["errors"]
    });
    let fuzz_config: Value = serde_json::from_str(CONFIG).expect("config");
    let mut out: Vec<(String, Value)> = vec![
        (
            "create-config".into(),
            json!({"expected_version": 0, "reason": "first", "config": fuzz_config}),
        ),
        (
            "create-patch-weight".into(),
            json!({"expected_version": 4, "patch": {"op": "set_weight", "route": "web", "percent": 25}}),
        ),
        (
            "create-patch-flag".into(),
            json!({"expected_version": 4, "patch": {"op": "set_flag", "route": "api", "flag": "beta", "percent": 12.5}}),
        ),
        (
            "create-patch-toggle".into(),
            json!({"expected_version": 4, "reason": "go", "patch": {"op": "toggle_flag", "route": "web", "flag": "dark-mode"}}),
        ),
        (
            "create-both".into(),
            json!({"expected_version": 1, "config": {}, "patch": {"op": "set_weight", "route": "web", "percent": 1}}),
        ),
        (
            "rollback-to".into(),
            json!({"expected_version": 5, "to": 2, "reason": "errors"}),
        ),
        (
            "rollback-at".into(),
            json!({"expected_version": 5, "at": "10m ago"}),
        ),
        (
            "rollback-both".into(),
            json!({"expected_version": 5, "to": 2, "at": "2026-11-30T00:00:00Z"}),
        ),
        (
            "start-plan".into(),
            json!({"route": "web", "plan": plan, "reason": "canary"}),
        ),
        (
            "start-flag-plan".into(),
            json!({"route": "api", "plan": flag_plan}),
        ),
        ("plan".into(), plan.clone()),
        (
            "check-probe".into(),
            json!({"probe": {"path": "/healthz", "max_error_rate": 5}, "interval": "5s"}),
        ),
        (
            "check-prometheus".into(),
            json!({"prometheus": {"url": "http://prometheus:9090", "query": "up", "condition": "< 0.01"}}),
        ),
        (
            "check-template".into(),
            json!({"template": "nested", "failure_limit": 2}),
        ),
        (
            "alerts".into(),
            json!({"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {"rollout_route": "web", "alertname": "x"}}]}),
        ),
        ("edge".into(), json!({"url": "http://127.0.0.1:3000"})),
        ("history".into(), json!({"before": 9, "limit": 50})),
        ("plans-query".into(), json!({"limit": 20, "route": "web"})),
        ("at".into(), json!({"time": "10m ago"})),
    ];
    for (name, config) in configs() {
        let config: Value = serde_json::from_slice(&config).expect("config");
        out.push((
            format!("create-{name}"),
            json!({"expected_version": 2, "config": config}),
        ));
    }
    out.into_iter()
        .map(|(n, v)| (n, serde_json::to_vec(&v).expect("json")))
        .collect()
}

fn write(target: &str, seeds: Seeds) {
    let dir = root().join("fuzz/corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    let count = seeds.len();
    for (name, bytes) in seeds {
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }
    println!("{target}: {count} seeds in {}", dir.display());
}

fn main() {
    // The fixed envelope still opens with the fixed key.
    let (body, signature) = signed(1, CONFIG);
    Envelope::open(&body, &signature, &key().public_key()).expect("the fixed envelope opens");
    write("config", config_seeds());
    write("envelope", envelope_seeds());
    write("stored", stored_seeds());
    write("request", request_seeds());
    write("api", api_seeds());
}
