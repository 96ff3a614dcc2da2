//! `rollout-bench`: measures what the router costs and prints one table,
//! every figure next to its budget in DESIGN. `scripts/bench.sh` builds what
//! it needs and runs it; BENCHMARKS.md describes the method.

mod cold;
mod decision;
mod hop;
mod procs;
mod propagation;
mod report;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

/// Measure the router and print a table of the figures.
#[derive(Debug, Parser)]
struct Args {
    /// A few iterations of everything, to check the harness works (seconds,
    /// not figures).
    #[arg(long)]
    smoke: bool,
    /// The edge component (release build).
    #[arg(long, default_value = rollout_host::COMPONENT_PATH)]
    component: PathBuf,
    /// The pass-through component (release build): the edge hop's wasi:http
    /// floor.
    #[arg(long, default_value = hop::PASSTHROUGH_PATH)]
    passthrough: PathBuf,
    /// `wasmtime` (wasmtime-cli 48.0.8) for the edge hop's `wasmtime serve`
    /// path; default: target/bench-tools/bin/wasmtime, else PATH.
    #[arg(long, env = "WASMTIME")]
    wasmtime: Option<PathBuf>,
    /// Where `rollout-host` and `rollout` are; default: next to this binary.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Criterion's results for rollout-core's benches.
    #[arg(long, default_value = "target/criterion")]
    criterion_dir: PathBuf,
    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The edge hop's paths to measure (default: all; `direct` always runs).
    #[arg(long, value_enum, value_delimiter = ',')]
    hop_paths: Vec<hop::Peer>,
    /// Rounds per load in the edge hop (default 5; --smoke runs 1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    hop_rounds: u64,
    /// Seconds per wrk run in the edge hop (default 3; --smoke runs 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    hop_seconds: u32,
    /// A rollout-host binary to measure beside this one in the edge hop
    /// (path `baseline`), running `--baseline-component` or the router.
    #[arg(long)]
    baseline_host: Option<PathBuf>,
    /// A router component to measure beside this one in the edge hop
    /// (path `baseline`), on `--baseline-host` or this rollout-host.
    #[arg(long)]
    baseline_component: Option<PathBuf>,
    /// Sections to run (default: all).
    #[arg(value_enum)]
    sections: Vec<Section>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// bucket and decide(), native and in the component.
    Decision,
    /// The edge hop against a direct request, nginx, HAProxy and other
    /// wasi:http hosts, under wrk.
    Hop,
    /// Pushes to many edges, some of them down.
    Propagation,
    /// Compile time, process start to first 200, size.
    Cold,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let baseline_given = args.baseline_host.is_some() || args.baseline_component.is_some();
    let baseline_named = args.hop_paths.contains(&hop::Peer::Baseline);
    if baseline_given && !args.hop_paths.is_empty() && !baseline_named {
        anyhow::bail!(
            "--baseline-host/--baseline-component given, but --hop-paths leaves out baseline"
        );
    }
    if baseline_named && !baseline_given {
        anyhow::bail!(
            "--hop-paths names baseline: give --baseline-host and/or --baseline-component"
        );
    }
    let sections = if args.sections.is_empty() {
        Section::value_variants().to_vec()
    } else {
        args.sections.clone()
    };
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_owned(),
    };
    let host_bin = procs::sibling(&bin_dir, "rollout-host")?;
    // Only the propagation section runs `rollout`; looked for up front, so
    // a missing binary stops the run before any section's minutes.
    let rollout_bin = sections
        .contains(&Section::Propagation)
        .then(|| procs::sibling(&bin_dir, "rollout"))
        .transpose()?;
    let runtime = Arc::new(rollout_host::Runtime::load(&args.component)?);

    let mut rows = Vec::new();
    for section in sections {
        eprintln!("rollout-bench: {section:?} ...");
        let mut more = match section {
            Section::Decision => {
                let plan = if args.smoke {
                    decision::Plan {
                        samples: 20,
                        loop_len: 100,
                    }
                } else {
                    decision::Plan {
                        samples: 1000,
                        loop_len: 1000,
                    }
                };
                decision::run(&runtime, &args.criterion_dir, plan).await?
            }
            Section::Hop => {
                let plan = if args.smoke {
                    hop::Plan {
                        loads: vec![hop::Load::small(1, 4), hop::Load::large(1, 4)],
                        seconds: 1,
                        rounds: 1,
                        only: args.hop_paths.clone(),
                    }
                } else {
                    // 3 loads × 5 rounds × up to 9 paths × 3 s: 7 min of
                    // wrk with Spin installed, 5 min without.
                    hop::Plan {
                        // Budgets: latency at the first, throughput at the
                        // last; the large responses in between have none.
                        loads: vec![
                            hop::Load::small(1, 1),
                            hop::Load::large(2, 32),
                            hop::Load::small(2, 32),
                        ],
                        seconds: args.hop_seconds,
                        rounds: usize::try_from(args.hop_rounds)?,
                        only: args.hop_paths.clone(),
                    }
                };
                let peers = hop::Peers {
                    host_bin: host_bin.clone(),
                    router: args.component.clone(),
                    passthrough: args.passthrough.clone(),
                    wasmtime: args.wasmtime.clone(),
                    spin_manifest: PathBuf::from("spin.toml"),
                    baseline: (args.baseline_host.is_some() || args.baseline_component.is_some())
                        .then(|| {
                            let host = args.baseline_host.clone().unwrap_or(host_bin.clone());
                            let router = args.baseline_component.clone();
                            (host, router.unwrap_or(args.component.clone()))
                        }),
                };
                hop::run(&peers, &plan).await?
            }
            Section::Propagation => {
                let plan = if args.smoke {
                    propagation::Plan {
                        edges: 10,
                        pushes: 5,
                        down: 2,
                        cycles: 1,
                        pushes_while_down: 2,
                        fleets: const {
                            &[
                                propagation::Fleet::wasm(2),
                                propagation::Fleet::wasm(5),
                                propagation::Fleet::native(5),
                                propagation::Fleet::native(10),
                            ]
                        },
                        fleet_pushes: 2,
                    }
                } else {
                    propagation::Plan {
                        edges: 100,
                        pushes: 200,
                        down: 5,
                        cycles: 4,
                        pushes_while_down: 5,
                        fleets: const {
                            &[
                                propagation::Fleet::wasm(10),
                                propagation::Fleet::wasm(100),
                                propagation::Fleet::native(100),
                                propagation::Fleet::native(1000),
                            ]
                        },
                        fleet_pushes: 100,
                    }
                };
                let rollout_bin = rollout_bin.as_deref().context("the rollout binary")?;
                propagation::run(&runtime, rollout_bin, plan).await?
            }
            Section::Cold => {
                cold::run(&host_bin, &args.component, if args.smoke { 1 } else { 10 }).await?
            }
        };
        rows.append(&mut more);
    }
    let table = report::markdown(&rows, args.smoke);
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
