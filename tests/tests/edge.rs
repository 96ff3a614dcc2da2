//! The built edge component in rollout-host, in front of real loopback origins.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use futures_util::StreamExt as _;
use rollout_host::{KvBackend, MemoryKv, Metrics, SqliteKv};
use rollout_tests::*;
use serde_json::json;
use sha2::{Digest as _, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_of_ten_thousand_keys_go_to_new_and_stay_there_as_the_weight_rises() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;
    let client = client();
    let (body, sig) = envelope(1, config(&old.url(), &new.url(), 10.0, json!({})));
    assert_eq!(push(&client, edge.addr, body, &sig).await.0, 200);

    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let arms: Vec<(String, String)> = futures_util::stream::iter(keys.iter())
        .map(|k| arm_for(&client, edge.addr, k))
        .buffered(16)
        .collect()
        .await;
    assert!(
        arms.iter().all(|(arm, origin)| arm == origin),
        "the arm header names the origin that answered"
    );
    let on_new = arms.iter().filter(|(arm, _)| arm == "new").count();
    println!("10 % weight: {on_new} of 10000 keys on new");
    assert!(
        (900..=1100).contains(&on_new),
        "{on_new} of 10000 on new at 10 %"
    );

    // The same key keeps its arm, request after request.
    let sample: Vec<usize> = (0..keys.len()).step_by(500).collect();
    for &i in &sample {
        for _ in 0..100 {
            assert_eq!(
                arm_for(&client, edge.addr, &keys[i]).await.0,
                arms[i].0,
                "key {} changed arm",
                keys[i]
            );
        }
    }

    // Raising the weight only adds keys to new.
    let (body, sig) = envelope(2, config(&old.url(), &new.url(), 50.0, json!({})));
    assert_eq!(push(&client, edge.addr, body, &sig).await.0, 200);
    for (i, (arm, _)) in arms.iter().enumerate().filter(|(_, (arm, _))| arm == "new") {
        assert_eq!(
            arm_for(&client, edge.addr, &keys[i]).await.0,
            *arm,
            "{} left new at 50 %",
            keys[i]
        );
    }
}

