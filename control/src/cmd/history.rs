//! `rollout history`, `rollout diff` and `rollout audit`: what happened.

use rollout_api::{HistoryQuery, HookRunView, Version, shorten};
use rollout_control::client::{Fail, exit};
use serde::Serialize;
use serde_json::Value;

use super::{Ctx, Output, print_json};

/// Characters of a reason or detail shown on one line of text output.
const SHOWN_CHARS: usize = 100;

#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    /// How many.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Only versions below this one (paging).
    #[arg(long)]
    before: Option<Version>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {}

#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    /// A version number.
    a: Version,
    /// Another version number.
    b: Version,
}

pub(crate) async fn history(ctx: &Ctx, args: HistoryArgs) -> Result<(), Fail> {
    let q = HistoryQuery {
        before: args.before,
        limit: Some(args.limit),
    };
    let page = ctx.api.history(&q).await?;
    if ctx.out == Output::Json {
        return print_json(&page);
    }
    println!(
        "{:>7}  {:<24}  {:<12}  {:>10}  reason",
        "version", "issued", "actor", "converged"
    );
    for v in &page.versions {
        let conv = v
            .converged_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
        println!(
            "{:>7}  {:<24}  {:<12}  {:>10}  {}",
            v.version,
            v.issued_at,
            shorten(&v.actor, 40),
            conv,
            shorten(&v.reason, SHOWN_CHARS)
        );
        print_hooks("         ", &v.hooks);
    }
    if let Some(n) = page.next_before {
        println!("(older: --before {n})");
    }
    Ok(())
}

/// One line per hook run: what it is and what it said (a restore point,
/// or why it failed).
pub(crate) fn print_hooks(indent: &str, hooks: &[HookRunView]) {
    for h in hooks {
        let plan = h.plan.map_or_else(String::new, |p| format!(", plan {p}"));
        let said = if h.output.is_empty() {
            String::new()
        } else {
            format!(": {}", shorten(&h.output.replace('\n', " | "), SHOWN_CHARS))
        };
        println!(
            "{indent}hook {} ({}{plan}, run {}): {}{said}",
            h.hook,
            h.event,
            h.id,
            h.status.as_str()
        );
    }
}

#[derive(Serialize)]
struct Change {
    path: String,
    a: Option<Value>,
    b: Option<Value>,
}

#[derive(Serialize)]
struct Diff {
    a: Version,
    b: Version,
    changes: Vec<Change>,
}

pub(crate) async fn diff(ctx: &Ctx, args: DiffArgs) -> Result<(), Fail> {
    let config = |v: rollout_api::VersionView| {
        serde_json::to_value(v.config)
            .map_err(|e| Fail::new(exit::FAILED, format!("version {}: {e}", v.version)))
    };
    let a = config(ctx.api.version(args.a).await?)?;
    let b = config(ctx.api.version(args.b).await?)?;
    let mut changes = Vec::new();
    diff_json("", &a, &b, &mut changes);
    match ctx.out {
        Output::Json => print_json(&Diff {
            a: args.a,
            b: args.b,
            changes,
        }),
        Output::Text => {
            if changes.is_empty() {
                println!("versions {} and {} hold the same config", args.a, args.b);
            }
            for c in changes {
                println!("{}: {} -> {}", c.path, show(&c.a), show(&c.b));
            }
            Ok(())
        }
    }
}

fn show(v: &Option<Value>) -> String {
    v.as_ref()
        .map_or_else(|| "(absent)".to_owned(), Value::to_string)
}

/// Leaf-level differences between two JSON values, by path.
fn diff_json(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    let mut differ = |p: String, l: Option<&Value>, r: Option<&Value>| match (l, r) {
        (Some(l), Some(r)) => diff_json(&p, l, r, out),
        (l, r) => out.push(Change {
            path: p,
            a: l.cloned(),
            b: r.cloned(),
        }),
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differ(p, x.get(k), y.get(k));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                differ(format!("{path}[{i}]"), x.get(i), y.get(i));
            }
        }
        (x, y) if x != y => out.push(Change {
            path: path.to_owned(),
            a: Some(x.clone()),
            b: Some(y.clone()),
        }),
        _ => {}
    }
}

pub(crate) async fn audit(ctx: &Ctx, _: AuditArgs) -> Result<(), Fail> {
    let page = ctx.api.audit().await?;
    if ctx.out == Output::Json {
        return print_json(&page);
    }
    for e in &page.audit {
        println!(
            "{}  {:<12} {:<12} {}",
            e.at,
            shorten(&e.actor, 40),
            e.action,
            shorten(&e.detail, SHOWN_CHARS)
        );
    }
    Ok(())
}
