//! Decision cost: `bucket_of` and `decide()` natively (criterion's samples)
//! and inside a wasm guest (the kernel component's guest-side loops timed from
//! the host), a request's whole routing work in that guest, and instantiating
//! the edge component.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use rollout_host::{KERNEL_PATH, KernelComponent, KvBackend, MemoryKv, Runtime};
use serde::Deserialize;

use crate::report::Row;
use crate::stats::{Spread, secs, spread};

const SECTION: &str = "decision";

/// The decision both decide() benchmarks time (also read by core's criterion bench).
const DECIDE_CASE: &str = include_str!("../../core/benches/decide-case.json");

/// The 36-byte key both bucket benchmarks hash, under route-5's salt.
const KEY: &str = "3f2c9a1e-8b7d-4c6a-9e5f-1a2b3c4d5e6f";

#[derive(Deserialize)]
struct DecideCase {
    config: serde_json::Value,
    request: CaseRequest,
}

#[derive(Deserialize)]
struct CaseRequest {
    host: String,
    path: String,
    client_ip: String,
    headers: Vec<(String, String)>,
}

/// DESIGN's budget for decide(): per SHA-256 it needs, natively and in wasm.
const PER_HASH_NATIVE: f64 = 70e-9;
const PER_HASH_WASM: f64 = 350e-9;

/// How many SHA-256 the decide case's decision takes, as core's decision
/// counts them (the arm's bucket, and each flag's the allow-list did not
/// settle).
fn hashes_of(case: &DecideCase) -> anyhow::Result<u32> {
    let json = serde_json::to_vec(&case.config)?;
    let config = rollout_core::Config::from_json(&json).context("decide-case config")?;
    let headers: Vec<(&str, &str)> = case
        .request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let request = rollout_core::Request {
        method: "GET",
        host: &case.request.host,
        path: &case.request.path,
        query: "",
        headers: &headers,
        client_ip: Some(&case.request.client_ip),
        mint: None,
    };
    Ok(rollout_core::decide(&config, &request).hashes)
}

/// The per-hash budget for `hashes` hashes, as the table prints it.
fn per_hash_budget(per_hash: f64, hashes: u32) -> String {
    format!(
        "≤ {} per SHA-256 ({hashes} here: ≤ {})",
        secs(per_hash),
        secs(per_hash * f64::from(hashes))
    )
}

/// How many samples to take.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Calls timed per guest-side measurement.
    pub samples: usize,
    /// Iterations inside each call.
    pub loop_len: u32,
}

/// Criterion's samples for one benchmark: the mean time per iteration of
/// each sample, in seconds.
fn criterion_samples(dir: &Path, full_id: &str) -> anyhow::Result<Vec<f64>> {
    #[derive(Deserialize)]
    struct Id {
        full_id: String,
    }
    #[derive(Deserialize)]
    struct Sample {
        iters: Vec<f64>,
        times: Vec<f64>,
    }
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "reading criterion results in {} (run `cargo bench -p rollout-core --bench core` first)",
            dir.display()
        )
    })?;
    for entry in entries {
        let new = entry?.path().join("new");
        let Ok(id) = std::fs::read(new.join("benchmark.json")) else {
            continue;
        };
        let id: Id = serde_json::from_slice(&id)?;
        if id.full_id != full_id {
            continue;
        }
        let sample: Sample = serde_json::from_slice(&std::fs::read(new.join("sample.json"))?)
            .context("criterion sample.json")?;
        // times are nanoseconds for the whole sample of iters iterations.
        return Ok(sample
            .iters
            .iter()
            .zip(&sample.times)
            .filter(|(i, _)| **i > 0.0)
            .map(|(i, t)| t / i / 1e9)
            .collect());
    }
    bail!(
        "no criterion result for {full_id:?} in {} (run `cargo bench -p rollout-core --bench core` first)",
        dir.display()
    )
}

/// Pushes the decide case's config into `kv` the way an edge applies it, so
/// the kernel component's `route-repeat` reads what a real edge would.
async fn apply(
    runtime: &Arc<Runtime>,
    kv: Arc<dyn KvBackend>,
    config: &serde_json::Value,
) -> anyhow::Result<()> {
    let doc = serde_json::from_value(config.clone()).context("decide-case config")?;
    let (body, signature) = rollout_tests::envelope(1, doc);
    let edge = rollout_host::Edge {
        kv,
        variables: [(
            "public_key".to_owned(),
            rollout_tests::secret().public_key().to_string(),
        )]
        .into(),
        allow: rollout_host::AllowList::default(),
    };
    let running =
        rollout_host::RunningEdge::start(runtime.clone(), edge, "127.0.0.1:0".parse()?).await?;
    let (status, reply) =
        rollout_tests::push(&rollout_tests::client(), running.addr, body, &signature).await;
    if status != 200 {
        bail!("the edge refused the decide-case config: {status} {reply}");
    }
    Ok(())
}

