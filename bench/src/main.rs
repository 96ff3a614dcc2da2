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
    /// Where `rollout-host` and `rollout` are; default: next to this binary.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Criterion's results for rollout-core's benches.
    #[arg(long, default_value = "target/criterion")]
    criterion_dir: PathBuf,
    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sections to run (default: all).
    #[arg(value_enum)]
    sections: Vec<Section>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// bucket and decide(), native and in the component.
    Decision,
    /// The edge hop against a direct request and nginx, under wrk.
    Hop,
    /// Pushes to many edges, some of them down.
    Propagation,
    /// Compile time, process start to first 200, size.
    Cold,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let rollout_bin = procs::sibling(&bin_dir, "rollout")?;
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
                        loads: vec![(1, 4)],
                        seconds: 1,
                        rounds: 1,
                    }
                } else {
                    hop::Plan {
                        loads: vec![(1, 1), (2, 32)],
                        seconds: 5,
                        rounds: 3,
                    }
                };
                hop::run(&host_bin, &args.component, &plan).await?
            }
            Section::Propagation => {
                let plan = if args.smoke {
                    propagation::Plan {
                        edges: 10,
                        pushes: 5,
                        down: 2,
                        cycles: 1,
                        pushes_while_down: 2,
                    }
                } else {
                    propagation::Plan {
                        edges: 100,
                        pushes: 200,
                        down: 5,
                        cycles: 4,
                        pushes_while_down: 5,
                    }
                };
                propagation::run(&runtime, &rollout_bin, plan).await?
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