/// The frozen bucket vectors: (salt, key, bucket) in file order.
fn bucket_vectors() -> Vec<(String, String, u64)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/vectors/buckets.json"
    ))
    .expect("vector file");
    let file: serde_json::Value = serde_json::from_str(&text).expect("vectors parse");
    file["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            (
                case["salt"].as_str().expect("salt").to_owned(),
                case["key"].as_str().expect("key").to_owned(),
                case["bucket"].as_u64().expect("bucket"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_reproduces_every_frozen_bucket_vector() {
    // The shipped component, over HTTP: one config with a route per salt
    // (matched by path prefix, keyed by `x-user-id`, debug headers on), then
    // a GET per vector; the edge reports its bucket in `x-rollout-bucket`.
    let vectors = bucket_vectors();
    let mut salts: Vec<&str> = Vec::new();
    for (salt, _, _) in &vectors {
        if !salts.contains(&salt.as_str()) {
            salts.push(salt);
        }
    }
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;
    let client = client();
    let route = |id: String, salt: &str, prefix: Option<String>| {
        let mut route = json!({
            "id": id,
            "old": old.url(),
            "new": new.url(),
            "new_weight": 50.0,
            "salt": salt,
            "key": ["header:x-user-id"],
        });
        if let Some(prefix) = prefix {
            route["match"] = json!({ "path_prefix": prefix });
        }
        route
    };
    let mut routes: Vec<serde_json::Value> = salts
        .iter()
        .enumerate()
        .map(|(i, salt)| route(format!("salt-{i}"), salt, Some(format!("/salt-{i}"))))
        .collect();
    routes.push(route("default".to_owned(), "default", None));
    let doc = serde_json::from_value(json!({"schema": 1, "debug_headers": true, "routes": routes}))
        .expect("vector config is well-formed");
    let (body, sig) = envelope(1, doc);
    let (status, reply) = push(&client, edge.addr, body, &sig).await;
    assert_eq!(status, 200, "{reply}");

    // A key reaches the hash through a header only as it is: core trims key
    // values and ignores empty ones (so "" and " " never hash as written),
    // and a header value cannot hold control characters (NUL, LF). No other
    // key source does better: core hashes query values undecoded, and those
    // bytes cannot be raw in a URL either. Such vectors are skipped here and
    // counted; the kernel test below checks every one of them. Non-ASCII
    // keys go as raw UTF-8 header bytes (obs-text), which the edge reads.
    let sendable = |key: &str| {
        !key.is_empty()
            && key.trim() == key
            && key.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    };
    let (cases, skipped): (Vec<_>, Vec<_>) = vectors.iter().partition(|(_, k, _)| sendable(k));
    let results: Vec<(String, String, String)> = futures_util::stream::iter(cases.iter())
        .map(|(salt, key, _)| {
            let i = salts.iter().position(|s| s == salt).expect("salt listed");
            let request = client
                .get(format!("http://{}/salt-{i}", edge.addr))
                .header(
                    "x-user-id",
                    reqwest::header::HeaderValue::from_bytes(key.as_bytes())
                        .expect("sendable key is a header value"),
                )
                .send();
            async move {
                let resp = request.await.expect("request reaches the edge");
                (
                    format!("salt-{i}"),
                    header(&resp, "x-rollout-route"),
                    header(&resp, "x-rollout-bucket"),
                )
            }
        })
        .buffered(16)
        .collect()
        .await;
    for ((salt, key, want), (route, got_route, bucket)) in cases.iter().zip(&results) {
        assert_eq!(got_route, route, "salt {salt:?} key {key:?}: route");
        assert_eq!(
            bucket.parse::<u64>().ok(),
            Some(*want),
            "salt {salt:?} key {key:?}: x-rollout-bucket {bucket:?}"
        );
    }
    println!(
        "component (over HTTP, {} salts) matched {} frozen vectors; skipped {} whose key \
         cannot reach the hash as written through a header (empty, surrounding whitespace, \
         control characters)",
        salts.len(),
        results.len(),
        skipped.len()
    );
    assert!(results.len() >= 1200);
    assert!(skipped.len() <= 50, "{} vectors skipped", skipped.len());
}

#[tokio::test]
async fn the_kernel_component_reproduces_every_frozen_bucket_vector() {
    // Every vector, including those no request can carry, through the kernel
    // component's `bucket` export: core's hash inside a wasm guest.
    let path = match std::env::var_os("ROLLOUT_KERNEL") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rollout_host::KERNEL_PATH),
    };
    let component = rollout_host::KernelComponent::load(&path)
        .unwrap_or_else(|e| panic!("{e:#}\n(this test runs the built kernel component)"));
    let mut kernel = component.instantiate().await.expect("kernel instance");
    let mut checked = 0;
    for (salt, key, want) in bucket_vectors() {
        let got = kernel.bucket(&salt, &key).await.expect("kernel call");
        assert_eq!(u64::from(got), want, "salt {salt:?} key {key:?}");
        checked += 1;
    }
    println!("kernel component matched {checked} frozen vectors");
    assert!(checked >= 1000);
}

#[tokio::test]
async fn pushes_apply_in_version_order_and_a_rollback_is_the_next_version() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;
    let client = client();
    let all_new = config(&old.url(), &new.url(), 100.0, json!({}));
    let all_old = config(&old.url(), &new.url(), 0.0, json!({}));

    let (v1, s1) = envelope(1, all_old.clone());
    let (status, reply) = push(&client, edge.addr, v1.clone(), &s1).await;
    assert_eq!(
        (status, reply["status"].as_str(), reply["version"].as_u64()),
        (200, Some("ack"), Some(1))
    );
    assert_eq!(reply["digest"].as_str(), Some(digest(&v1).as_str()));
    assert_eq!(arm_for(&client, edge.addr, "alice").await.0, "old");

    let (v2, s2) = envelope(2, all_new);
    assert_eq!(push(&client, edge.addr, v2.clone(), &s2).await.0, 200);
    assert_eq!(
        arm_for(&client, edge.addr, "alice").await,
        ("new".to_owned(), "new".to_owned())
    );

    // Rollback: version 3 carries version 1's config; the very next request goes to old.
    let (v3, s3) = envelope(3, all_old);
    assert_eq!(push(&client, edge.addr, v3.clone(), &s3).await.0, 200);
    assert_eq!(
        arm_for(&client, edge.addr, "alice").await,
        ("old".to_owned(), "old".to_owned())
    );

    // Replaying version 2 is refused, naming what is applied.
    let (status, reply) = push(&client, edge.addr, v2, &s2).await;
    assert_eq!(
        (status, reply["status"].as_str(), reply["version"].as_u64()),
        (409, Some("nack"), Some(3))
    );
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("applied version 3")),
        "{reply}"
    );

    // The same version and digest again is an idempotent ACK.
    let (status, reply) = push(&client, edge.addr, v3.clone(), &s3).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("ack")));
    assert_eq!(applied(&client, edge.addr).await, (3, Some(digest(&v3))));
}