/// Runs the section. The guest-side figures come from the kernel component
/// ([`KERNEL_PATH`], built next to the edge), which the edge itself does not export.
pub async fn run(runtime: &Arc<Runtime>, criterion: &Path, plan: Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let native = |id: &str| -> anyhow::Result<Spread> {
        let mut s = criterion_samples(criterion, id)?;
        Spread::of(&mut s).with_context(|| format!("criterion result for {id:?} has no samples"))
    };
    let bucket = native("bucket_of/36-byte key")?;
    rows.push(Row::info(
        SECTION,
        format!(
            "bucket_of, 36-byte key, native (criterion, {} samples)",
            bucket.n
        ),
        spread(&bucket),
    ));
    let case: DecideCase = serde_json::from_str(DECIDE_CASE).context("decide-case.json")?;
    let hashes = hashes_of(&case)?;
    let decide = native("decide/10 routes, 20 flags, 3 key sources")?;
    rows.push(Row::budget(
        SECTION,
        format!(
            "decide(), parsed config (10 routes, 20 flags), native (criterion, {} samples)",
            decide.n
        ),
        spread(&decide),
        per_hash_budget(PER_HASH_NATIVE, hashes),
        decide.p50 <= PER_HASH_NATIVE * f64::from(hashes),
    ));
    for id in [
        "Active::from_compact/realistic config",
        "parse+validate+compile/64 KiB config",
    ] {
        // Apply-time costs: reported when criterion ran them (not in smoke runs).
        if let Ok(s) = native(id) {
            rows.push(Row::info(
                SECTION,
                format!("{id}, native (criterion, {} samples)", s.n),
                spread(&s),
            ));
        }
    }

    let config_json = serde_json::to_string(&case.config)?;
    let component = KernelComponent::load(Path::new(KERNEL_PATH))?;
    let mut kernel = component.instantiate().await?;

    // Guest-side loops: each call runs `loop_len` iterations; one sample is
    // the call's time divided by them.
    let mut per_hash = Vec::with_capacity(plan.samples);
    for _ in 0..plan.samples {
        let start = Instant::now();
        kernel.bucket_repeat("route-5", KEY, plan.loop_len).await?;
        per_hash.push(start.elapsed().as_secs_f64() / f64::from(plan.loop_len));
    }
    let wasm_bucket = Spread::of(&mut per_hash).context("no samples")?;
    rows.push(Row::info(
        SECTION,
        format!(
            "bucket_of in the kernel component ({} calls of {} hashes)",
            wasm_bucket.n, plan.loop_len
        ),
        spread(&wasm_bucket),
    ));

    // decide-repeat parses the config once per call: time that (times = 0)
    // and take it off each sample.
    let (host, path, headers) = (
        &case.request.host,
        &case.request.path,
        &case.request.headers,
    );
    let mut fixed = Vec::with_capacity(plan.samples);
    for _ in 0..plan.samples {
        let start = Instant::now();
        kernel
            .decide_repeat(&config_json, host, path, headers, 0)
            .await?
            .map_err(anyhow::Error::msg)?;
        fixed.push(start.elapsed().as_secs_f64());
    }
    let fixed = Spread::of(&mut fixed).context("no samples")?.p50;
    let mut per_decide = Vec::with_capacity(plan.samples);
    let mut arm = String::new();
    for _ in 0..plan.samples {
        let start = Instant::now();
        arm = kernel
            .decide_repeat(&config_json, host, path, headers, plan.loop_len)
            .await?
            .map_err(anyhow::Error::msg)?;
        let t = start.elapsed().as_secs_f64() - fixed;
        per_decide.push(t.max(0.0) / f64::from(plan.loop_len));
    }
    if arm != "old" && arm != "new" {
        bail!("decide-repeat answered {arm:?}");
    }
    let wasm_decide = Spread::of(&mut per_decide).context("no samples")?;
    rows.push(Row::budget(
        SECTION,
        format!(
            "decide(), parsed config, in the kernel component ({} calls of {}, parse time {} subtracted)",
            wasm_decide.n,
            plan.loop_len,
            secs(fixed)
        ),
        spread(&wasm_decide),
        per_hash_budget(PER_HASH_WASM, hashes),
        wasm_decide.p50 <= PER_HASH_WASM * f64::from(hashes),
    ));

    // A request's routing work, one call per request: open the store, read
    // and decode the stored config, decide.
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    apply(runtime, kv.clone(), &case.config).await?;
    let mut kernel = component.instantiate_with(kv).await?;
    let mut per_request = Vec::with_capacity(plan.samples * 10);
    for _ in 0..plan.samples * 10 {
        let start = Instant::now();
        kernel
            .route_repeat(host, path, headers, 1)
            .await?
            .map_err(anyhow::Error::msg)?;
        per_request.push(start.elapsed().as_secs_f64());
    }
    let request = Spread::of(&mut per_request).context("no samples")?;
    rows.push(Row::budget(
        SECTION,
        format!(
            "per request in the kernel component: store read + decode + decide ({} calls, host call included)",
            request.n
        ),
        spread(&request),
        "≤ 20 µs p50",
        request.p50 <= 20e-6,
    ));

    rows.extend(growth(runtime, &component, plan).await?);

    // Spin's model is a fresh instance of the edge per request: its cost on
    // its own (instance dropped uncalled, inside the timing as in a request).
    let mut instantiate = Vec::with_capacity(plan.samples * 10);
    for _ in 0..plan.samples * 10 {
        let start = Instant::now();
        runtime.instantiate_once().await?;
        instantiate.push(start.elapsed().as_secs_f64());
    }
    let instantiate = Spread::of(&mut instantiate).context("no samples")?;
    rows.push(Row::info(
        SECTION,
        format!(
            "instantiating the edge component (one per request; {} instances)",
            instantiate.n
        ),
        spread(&instantiate),
    ));
    Ok(rows)
}

