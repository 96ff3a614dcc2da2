//! Criterion benchmarks for the per-request kernel and the apply-time compile.
//! `cargo bench -p rollout-core`; BENCHMARKS.md explains the figures.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rollout_core::edge::Active;
use rollout_core::{Applied, Config, Digest, Request, bucket_of, decide};

/// 10 routes (9 matched by host and path, one default), 2 flags each, and 3
/// key sources per route: the shape of a busy production config.
fn realistic_config() -> String {
    let route = |i: usize, matches: bool| {
        let m = if matches {
            format!(r#""match":{{"host":"svc{i}.example.com","path_prefix":"/api/v{i}"}},"#)
        } else {
            String::new()
        };
        format!(
            r#"{{"id":"route-{i}",{m}"old":"https://old-{i}.internal","new":"https://new-{i}.internal",
            "new_weight":12.5,"key":["header:x-user-id","cookie:session","client-ip"],
            "flags":[{{"name":"flag-{i}-a","percent":10,"allow":["vip-1","vip-2"]}},{{"name":"flag-{i}-b","percent":50}}]}}"#
        )
    };
    let routes: Vec<String> = (0..10).map(|i| route(i, i < 9)).collect();
    format!(r#"{{"schema":1,"routes":[{}]}}"#, routes.join(","))
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

    let config = Config::from_json(realistic_config().as_bytes()).expect("valid config");
    let headers = [
        ("host", "svc5.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, br"),
        (
            "cookie",
            "theme=dark; session=3f2c9a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f; _ga=GA1.2.3",
        ),
        ("x-request-id", "abc123"),
        ("referer", "https://svc5.example.com/"),
    ];
    let request = Request {
        method: "GET",
        host: "svc5.example.com",
        path: "/api/v5/orders/17",
        query: "page=2",
        headers: &headers,
        client_ip: Some("198.51.100.23"),
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