#[tokio::test]
async fn bad_pushes_are_refused_with_their_status_and_change_nothing() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;
    let client = client();
    let (v1, s1) = envelope(1, config(&old.url(), &new.url(), 0.0, json!({})));
    assert_eq!(push(&client, edge.addr, v1.clone(), &s1).await.0, 200);
    let before = applied(&client, edge.addr).await;

    // Signed by another key.
    let (v2, _) = envelope(2, config(&old.url(), &new.url(), 100.0, json!({})));
    let forged = rollout_core::SecretKey::from_seed([9; 32]).sign(&v2);
    let (status, reply) = push(&client, edge.addr, v2.clone(), &forged).await;
    assert_eq!((status, reply["status"].as_str()), (401, Some("nack")));
    // A tampered body under a valid signature.
    let mut tampered = v2.clone();
    let (_, s2) = envelope(2, config(&old.url(), &new.url(), 100.0, json!({})));
    tampered.push(b' ');
    assert_eq!(push(&client, edge.addr, tampered, &s2).await.0, 401);

    // Invalid config: the error names the field.
    let mut bad = config(&old.url(), &new.url(), 10.0, json!({}));
    bad.routes[0].new_weight = 150.0;
    let (v, s) = envelope(2, bad);
    let (status, reply) = push(&client, edge.addr, v, &s).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["error"].as_str(),
        Some("config.routes[0].new_weight: must be 0..=100")
    );

    // Over 1 MiB: refused before it is read further.
    let huge = vec![b'x'; 1024 * 1024 + 1];
    let (status, reply) = push(&client, edge.addr, huge, &s1).await;
    assert_eq!((status, reply["status"].as_str()), (413, Some("nack")));

    assert_eq!(
        applied(&client, edge.addr).await,
        before,
        "nothing was applied"
    );
    assert_eq!(arm_for(&client, edge.addr, "alice").await.0, "old");
}

#[tokio::test]
async fn without_a_usable_config_the_edge_routes_to_the_bootstrap_origin() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    let edge = start_edge(setup, kv.clone()).await;
    let client = client();

    let resp = client
        .get(format!("http://{}/", edge.addr))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (header(&resp, "x-rollout-arm"), header(&resp, "x-origin")),
        ("old".into(), "old".into())
    );
    assert_eq!(header(&resp, "x-rollout-version"), "0");
    assert_eq!(header(&resp, "x-rollout-reason"), "bootstrap");

    // A damaged stored config is no config: bootstrap again, never a 5xx.
    kv.set(
        rollout_core::edge::KV_ACTIVE,
        b"\x00garbage that does not decode",
    )
    .expect("corrupt the store");
    for _ in 0..5 {
        let resp = client
            .get(format!("http://{}/x", edge.addr))
            .send()
            .await
            .expect("request");
        assert_eq!(
            (resp.status().as_u16(), header(&resp, "x-origin")),
            (200, "old".into())
        );
    }
    // And a push still repairs it.
    let (v1, s1) = envelope(1, config(&old.url(), &new.url(), 100.0, json!({})));
    assert_eq!(push(&client, edge.addr, v1, &s1).await.0, 200);
    assert_eq!(arm_for(&client, edge.addr, "bob").await.0, "new");

    // No config and no bootstrap variable: a 502 that says so, not a 500.
    let bare = start_edge(
        EdgeSetup {
            bootstrap: None,
            allow: vec![],
        },
        Arc::new(MemoryKv::default()),
    )
    .await;
    let resp = client
        .get(format!("http://{}/", bare.addr))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 502);
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("no config applied")
    );
}

