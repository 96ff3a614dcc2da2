//! Cold start: compiling the component, a fresh rollout-host process until
//! its first 200, and the component's size.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rollout_host::Runtime;

use crate::procs::{Origin, free_port, until_ok};
use crate::report::Row;
use crate::stats::{Spread, spread};

const SECTION: &str = "cold";

/// Runs the section, each start measured `times` times.
pub async fn run(host_bin: &Path, component: &Path, times: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let size = std::fs::metadata(component)
        .with_context(|| format!("component {}", component.display()))?
        .len();
    rows.push(Row::budget(
        SECTION,
        format!("component size ({})", component.display()),
        format!("{size} B ({:.0} KiB)", size as f64 / 1024.0),
        "≤ 1 MiB",
        size <= 1024 * 1024,
    ));

    let mut compile = Vec::with_capacity(times);
    for _ in 0..times {
        let start = Instant::now();
        let runtime = Runtime::load(component)?;
        compile.push(start.elapsed().as_secs_f64());
        drop(runtime);
    }
    let compile = Spread::of(&mut compile).context("no samples")?;
    rows.push(Row::info(
        SECTION,
        format!(
            "compile the component (Runtime::load: engine, compile, link, pre-instantiate; {} times)",
            compile.n
        ),
        spread(&compile),
    ));

    let origin = Origin::start("old").await?;
    let client = rollout_tests::client();
    let mut first = Vec::with_capacity(times);
    for _ in 0..times {
        let port = free_port()?;
        let start = Instant::now();
        let _host = tokio::process::Command::new(host_bin)
            .arg("--component")
            .arg(component)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--var", &format!("old_origin={}", origin.url())])
            .args(["--allow-outbound", &origin.url()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", host_bin.display()))?;
        let url = format!("http://127.0.0.1:{port}/");
        until_ok(&client, &url, Duration::from_secs(60)).await?;
        first.push(start.elapsed().as_secs_f64());
    }
    let first = Spread::of(&mut first).context("no samples")?;
    rows.push(Row::info(
        SECTION,
        format!(
            "rollout-host process start → first 200 through the component ({} starts)",
            first.n
        ),
        spread(&first),
    ));
    Ok(rows)
}
