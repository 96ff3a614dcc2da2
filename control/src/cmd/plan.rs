//! `rollout plan ...`, `rollout canary` and `rollout template ...`: plans
//! that ramp a route and watch its health, and the checks they share.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rollout_api::{PlanQuery, PlanView, Reason, StartPlan, shorten};
use rollout_control::client::{Fail, exit};
use rollout_control::input::read_bounded;
use rollout_core::plan::machine::Phase;
use rollout_core::plan::{CheckDoc, MAX_PLAN_BYTES, PLAN_SCHEMA, PlanDoc, ProbeDoc, StepDoc};

use super::{Ctx, Output, print_json};

#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct PlanWait {
    /// Wait until the plan is promoted (exit 0) or rolled back (exit 8).
    #[arg(long)]
    wait: bool,
    /// How long to wait (e.g. 30m).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    #[command(subcommand)]
    command: PlanCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PlanCommand {
    /// Start a plan (a JSON file, `-` for stdin) on a route.
    Start {
        /// Route id.
        route: String,
        /// The plan document.
        file: PathBuf,
        /// Why (recorded with the plan and its versions' audit).
        #[arg(long)]
        reason: Option<Reason>,
        #[command(flatten)]
        wait: PlanWait,
    },
    /// A route's latest plan; every running plan without ROUTE.
    Status {
        /// Route id.
        route: Option<String>,
        /// Show it again every 2 s until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Hold a route's running plan where it is (its checks keep watching).
    Pause {
        /// Route id.
        route: String,
    },
    /// Let it go on (and end an open-ended pause step).
    Resume {
        /// Route id.
        route: String,
    },
    /// Send everyone to new now, then bake.
    Promote {
        /// Route id.
        route: String,
    },
    /// Roll back now: the route's weight to 0, whatever the checks say.
    Abort {
        /// Route id.
        route: String,
    },
    /// Run a route's aborted or failed plan again from its first step.
    Retry {
        /// Route id.
        route: String,
        #[command(flatten)]
        wait: PlanWait,
    },
    /// What happened to a route's latest plan, oldest first.
    Events {
        /// Route id.
        route: String,
    },
}

pub(crate) async fn plan(ctx: &Ctx, args: PlanArgs) -> Result<(), Fail> {
    match args.command {
        PlanCommand::Start {
            route,
            file,
            reason,
            wait,
        } => {
            let bytes = read_bounded(&file, MAX_PLAN_BYTES)
                .map_err(|e| Fail::new(exit::INVALID, e.to_string()))?;
            let doc = PlanDoc::from_json(&bytes)
                .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", file.display())))?;
            start(ctx, route, doc, reason, wait).await
        }
        PlanCommand::Status { route, watch } => status(ctx, route.as_deref(), watch).await,
        PlanCommand::Pause { route } => command(ctx, &route, "pause").await,
        PlanCommand::Resume { route } => command(ctx, &route, "resume").await,
        PlanCommand::Promote { route } => command(ctx, &route, "promote").await,
        PlanCommand::Abort { route } => command(ctx, &route, "abort").await,
        PlanCommand::Retry { route, wait } => {
            let latest = latest(ctx, &route).await?;
            let view = ctx.api.plan_command(latest.id, "retry").await?;
            finish(ctx, view, wait).await
        }
        PlanCommand::Events { route } => {
            let latest = latest(ctx, &route).await?;
            let events = ctx.api.plan_events(latest.id).await?;
            if ctx.out == Output::Json {
                return print_json(&events);
            }
            for e in &events.events {
                let version = e
                    .version
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default();
                println!(
                    "{}  {:<16} {}{version}",
                    e.at,
                    e.kind.as_str(),
                    shorten(&e.message, 200)
                );
            }
            Ok(())
        }
    }
}

async fn start(
    ctx: &Ctx,
    route: String,
    plan: PlanDoc,
    reason: Option<Reason>,
    wait: PlanWait,
) -> Result<(), Fail> {
    let view = ctx
        .api
        .start_plan(&StartPlan {
            route,
            plan,
            reason,
        })
        .await?;
    if ctx.out == Output::Text {
        println!("plan {} started on route {}", view.id, view.route);
    }
    finish(ctx, view, wait).await
}

/// The newest plan on `route`.
async fn latest(ctx: &Ctx, route: &str) -> Result<PlanView, Fail> {
    let q = PlanQuery {
        route: Some(route.to_owned()),
        limit: Some(1),
    };
    ctx.api
        .plans(&q)
        .await?
        .plans
        .into_iter()
        .next()
        .ok_or_else(|| Fail::new(exit::NOT_FOUND, format!("no plan on route {route:?}")))
}

async fn command(ctx: &Ctx, route: &str, command: &str) -> Result<(), Fail> {
    let latest = latest(ctx, route).await?;
    if latest.phase.is_terminal() {
        return Err(Fail::new(
            exit::NOT_FOUND,
            format!(
                "no running plan on route {route:?} (plan {} is {})",
                latest.id,
                latest.phase.as_str()
            ),
        ));
    }
    let view = ctx.api.plan_command(latest.id, command).await?;
    match ctx.out {
        Output::Json => print_json(&view),
        Output::Text => {
            show(&view);
            Ok(())
        }
    }
}

async fn status(ctx: &Ctx, route: Option<&str>, watch: bool) -> Result<(), Fail> {
    loop {
        let plans = match route {
            Some(r) => vec![latest(ctx, r).await?],
            None => {
                let all = ctx.api.plans(&PlanQuery::default()).await?.plans;
                all.into_iter().filter(|p| !p.phase.is_terminal()).collect()
            }
        };
        match ctx.out {
            Output::Json => print_json(&rollout_api::PlanList {
                plans: plans.clone(),
            })?,
            Output::Text if plans.is_empty() => println!("no running plans"),
            Output::Text => plans.iter().for_each(show),
        }
        if !watch || plans.iter().all(|p| p.phase.is_terminal()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        if ctx.out == Output::Text {
            println!();
        }
    }
}

/// `plan 3: paused, step 2/5 (pause 2m)`.
fn headline(p: &PlanView) -> String {
    format!(
        "plan {}: {}, step {}/{} ({})",
        p.id,
        p.phase.as_str(),
        p.step.min(p.steps),
        p.steps,
        p.step_text
    )
}

/// A plan for people.
fn show(p: &PlanView) {
    let what = match &p.flag {
        Some(f) => format!("flag {f} of route {}", p.route),
        None => format!("route {}", p.route),
    };
    let weight = p
        .weight
        .map(|w| format!(", weight {w} %"))
        .unwrap_or_default();
    let left = p
        .time_left_s
        .map(|s| {
            let d = Duration::from_secs(s.round() as u64);
            format!(", {} left", humantime::format_duration(d))
        })
        .unwrap_or_default();
    let dry = if p.dry_run { " (dry run)" } else { "" };
    println!("{} on {what}{dry}{weight}{left}", headline(p));
    if let Some(h) = &p.waiting_for_hook {
        println!("  next raise waits for hook {}", shorten(h, 300));
    }
    if let Some(h) = &p.held {
        println!("  held: {}", shorten(h, 300));
    }
    if let Some(r) = &p.reason {
        println!("  reason: {}", shorten(r, 300));
    }
    for c in &p.checks {
        println!(
            "  check {:<16} {:<12} fails {}/{}  next in {:.0} s  {}",
            c.name,
            c.verdict.map_or("-", |v| v.as_str()),
            c.fails,
            c.failure_limit,
            c.next_in_s,
            shorten(c.detail.as_deref().unwrap_or(""), 200)
        );
    }
}

/// Prints a started plan and, with `--wait`, follows it to its end.
async fn finish(ctx: &Ctx, mut view: PlanView, wait: PlanWait) -> Result<(), Fail> {
    if !wait.wait {
        return match ctx.out {
            Output::Json => print_json(&view),
            Output::Text => {
                show(&view);
                Ok(())
            }
        };
    }
    let deadline = Instant::now() + wait.timeout;
    let terminal = ctx.out == Output::Text && std::io::stderr().is_terminal();
    let mut said = String::new();
    while !view.phase.is_terminal() {
        if Instant::now() >= deadline {
            let reported = ctx.out == Output::Json;
            if reported {
                print_json(&view)?;
            }
            let fail = Fail::new(
                exit::TIMEOUT,
                format!(
                    "plan {} is still {} after {}",
                    view.id,
                    view.phase.as_str(),
                    humantime::format_duration(wait.timeout)
                ),
            );
            return Err(if reported { fail.reported() } else { fail });
        }
        let line = headline(&view);
        if ctx.out == Output::Text && line != said {
            if terminal {
                eprintln!("{line}");
            }
            said = line;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        view = ctx.api.plan(view.id).await?;
    }
    match ctx.out {
        Output::Json => print_json(&view)?,
        Output::Text => show(&view),
    }
    match view.phase {
        Phase::Promoted => Ok(()),
        _ => Err(Fail::new(
            exit::ABORTED,
            format!(
                "plan {} {}: {}",
                view.id,
                view.phase.as_str(),
                view.reason.as_deref().unwrap_or("")
            ),
        )
        .reported()),
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct CanaryArgs {
    /// Route id.
    route: String,
    /// Weights to step through, percent; the last must be 100.
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 5.0, 25.0, 50.0, 100.0])]
    steps: Vec<f64>,
    /// How long each weight holds before the next.
    #[arg(long, default_value = "2m")]
    pause: String,
    /// The path the probe check requests through every edge, arm forced.
    #[arg(long, default_value = "/")]
    probe: String,
    /// The Host header probes send (it selects the route).
    #[arg(long)]
    host: Option<String>,
    /// Keep checking this long after the last step before it counts as promoted.
    #[arg(long)]
    bake: Option<String>,
    /// Measure and say, never change a weight.
    #[arg(long)]
    dry_run: bool,
    /// A hook of the control service (`serve --hooks`) that must succeed
    /// before each raise of the weight (repeatable).
    #[arg(long = "require-hook")]
    require_hooks: Vec<String>,
    /// Why.
    #[arg(long)]
    reason: Option<Reason>,
    #[command(flatten)]
    wait: PlanWait,
}

/// The plan `rollout canary` runs: each weight in turn with a pause
/// between, and the default probe check in the background.
fn canary_plan(args: &CanaryArgs) -> Result<PlanDoc, Fail> {
    let doc = canary_doc(&args.steps, &args.pause, &args.probe, args.host.as_deref())?;
    Ok(PlanDoc {
        bake: args.bake.clone(),
        dry_run: args.dry_run,
        require_hooks: args.require_hooks.clone(),
        ..doc
    })
}

/// A canary plan: each weight of `steps` in turn with `pause` between, and
/// a check "errors" in the background that probes `probe` (with Host `host`)
/// through every edge and compares new's errors with old's.
pub(crate) fn canary_doc(
    steps: &[f64],
    pause: &str,
    probe: &str,
    host: Option<&str>,
) -> Result<PlanDoc, Fail> {
    let increasing = steps.windows(2).all(|w| w[0] < w[1]);
    if steps.last() != Some(&100.0) || !increasing {
        return Err(Fail::new(
            exit::INVALID,
            "--steps must increase and end at 100 (for other shapes write a plan: rollout plan start)",
        ));
    }
    let mut doc_steps = Vec::new();
    for (i, w) in steps.iter().enumerate() {
        if i > 0 {
            doc_steps.push(StepDoc::Pause(Some(pause.to_owned())));
        }
        doc_steps.push(StepDoc::SetWeight(*w));
    }
    let probe = ProbeDoc {
        host: host.map(str::to_owned),
        ..ProbeDoc::new(probe)
    };
    let check = CheckDoc {
        probe: Some(probe),
        ..CheckDoc::default()
    };
    Ok(PlanDoc {
        schema: PLAN_SCHEMA,
        flag: None,
        steps: doc_steps,
        checks: [("errors".to_owned(), check)].into(),
        background: vec!["errors".to_owned()],
        progress_deadline: None,
        bake: None,
        dry_run: false,
        require_hooks: Vec::new(),
    })
}

pub(crate) async fn canary(ctx: &Ctx, args: CanaryArgs) -> Result<(), Fail> {
    let doc = canary_plan(&args)?;
    start(ctx, args.route, doc, args.reason, args.wait).await
}

#[derive(Debug, clap::Args)]
pub(crate) struct TemplateArgs {
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TemplateCommand {
    /// Store a check (a JSON file, `-` for stdin) under a name plans use.
    Put {
        /// Its name.
        name: String,
        /// The check document.
        file: PathBuf,
    },
    /// Every stored template.
    List,
    /// Remove one.
    Rm {
        /// Its name.
        name: String,
    },
}

pub(crate) async fn template(ctx: &Ctx, args: TemplateArgs) -> Result<(), Fail> {
    match args.command {
        TemplateCommand::Put { name, file } => {
            let bytes = read_bounded(&file, MAX_PLAN_BYTES)
                .map_err(|e| Fail::new(exit::INVALID, e.to_string()))?;
            let doc: CheckDoc = rollout_api::from_json(&bytes)
                .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", file.display())))?;
            ctx.api.put_template(&name, &doc).await?;
            if ctx.out == Output::Text {
                println!("template {name} stored");
            }
            Ok(())
        }
        TemplateCommand::List => {
            let list = ctx.api.templates().await?;
            if ctx.out == Output::Json {
                return print_json(&list);
            }
            for (name, doc) in &list.templates {
                let text = serde_json::to_string(doc).unwrap_or_default();
                println!("{name}  {}", shorten(&text, 200));
            }
            Ok(())
        }
        TemplateCommand::Rm { name } => {
            ctx.api.delete_template(&name).await?;
            if ctx.out == Output::Text {
                println!("template {name} removed");
            }
            Ok(())
        }
    }
}