#[tokio::test]
async fn a_restarted_edge_with_a_file_store_serves_its_last_applied_version() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let dir = std::env::temp_dir().join(format!("rollout-e2e-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("edge.sqlite");
    let _ = std::fs::remove_file(&path);
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    let client = client();

    let first = start_edge(
        setup.clone(),
        Arc::new(SqliteKv::open(&path).expect("store")),
    )
    .await;
    let (v7, s7) = envelope(7, config(&old.url(), &new.url(), 100.0, json!({})));
    assert_eq!(push(&client, first.addr, v7.clone(), &s7).await.0, 200);
    drop(first);

    let second = start_edge(setup, Arc::new(SqliteKv::open(&path).expect("reopen"))).await;
    assert_eq!(applied(&client, second.addr).await, (7, Some(digest(&v7))));
    let resp = get_as(&client, second.addr, "/", "carol").await;
    assert_eq!(
        (
            header(&resp, "x-rollout-version"),
            header(&resp, "x-origin")
        ),
        ("7".into(), "new".into())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_edge_that_finds_an_older_compact_form_rederives_it_and_writes_it_back() {
    use rollout_core::edge::stored::Frame;
    use rollout_core::edge::{COMPACT_FORM, KV_ACTIVE};

    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let (v4, s4) = envelope(4, config(&old.url(), &new.url(), 100.0, json!({})));
    // What an older build would have stored: its own compact form (bytes this
    // build cannot read) beside the envelope it verified.
    let older = Frame {
        form: COMPACT_FORM - 1,
        compact: b"an older build's compact form",
        signature: &s4,
        envelope: &v4,
    }
    .to_bytes();
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    kv.set(KV_ACTIVE, &older).expect("seed the store");
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    let edge = start_edge(setup, kv.clone()).await;
    let client = client();

    let resp = get_as(&client, edge.addr, "/", "dave").await;
    assert_eq!(
        (
            header(&resp, "x-rollout-version"),
            header(&resp, "x-origin")
        ),
        ("4".into(), "new".into()),
        "served by the envelope's config, not the bootstrap origin"
    );
    let stored = kv.get(KV_ACTIVE).expect("read").expect("still stored");
    let frame = Frame::parse(&stored).expect("a frame");
    assert_eq!(
        frame.form, COMPACT_FORM,
        "written back in this build's form"
    );
    assert_eq!(
        (frame.envelope, frame.signature),
        (v4.as_slice(), s4.as_str())
    );
    assert_eq!(applied(&client, edge.addr).await, (4, Some(digest(&v4))));
}

/// Sends raw bytes and returns the raw response, so headers a client library
/// would refuse or rewrite can be sent as they are.
fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_never_reach_the_origin_and_the_host_comes_from_config() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;
    let client = client();
    let (v1, s1) = envelope(1, config(&old.url(), &new.url(), 0.0, json!({})));
    assert_eq!(push(&client, edge.addr, v1, &s1).await.0, 200);

    let request = "GET /hygiene?q=1 HTTP/1.1\r\n\
        Host: evil.example.com\r\n\
        Connection: close, X-Private-Hop\r\n\
        X-Private-Hop: secret\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Trailer: X-Checksum\r\n\
        Upgrade: h2c\r\n\
        Proxy-Authorization: Basic c2VjcmV0\r\n\
        X-Rollout-Arm: new\r\n\
        X-Forwarded-For: 203.0.113.9\r\n\
        X-User-Id: dave\r\n\
        \r\n";
    let addr = edge.addr;
    let raw = tokio::task::spawn_blocking(move || raw_request(addr, request))
        .await
        .expect("raw request");
    let body = raw.split("\r\n\r\n").nth(1).expect("response body");
    let body = body.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c.is_whitespace());
    let echoed: serde_json::Value = serde_json::from_str(body.trim_end_matches(|c: char| c != '}'))
        .unwrap_or_else(|e| panic!("origin echo is JSON ({e}): {raw}"));
    let headers = echoed["headers"].as_object().expect("headers");
    for banned in [
        "connection",
        "x-private-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(
            !headers.contains_key(banned),
            "{banned} reached the origin: {echoed}"
        );
    }
    assert_eq!(echoed["origin"], "old");
    assert_eq!(echoed["path"], "/hygiene?q=1");
    assert_eq!(
        headers["host"][0],
        old.addr.to_string(),
        "the origin's host comes from config, never the client"
    );
    assert_eq!(
        headers["x-rollout-arm"][0], "old",
        "a client cannot pick the arm by header"
    );
    assert_eq!(headers["x-rollout-version"][0], "1");
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-host"][0], "evil.example.com");
    let forwarded = headers["forwarded"][0].as_str().expect("forwarded");
    assert!(forwarded.starts_with("for=127.0.0.1;"), "{forwarded}");
    assert!(
        headers.keys().all(|k| !k.starts_with("spin-")),
        "no host-internal headers leak: {echoed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mebibyte_bodies_cross_the_edge_byte_for_byte_both_ways() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;
    let client = client();
    let (v1, s1) = envelope(1, config(&old.url(), &new.url(), 100.0, json!({})));
    assert_eq!(push(&client, edge.addr, v1, &s1).await.0, 200);

    let upload = pattern(5 * 1024 * 1024);
    let want = hex::encode(Sha256::digest(&upload));
    let resp = client
        .post(format!("http://{}/upload", edge.addr))
        .header("x-user-id", "erin")
        .body(upload)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        (echoed["body_len"].as_u64(), echoed["body_sha256"].as_str()),
        (Some(5 * 1024 * 1024), Some(want.as_str()))
    );

    // A streamed upload with no content-length (chunked) arrives whole too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = pattern(5 * 1024 * 1024)
        .chunks(100_000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = client
        .put(format!("http://{}/chunked", edge.addr))
        .header("x-user-id", "erin")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("chunked upload");
    let echoed: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(echoed["body_sha256"].as_str(), Some(want.as_str()));

    let resp = get_as(
        &client,
        edge.addr,
        &format!("/big/{}", 5 * 1024 * 1024),
        "erin",
    )
    .await;
    let announced = header(&resp, "x-body-sha256");
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(bytes.len(), 5 * 1024 * 1024);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), announced);
}

