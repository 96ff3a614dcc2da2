//! `rollout explain`: which arm a key got under a version, and why.

use rollout_api::Version;
use rollout_control::client::{Fail, exit};
use rollout_core::{Arm, Config, decide_key};
use serde::Serialize;

use super::{Ctx, Output, print_json, rfc3339};

#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// The stickiness key (user id, cookie value...).
    #[arg(long)]
    key: String,
    /// Route id; default: the default route.
    #[arg(long)]
    route: Option<String>,
    /// Under the config live at this time (RFC 3339, or e.g. "1h ago"); default: now.
    #[arg(long)]
    at: Option<String>,
}

#[derive(Serialize)]
struct Explained<'a> {
    version: Version,
    issued_at: &'a str,
    route: &'a str,
    key: &'a str,
    salt: &'a str,
    bucket: Option<u32>,
    weight_ppm: u32,
    arm: &'static str,
    reason: &'static str,
    flags: &'a [&'a str],
    why: &'a str,
    /// The hook runs of the version (its database restore point, say).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    hooks: &'a [rollout_api::HookRunView],
}

pub(crate) async fn explain(ctx: &Ctx, args: ExplainArgs) -> Result<(), Fail> {
    let v = match &args.at {
        Some(t) => ctx.api.at(&rfc3339(t)?).await?,
        None => ctx
            .api
            .current()
            .await?
            .ok_or_else(|| Fail::new(exit::NOT_FOUND, "no version has been issued yet"))?,
    };
    let doc = v
        .config
        .as_ref()
        .ok_or_else(|| Fail::new(exit::FAILED, "the reply holds no config"))?;
    let config = Config::try_from(doc).map_err(|e| {
        Fail::new(
            exit::FAILED,
            format!("stored config of version {}: {e}", v.version),
        )
    })?;
    let route = match &args.route {
        Some(id) => config.route(id).ok_or_else(|| {
            Fail::new(
                exit::NOT_FOUND,
                format!("no route {id:?} in version {}", v.version),
            )
        })?,
        None => config
            .routes()
            .last()
            .ok_or_else(|| Fail::new(exit::FAILED, "config without routes"))?,
    };
    let d = decide_key(route, &args.key);
    let weight = route.weight();
    let why = match d.bucket {
        Some(b) => format!(
            "bucket {} of 1000000 is {} the weight {} ppm ({} %)",
            b.get(),
            if d.arm == Arm::New {
                "below"
            } else {
                "not below"
            },
            u32::from(weight),
            weight.percent()
        ),
        None => "no key: old".to_owned(),
    };
    if ctx.out == Output::Json {
        return print_json(&Explained {
            version: v.version,
            issued_at: &v.issued_at,
            route: route.id(),
            key: &args.key,
            salt: route.salt(),
            bucket: d.bucket.map(|b| b.get()),
            weight_ppm: u32::from(weight),
            arm: d.arm.as_str(),
            reason: d.reason.as_str(),
            flags: &d.flags,
            why: &why,
            hooks: &v.hooks,
        });
    }
    println!(
        "key {:?} on route {} under version {} ({}): {}",
        args.key,
        route.id(),
        v.version,
        v.issued_at,
        d.arm
    );
    println!("  why: {why}; salt {:?}", route.salt());
    let flags = if d.flags.is_empty() {
        "none".to_owned()
    } else {
        d.flags.join(",")
    };
    println!("  flags on: {flags}");
    println!("  (an override header or cookie in a request can still force an arm)");
    if !v.hooks.is_empty() {
        println!("  hooks of version {}:", v.version);
        super::history::print_hooks("    ", &v.hooks);
    }
    Ok(())
}