/// A config of `routes` routes (the last one the default) whose matched
/// routes each take one path prefix, with `flags` flags on every route.
fn grown_config(routes: usize, flags: usize) -> serde_json::Value {
    let route = |i: usize| {
        let flags: Vec<serde_json::Value> = (0..flags)
            .map(|f| serde_json::json!({"name": format!("flag-{f}"), "percent": 50}))
            .collect();
        let mut r = serde_json::json!({
            "id": format!("route-{i}"),
            "old": "https://old.internal",
            "new": "https://new.internal",
            "new_weight": 50,
            "key": ["header:x-user-id", "cookie:session"],
            "flags": flags,
        });
        if i + 1 < routes {
            r["match"] = serde_json::json!({"path_prefix": format!("/r{i}/")});
        }
        r
    };
    serde_json::json!({"schema": 1, "routes": (0..routes).map(route).collect::<Vec<_>>()})
}

/// How a request's routing work grows with the config: 1, 16 and 256
/// routes (a request matching the first route, and one reaching the last,
/// the default, after every match was tried), and 0, 16 and 256 flags on
/// the route a request takes (every flag is bucketed for every request).
async fn growth(
    runtime: &Arc<Runtime>,
    component: &KernelComponent,
    plan: Plan,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let headers = vec![("x-user-id".to_owned(), KEY.to_owned())];
    let mut cases: Vec<(usize, usize, &str, String)> = Vec::new();
    for routes in [1, 16, 256] {
        cases.push((routes, 0, "first", "/r0/x".to_owned()));
        if routes > 1 {
            cases.push((routes, 0, "last (the default)", "/none".to_owned()));
        }
    }
    // Flags: the 1-route row above is the 0-flags case. decide() buckets
    // every flag of the route taken for every request (no flag is skipped
    // once another is on or off), so there is no first or last flag to time.
    for flags in [16, 256] {
        cases.push((
            1,
            flags,
            "the only route, every flag evaluated (no first or last flag)",
            "/r0/x".to_owned(),
        ));
    }
    for (routes, flags, which, path) in cases {
        let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
        apply(runtime, kv.clone(), &grown_config(routes, flags)).await?;
        let mut kernel = component.instantiate_with(kv).await?;
        let mut samples = Vec::with_capacity(plan.samples * 10);
        for _ in 0..plan.samples * 10 {
            let start = Instant::now();
            kernel
                .route_repeat("h.example.com", &path, &headers, 1)
                .await?
                .map_err(anyhow::Error::msg)?;
            samples.push(start.elapsed().as_secs_f64());
        }
        let s = Spread::of(&mut samples).context("no samples")?;
        rows.push(Row::info(
            SECTION,
            format!(
                "growth: per request in the kernel component, {routes} route{}, {flags} flags on the route taken, {which}{} ({} calls)",
                if routes == 1 { "" } else { "s" },
                if flags == 0 { " route matched" } else { "" },
                s.n
            ),
            spread(&s),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decide_case_is_judged_by_the_hashes_its_decision_takes() {
        let case: DecideCase = serde_json::from_str(DECIDE_CASE).expect("decide-case.json");
        // route-5 matches (host and path prefix), the session cookie is the
        // key, and the route has two flags: three SHA-256.
        assert_eq!(hashes_of(&case).expect("decides"), 3);
        assert_eq!(
            per_hash_budget(PER_HASH_WASM, 3),
            format!(
                "≤ {} per SHA-256 (3 here: ≤ {})",
                secs(350e-9),
                secs(1.05e-6)
            )
        );
    }
}
