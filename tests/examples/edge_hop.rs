//! A quick measurement of what the edge costs, printed as a table:
//!
//! - sequential keep-alive requests straight to a loopback origin and through
//!   rollout-host running the component (p50 / p99 of each);
//! - inside the component: a request's routing work (store read, decode of a
//!   ~4 KiB config, decide), and bucketing a 36-byte key.
//!
//! `cargo run --release -p rollout-tests --example edge_hop -- [REQUESTS]`
//! (default 10 000). Needs the release component built first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollout_host::{KvBackend, MemoryKv};
use rollout_tests::{EdgeSetup, Origin, client, envelope, push, runtime, start_edge};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn time_requests(client: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let resp = client
            .get(url)
            .header("x-user-id", format!("user-{i}"))
            .send()
            .await
            .expect("request");
        let _ = resp.bytes().await.expect("body");
        times.push(start.elapsed());
    }
    times.sort();
    times
}

/// About 4 KiB of config: eight routes with flags, allow-lists and three key sources.
fn four_kib_config(old: &str, new: &str) -> rollout_core::ConfigDoc {
    let routes: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            let mut r = json!({
                "id": format!("route-{i}"),
                "old": old, "new": new, "new_weight": 10,
                "key": ["header:x-user-id", "cookie:session", "client-ip"],
                "flags": [
                    {"name": format!("flag-{i}-a"), "percent": 10, "allow": (0..12).map(|j| format!("vip-user-{j:04}")).collect::<Vec<_>>()},
                    {"name": format!("flag-{i}-b"), "percent": 50}
                ]
            });
            if i < 7 {
                r["match"] = json!({"host": format!("svc{i}.example.com"), "path_prefix": format!("/api/v{i}")});
            }
            r
        })
        .collect();
    serde_json::from_value(json!({"schema": 1, "routes": routes})).expect("config")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    let edge = start_edge(setup, kv.clone()).await;
    let http = client();
    let config = four_kib_config(&old.url(), &new.url());
    let config_bytes = serde_json::to_vec(&config).expect("json").len();
    let (body, sig) = envelope(1, config);
    assert_eq!(push(&http, edge.addr, body, &sig).await.0, 200, "push");

    let direct_url = format!("{}/", old.url());
    let edge_url = format!("http://{}/", edge.addr);
    // Warm both paths (connections, caches) before timing.
    time_requests(&http, &direct_url, 500).await;
    time_requests(&http, &edge_url, 500).await;
    let direct = time_requests(&http, &direct_url, n).await;
    let via_edge = time_requests(&http, &edge_url, n).await;

    // A fresh instance per request is Spin's model; time instantiation alone.
    let mut instantiations = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let start = Instant::now();
        let k = runtime().kernel().await.expect("kernel");
        instantiations.push(start.elapsed());
        drop(k);
    }
    instantiations.sort();
    let mut kernel = runtime().kernel_with(kv).await.expect("kernel");
    let headers = vec![
        (
            "x-user-id".to_owned(),
            "3f2c9a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f".to_owned(),
        ),
        ("cookie".to_owned(), "theme=dark; session=abc".to_owned()),
        ("accept".to_owned(), "text/html".to_owned()),
    ];
    let mut route_times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let arm = kernel
            .route_repeat("svc6.example.com", "/api/v6/orders", &headers, 1)
            .await
            .expect("call");
        route_times.push(start.elapsed());
        assert!(arm.is_ok(), "{arm:?}");
    }
    route_times.sort();
    let bulk = 10_000u32;
    let start = Instant::now();
    kernel
        .route_repeat("svc6.example.com", "/api/v6/orders", &headers, bulk)
        .await
        .expect("call")
        .expect("routes");
    let route_mean = start.elapsed() / bulk;
    let hashes = 200_000u32;
    let start = Instant::now();
    kernel
        .bucket_repeat("route-5", "3f2c9a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f", hashes)
        .await
        .expect("call");
    let bucket_mean = start.elapsed().as_secs_f64() * 1e9 / f64::from(hashes);

    println!("edge hop on loopback, {n} sequential keep-alive GETs each (after 500 warm-up):");
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| direct to origin | {} | {} |",
        micros(percentile(&direct, 0.5)),
        micros(percentile(&direct, 0.99))
    );
    println!(
        "| through rollout-host + component | {} | {} |",
        micros(percentile(&via_edge, 0.5)),
        micros(percentile(&via_edge, 0.99))
    );
    println!(
        "| added by the edge (p50 difference) | {} | |",
        micros(percentile(&via_edge, 0.5).saturating_sub(percentile(&direct, 0.5)))
    );
    println!(
        "| of which instantiating the component (one per request) | {} | {} |",
        micros(percentile(&instantiations, 0.5)),
        micros(percentile(&instantiations, 0.99))
    );
    println!();
    println!(
        "inside the component ({config_bytes}-byte config: 8 routes, 16 flags, 3 key sources):"
    );
    println!(
        "| store read + decode + decide, one call per request (incl. host call) | p50 {} | p99 {} |",
        micros(percentile(&route_times, 0.5)),
        micros(percentile(&route_times, 0.99))
    );
    println!(
        "| store read + decode + decide, mean of {bulk} in one call | {} | |",
        micros(route_mean)
    );
    println!("| bucket_of, 36-byte key, mean of {hashes} in one call | {bucket_mean:.0} ns | |");
}