/// A loopback port with nothing listening on it.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn a_dead_origin_gets_a_502_naming_the_arm_unless_failover_sends_it_to_old() {
    let old = Origin::start("old").await;
    let dead = closed_port_url().await;
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), dead.clone()],
    };
    let edge = start_edge(setup, Arc::new(MemoryKv::default())).await;
    let client = client();

    let (v1, s1) = envelope(1, config(&old.url(), &dead, 100.0, json!({})));
    assert_eq!(push(&client, edge.addr, v1, &s1).await.0, 200);
    let resp = get_as(&client, edge.addr, "/", "frank").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(header(&resp, "x-rollout-arm"), "new");
    let text = resp.text().await.expect("body");
    assert!(text.contains("origin new"), "{text}");

    let failover = json!({"failover": {"connect_error": true, "statuses": [503]}});
    let (v2, s2) = envelope(2, config(&old.url(), &dead, 100.0, failover));
    assert_eq!(push(&client, edge.addr, v2, &s2).await.0, 200);
    let resp = get_as(&client, edge.addr, "/", "frank").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (header(&resp, "x-rollout-arm"), header(&resp, "x-origin")),
        ("old".into(), "old".into())
    );

    // A POST is not idempotent: no failover, the 502 stands.
    let resp = client
        .post(format!("http://{}/", edge.addr))
        .header("x-user-id", "frank")
        .body("order")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 502);
}

#[tokio::test]
async fn a_minted_cookie_keeps_a_keyless_visitor_on_the_same_arm() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;
    let client = client();
    let (v1, s1) = envelope(1, config(&old.url(), &new.url(), 50.0, json!({})));
    assert_eq!(push(&client, edge.addr, v1, &s1).await.0, 200);

    for _ in 0..20 {
        let resp = client
            .get(format!("http://{}/", edge.addr))
            .send()
            .await
            .expect("req");
        let cookie = header(&resp, "set-cookie");
        assert!(
            cookie.starts_with("rollout_id=") && cookie.contains("HttpOnly; Secure; SameSite=Lax"),
            "{cookie}"
        );
        let arm = header(&resp, "x-rollout-arm");
        let id = cookie.split(';').next().expect("pair").to_owned();
        for _ in 0..5 {
            let again = client
                .get(format!("http://{}/", edge.addr))
                .header("cookie", &id)
                .send()
                .await
                .expect("req");
            assert_eq!(header(&again, "x-rollout-arm"), arm);
            assert_eq!(
                header(&again, "set-cookie"),
                "",
                "nothing minted when the cookie is present"
            );
        }
    }
}

