//! The pass-through component (`bench/passthrough`), the floor the edge-hop
//! benchmark compares the router against: a pure wasi:http proxy (nothing
//! from Spin) that forwards every request to `$ORIGIN` and relays the
//! answer, bodies streamed both ways, and answers 502 rather than trapping.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rollout_host::{AllowList, Edge, MemoryKv, RunningEdge, Runtime};
use rollout_tests::{Origin, client, pattern};
use sha2::{Digest as _, Sha256};

fn component() -> PathBuf {
    match std::env::var_os("ROLLOUT_PASSTHROUGH") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target/wasm32-wasip2/release/rollout_passthrough.wasm"),
    }
}

fn load() -> Runtime {
    Runtime::load(&component()).unwrap_or_else(|e| {
        panic!(
            "{e:#}\n(build it with `cargo build --release --target wasm32-wasip2 \
             -p rollout-passthrough`; scripts/test.sh does)"
        )
    })
}

/// The pass-through served by rollout-host, with `env` as its environment
/// and `allow` as the origins it may call.
async fn serve(env: &[(&str, String)], allow: &[String]) -> RunningEdge {
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let edge = Edge {
        kv: Arc::new(MemoryKv::default()),
        variables: HashMap::new(),
        allow: AllowList::new(allow).expect("allow list"),
    };
    RunningEdge::start(
        Arc::new(load().with_env(env)),
        edge,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("the pass-through serves")
}

#[test]
fn the_pass_through_imports_nothing_from_spin() {
    let (imports, exports) = load().interface_names();
    let spin: Vec<&String> = imports
        .iter()
        .filter(|i| i.starts_with("fermyon:") || i.contains("keyvalue"))
        .collect();
    assert!(spin.is_empty(), "imports from Spin: {spin:?}");
    // wasi:http and the WASI 0.2 packages Rust's standard library links.
    let unexpected: Vec<&String> = imports
        .iter()
        .filter(|i| {
            ![
                "wasi:http/",
                "wasi:cli/",
                "wasi:io/",
                "wasi:clocks/",
                "wasi:random/",
                "wasi:filesystem/",
                "wasi:sockets/",
            ]
            .iter()
            .any(|p| i.starts_with(p) && i.contains("@0.2."))
        })
        .collect();
    assert!(unexpected.is_empty(), "unexpected imports: {unexpected:?}");
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler@0.2.")),
        "{imports:?}"
    );
    let exports: Vec<&str> = exports
        .iter()
        .map(|e| e.split_once("@0.2.").map_or(e.as_str(), |(i, _)| i))
        .collect();
    assert_eq!(exports, ["wasi:http/incoming-handler"]);
}

#[tokio::test]
async fn it_forwards_method_path_headers_and_bodies_to_origin() {
    let origin = Origin::start("old").await;
    let edge = serve(&[("ORIGIN", origin.url())], &[origin.url()]).await;
    let client = client();

    // Method, path and query, headers (hop-by-hop ones stay behind), and a
    // body large enough to stream in many chunks.
    let body = pattern(3 << 20);
    let resp = client
        .post(format!("http://{}/some/path?q=1&r=two", edge.addr))
        .header("x-user-id", "user-7")
        .header("x-trace", "a")
        .header("connection", "keep-alive, x-trace-hop")
        .body(body.clone())
        .send()
        .await
        .expect("reaches the pass-through");
    assert_eq!(resp.status(), 200);
    assert_eq!(rollout_tests::header(&resp, "x-origin"), "old");
    let seen: serde_json::Value = resp.json().await.expect("the origin's JSON");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/some/path?q=1&r=two");
    assert_eq!(seen["headers"]["x-user-id"][0], "user-7");
    assert_eq!(seen["headers"]["x-trace"][0], "a");
    assert_eq!(seen["headers"]["host"][0], origin.addr.to_string());
    assert_eq!(seen["body_len"], body.len());
    assert_eq!(seen["body_sha256"], hex::encode(Sha256::digest(&body)));

    // The origin's status and a large body, relayed as it streams.
    let resp = client
        .get(format!("http://{}/status/418", edge.addr))
        .send()
        .await
        .expect("reaches the pass-through");
    assert_eq!(resp.status(), 418);
    let resp = client
        .get(format!("http://{}/big/{}", edge.addr, 5 << 20))
        .send()
        .await
        .expect("reaches the pass-through");
    assert_eq!(resp.status(), 200);
    let digest = rollout_tests::header(&resp, "x-body-sha256");
    let got = resp.bytes().await.expect("the whole body");
    assert_eq!(got.len(), 5 << 20);
    assert_eq!(hex::encode(Sha256::digest(&got)), digest);

    // HEAD: the origin's headers, no body.
    let resp = client
        .head(format!("http://{}/", edge.addr))
        .send()
        .await
        .expect("reaches the pass-through");
    assert_eq!(resp.status(), 200);
    assert_eq!(rollout_tests::header(&resp, "x-origin"), "old");
}

#[tokio::test]
async fn without_a_reachable_origin_it_answers_502() {
    let client = client();
    let origin = Origin::start("old").await;
    let refused = {
        let gone = Origin::start("gone").await;
        gone.url()
    };
    for (env, allow) in [
        (vec![], vec![origin.url()]),
        (vec![("ORIGIN", "not an origin".to_owned())], vec![]),
        (vec![("ORIGIN", "ftp://127.0.0.1:1".to_owned())], vec![]),
        // Not on the host's allow-list.
        (vec![("ORIGIN", origin.url())], vec![]),
        // Nothing listens there any more.
        (vec![("ORIGIN", refused.clone())], vec![refused.clone()]),
    ] {
        let edge = serve(&env, &allow).await;
        let resp = client
            .post(format!("http://{}/x", edge.addr))
            .body("a body")
            .send()
            .await
            .expect("reaches the pass-through");
        assert_eq!(resp.status(), 502, "{env:?}");
        let text = resp.text().await.expect("a text body");
        assert!(text.starts_with("bad gateway: "), "{env:?}: {text}");
        // A request without a body gets the same.
        let again = client
            .get(format!("http://{}/", edge.addr))
            .send()
            .await
            .expect("answers again");
        assert_eq!(again.status(), 502);
    }
    assert_eq!(
        origin.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached an origin it was not allowed to"
    );
}
