//! `rollout status`: every edge against the committed version, and the
//! wait for every edge to hold it that `--wait` uses everywhere.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use rollout_api::{StatusView, Version, shorten};
use rollout_control::client::{Fail, exit};

use super::{Ctx, Output, WaitArgs, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    wait: WaitArgs,
}

pub(crate) async fn status(ctx: &Ctx, args: StatusArgs) -> Result<(), Fail> {
    let s = if args.wait.wait {
        wait_for(ctx, Version::NONE, args.wait.timeout).await?
    } else {
        let s = ctx.api.status().await?;
        if ctx.out == Output::Text {
            print_status(&s);
        }
        s
    };
    match ctx.out {
        Output::Json => print_json(&s),
        Output::Text => Ok(()),
    }
}

fn print_status(s: &StatusView) {
    let conv = s.converged_ms.map_or_else(
        || "not yet".to_owned(),
        |ms| format!("{ms:.1} ms after commit"),
    );
    println!(
        "committed version {} ({}), all edges ACKed: {conv}",
        s.version,
        s.issued_at.as_deref().unwrap_or("-")
    );
    if let Some(l) = &s.leadership {
        match &l.leader {
            Some(leader) => println!(
                "leader: {leader} (lease token {}); answered by {}",
                l.token, l.replica
            ),
            None => println!(
                "leader: none holds the lease now (last token {}); answered by {}",
                l.token, l.replica
            ),
        }
    }
    println!(
        "{:<32} {:<12} {:>7} {:>4}  detail",
        "edge", "state", "version", "lag"
    );
    for e in &s.edges {
        let detail = match (&e.error, e.push_latency_ms) {
            (Some(err), _) => shorten(err, 120).into_owned(),
            (None, Some(ms)) => format!("push {ms:.1} ms"),
            (None, None) => String::new(),
        };
        println!(
            "{:<32} {:<12} {:>7} {:>4}  {detail}",
            e.url, e.state, e.acked_version, e.lag
        );
    }
}

/// Polls status until every edge ACKs the committed version (at least
/// `min_version`), one NACKs it, or `timeout` passes. A progress bar shows on
/// a terminal; the final status is printed as text.
pub(crate) async fn wait_for(
    ctx: &Ctx,
    min_version: Version,
    timeout: Duration,
) -> Result<StatusView, Fail> {
    let deadline = Instant::now() + timeout;
    let bar = (ctx.out == Output::Text && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} version {msg} [{bar:30}] {pos}/{len} edges ACKed {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    loop {
        let s = ctx.api.status().await?;
        let acked = s.acked();
        if let Some(bar) = &bar {
            bar.set_length(s.edges.len() as u64);
            bar.set_position(acked as u64);
            bar.set_message(s.version.to_string());
        }
        let done = s.converged_at(min_version);
        let refused = s.refusal();
        if done || refused.is_some() || Instant::now() >= deadline {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            if ctx.out == Output::Text {
                print_status(&s);
            }
            if let Some(e) = refused {
                return Err(Fail::new(
                    exit::NACK,
                    format!(
                        "{} refused version {}: {}",
                        e.url,
                        s.version,
                        shorten(e.error.as_deref().unwrap_or(""), 300)
                    ),
                ));
            }
            if !done {
                return Err(Fail::new(
                    exit::TIMEOUT,
                    format!(
                        "{acked} of {} edges ACKed version {} within {}",
                        s.edges.len(),
                        s.version,
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