/// Sends `/` as each of `keys`: how many responses came back per (arm, status),
/// after checking that every answer came from the arm it names.
async fn tally(
    client: &reqwest::Client,
    edge: std::net::SocketAddr,
    keys: impl Iterator<Item = String>,
) -> std::collections::BTreeMap<(String, u16), u64> {
    let mut tally = std::collections::BTreeMap::new();
    for key in keys {
        let resp = get_as(client, edge, "/", &key).await;
        let (arm, status) = (header(&resp, "x-rollout-arm"), resp.status().as_u16());
        if status == 200 {
            assert_eq!(
                header(&resp, "x-origin"),
                arm,
                "{key} answered by another arm"
            );
        }
        *tally.entry((arm, status)).or_insert(0) += 1;
    }
    tally
}

/// The sum of every `rollout_edge_requests_total` series in an exposition.
fn all_requests(exposition: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| l.starts_with("rollout_edge_requests_total{"))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("not a count: {l}"))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_response_and_origin_request_by_arm_and_a_dead_origin_as_errors() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let dead = closed_port_url().await;
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url(), dead.clone()],
    };
    let metrics = Arc::new(Metrics::default());
    let edge =
        start_edge_with_metrics(setup, Arc::new(MemoryKv::default()), Some(metrics.clone())).await;
    let endpoint = MetricsEndpoint::start(metrics).await;
    let client = client();

    // Admin traffic (a push, a read) is the control plane's and never counted.
    let (v1, s1) = envelope(1, config(&old.url(), &new.url(), 50.0, json!({})));
    assert_eq!(push(&client, edge.addr, v1.clone(), &s1).await.0, 200);
    assert_eq!(applied(&client, edge.addr).await.0, 1);

    let first = tally(&client, edge.addr, (0..200).map(|i| format!("metrics-{i}"))).await;
    let served = |t: &std::collections::BTreeMap<(String, u16), u64>, arm: &str, status: u16| {
        t.get(&(arm.to_owned(), status)).copied().unwrap_or(0)
    };
    let (old_ok, new_ok) = (served(&first, "old", 200), served(&first, "new", 200));
    assert_eq!(
        old_ok + new_ok,
        200,
        "every response is a 200 from an arm: {first:?}"
    );
    assert!(
        old_ok > 0 && new_ok > 0,
        "50 % sends keys to both arms: {first:?}"
    );

    let text = endpoint.scrape(&client).await;
    let n = |series: &str| sample(&text, series);
    assert_eq!(all_requests(&text), 200, "{text}");
    assert_eq!(
        n(r#"rollout_edge_requests_total{arm="old",class="2xx"}"#),
        old_ok
    );
    assert_eq!(
        n(r#"rollout_edge_requests_total{arm="new",class="2xx"}"#),
        new_ok
    );
    for (arm, want) in [("old", old_ok), ("new", new_ok), ("none", 0)] {
        let count = n(&format!(
            "rollout_edge_origin_seconds_count{{arm=\"{arm}\"}}"
        ));
        assert_eq!(count, want, "origin requests on {arm}");
        let inf = n(&format!(
            "rollout_edge_origin_seconds_bucket{{arm=\"{arm}\",le=\"+Inf\"}}"
        ));
        assert_eq!(inf, count, "+Inf holds every {arm} observation");
        let errors = n(&format!(
            "rollout_edge_origin_errors_total{{arm=\"{arm}\"}}"
        ));
        assert_eq!(errors, 0, "no {arm} origin failed yet");
    }
    assert_eq!(n("rollout_edge_config_version"), 1);

    // New's origin goes down: its requests fail to connect and answer 502 on new.
    let (v2, s2) = envelope(2, config(&old.url(), &dead, 50.0, json!({})));
    assert_eq!(push(&client, edge.addr, v2, &s2).await.0, 200);
    let second = tally(
        &client,
        edge.addr,
        (200..400).map(|i| format!("metrics-{i}")),
    )
    .await;
    let (old_ok2, new_failed) = (served(&second, "old", 200), served(&second, "new", 502));
    assert_eq!(old_ok2 + new_failed, 200, "{second:?}");
    assert!(new_failed > 0, "some keys still go to new: {second:?}");
    // And one response the host makes itself: no Host header, a 400 with no arm.
    let addr = edge.addr;
    let raw = tokio::task::spawn_blocking(move || {
        raw_request(addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    })
    .await
    .expect("raw request");
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");

    let text = endpoint.scrape(&client).await;
    let n = |series: &str| sample(&text, series);
    assert_eq!(all_requests(&text), 401, "{text}");
    assert_eq!(
        n(r#"rollout_edge_requests_total{arm="old",class="2xx"}"#),
        old_ok + old_ok2
    );
    assert_eq!(
        n(r#"rollout_edge_requests_total{arm="new",class="2xx"}"#),
        new_ok
    );
    assert_eq!(
        n(r#"rollout_edge_requests_total{arm="new",class="5xx"}"#),
        new_failed
    );
    assert_eq!(
        n(r#"rollout_edge_requests_total{arm="old",class="5xx"}"#),
        0
    );
    assert_eq!(
        n(r#"rollout_edge_requests_total{arm="none",class="4xx"}"#),
        1
    );
    assert_eq!(
        n(r#"rollout_edge_origin_seconds_count{arm="old"}"#),
        old_ok + old_ok2
    );
    assert_eq!(
        n(r#"rollout_edge_origin_seconds_count{arm="new"}"#),
        new_ok + new_failed,
        "a failed request is timed too, up to its error"
    );
    assert_eq!(
        n(r#"rollout_edge_origin_errors_total{arm="new"}"#),
        new_failed
    );
    assert_eq!(n(r#"rollout_edge_origin_errors_total{arm="old"}"#), 0);
    assert_eq!(n("rollout_edge_config_version"), 2);
}

#[tokio::test]
async fn a_second_edge_cannot_take_a_port_a_per_core_edge_serves() {
    // SO_REUSEPORT lets sockets share a port; a second edge started on the
    // same port by mistake must fail, not take part of the traffic.
    let edge = || {
        let setup = EdgeSetup {
            bootstrap: None,
            allow: Vec::new(),
        };
        Arc::new(test_edge(setup, Arc::new(MemoryKv::default())))
    };
    // These threads serve until the test binary exits.
    let addr =
        rollout_host::serve_per_core(runtime(), edge(), "127.0.0.1:0".parse().expect("addr"), 2)
            .expect("the first edge starts");
    let second =
        rollout_host::serve_per_core(runtime(), edge(), addr, 2).expect_err("the port is taken");
    assert!(
        format!("{second:#}").contains(&format!("binding {addr}")),
        "{second:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_threads_count_into_one_shared_metrics() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    let metrics = Arc::new(Metrics::default());
    // These threads serve until the test binary exits; nothing else uses them.
    let addr = rollout_host::serve_per_core_with_metrics(
        runtime(),
        Arc::new(test_edge(setup, Arc::new(MemoryKv::default()))),
        "127.0.0.1:0".parse().expect("addr"),
        2,
        Some(metrics.clone()),
    )
    .expect("per-core edge starts");
    let endpoint = MetricsEndpoint::start(metrics).await;
    // A connection per request, so SO_REUSEPORT spreads them over the threads.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let (v1, s1) = envelope(1, config(&old.url(), &new.url(), 50.0, json!({})));
    assert_eq!(push(&fresh, addr, v1, &s1).await.0, 200);

    let served = tally(&fresh, addr, (0..100).map(|i| format!("per-core-{i}"))).await;
    let text = endpoint.scrape(&fresh).await;
    assert_eq!(all_requests(&text), 100, "{text}");
    for arm in ["old", "new"] {
        let want = served.get(&(arm.to_owned(), 200)).copied().unwrap_or(0);
        let n = |series: String| sample(&text, &series);
        assert_eq!(
            n(format!(
                "rollout_edge_requests_total{{arm=\"{arm}\",class=\"2xx\"}}"
            )),
            want
        );
        assert_eq!(
            n(format!(
                "rollout_edge_origin_seconds_count{{arm=\"{arm}\"}}"
            )),
            want
        );
    }
}
