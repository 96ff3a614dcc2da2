//! Criterion benchmarks for the per-request kernel and the apply-time compile.
//! `cargo bench -p rollout-core`; BENCHMARKS.md explains the figures.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rollout_core::edge::Active;
use rollout_core::{Applied, Config, Digest, Request, bucket_of, decide};

/// The decision both decide() benchmarks time, natively here and inside the
/// component (rollout-bench): a busy production config and a browser GET.
const DECIDE_CASE: &str = include_str!("decide-case.json");

#[derive(serde::Deserialize)]
struct DecideCase {
    config: serde_json::Value,
    request: CaseRequest,
}

#[derive(serde::Deserialize)]
struct CaseRequest {
    host: String,
    path: String,
    client_ip: String,
    headers: Vec<(String, String)>,
}

/// A config of about 64 KiB: many routes with allow-lists.
fn big_config() -> String {
    let route = |i: usize| {
        let allow: Vec<String> = (0..20)
            .map(|j| format!(r#""user-{i:04}-{j:04}""#))
            .collect();
        format!(
            r#"{{"id":"route-{i}","match":{{"path_prefix":"/p{i}"}},"old":"https://old-{i}.internal","new":"https://new-{i}.internal",
            "new_weight":1.5,"key":["header:x-user-id","cookie:session"],"flags":[{{"name":"f{i}","percent":5,"allow":[{}]}}]}}"#,
            allow.join(",")
        )
    };
    let mut routes: Vec<String> = Vec::new();
    let mut len = 0;
    while len < 64 * 1024 - 600 {
        let r = route(routes.len());
        len += r.len() + 1;
        routes.push(r);
    }
    routes.push(r#"{"id":"default","old":"https://old.internal","new":"https://new.internal","new_weight":0}"#.into());
    format!(r#"{{"schema":1,"routes":[{}]}}"#, routes.join(","))
}

fn benches(c: &mut Criterion) {
    let key = "3f2c9a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f"; // 36 bytes
    c.bench_function("bucket_of/36-byte key", |b| {
        b.iter(|| bucket_of(black_box("route-5"), black_box(key)))
    });

    let case: DecideCase = serde_json::from_str(DECIDE_CASE).expect("decide-case.json");
    let config_json = serde_json::to_vec(&case.config).expect("json");
    let config = Config::from_json(&config_json).expect("valid config");
    let headers: Vec<(&str, &str)> = case
        .request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let request = Request {
        method: "GET",
        host: &case.request.host,
        path: &case.request.path,
        query: "",
        headers: &headers,
        client_ip: Some(&case.request.client_ip),
        mint: None,
    };
    c.bench_function("decide/10 routes, 20 flags, 3 key sources", |b| {
        b.iter(|| decide(black_box(&config), black_box(&request)))
    });

    let big = big_config();
    assert!(
        (60 * 1024..=66 * 1024).contains(&big.len()),
        "{} bytes",
        big.len()
    );
    let name = format!("parse+validate+compile/{} KiB config", big.len() / 1024);
    c.bench_function(&name, |b| {
        b.iter(|| Config::from_json(black_box(big.as_bytes())).expect("valid"))
    });

    let applied = Applied {
        version: 7,
        digest: Digest::of(b"bench"),
    };
    let compact = Active {
        applied,
        config: config.clone(),
    }
    .to_compact();
    c.bench_function("Active::from_compact/realistic config", |b| {
        b.iter(|| Active::from_compact(black_box(&compact)).expect("decodes"))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
