//! `rollout keygen`, and the key files other commands read and write.

use std::path::{Path, PathBuf};

use rollout_api::{KeyChange, KeyList, Reason};
use rollout_control::client::{Fail, exit};
use rollout_control::input::read_bounded;
use rollout_core::SecretKey;
use serde::Serialize;

use super::{Ctx, Output, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the secret key.
    #[arg(long, default_value = "rollout.key")]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
    /// Rotate the running control service to a new key (it writes its key
    /// file; the next version, signed by a key edges trust, declares the new
    /// key trusted; the version after is signed by it). Needs an admin token.
    #[arg(long, conflicts_with_all = ["retire", "list"])]
    rotate: bool,
    /// Retire the key with this id from the running control service: the
    /// next version declares the remaining keys only, and edges refuse
    /// pushes signed by it (401 naming the key). Needs an admin token.
    #[arg(long, value_name = "KEY_ID", conflicts_with = "list")]
    retire: Option<String>,
    /// List the running control service's keys: which signs, which edges trust.
    #[arg(long)]
    list: bool,
    /// Why (recorded as the version's reason).
    #[arg(long)]
    reason: Option<Reason>,
}

#[derive(Serialize)]
struct Keygen<'a> {
    secret_key_file: &'a Path,
    public_key: String,
}

fn print_keys(ctx: &Ctx, list: &KeyList) -> Result<(), Fail> {
    match ctx.out {
        Output::Json => print_json(list),
        Output::Text => {
            for k in &list.keys {
                let signs = if k.signs { "signs" } else { "" };
                let trusted = if k.trusted_by_edges {
                    "trusted by edges"
                } else {
                    "not yet trusted by edges"
                };
                println!("{}  {:<5}  {:<24}  {}", k.id, signs, trusted, k.public_key);
            }
            if let Some(v) = list.version {
                println!("version {v} declares this key set");
            }
            Ok(())
        }
    }
}

pub(crate) async fn keygen(ctx: &Ctx, args: KeygenArgs) -> Result<(), Fail> {
    if args.list {
        return print_keys(ctx, &ctx.api.keys().await?);
    }
    if args.rotate || args.retire.is_some() {
        let change = match args.retire {
            Some(id) => KeyChange::Retire {
                id,
                reason: args.reason,
            },
            None => KeyChange::Rotate {
                reason: args.reason,
            },
        };
        return print_keys(ctx, &ctx.api.change_keys(&change).await?);
    }
    let key = new_key()?;
    write_secret(&args.out, &format!("{}\n", key.to_text()), args.force)?;
    let public_key = key.public_key().to_string();
    match ctx.out {
        Output::Json => print_json(&Keygen {
            secret_key_file: &args.out,
            public_key,
        })?,
        Output::Text => {
            println!("{public_key}");
            eprintln!(
                "secret key written to {} (mode 0600); give the line above to every edge as its public_key variable",
                args.out.display()
            );
        }
    }
    Ok(())
}

/// A fresh signing key from the system's randomness.
pub(crate) fn new_key() -> Result<SecretKey, Fail> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| Fail::new(exit::FAILED, format!("no randomness: {e}")))?;
    Ok(SecretKey::from_seed(seed))
}

/// A small text file (a key, a token), read with a limit.
pub(crate) fn read_text(path: &Path, limit: usize) -> Result<String, Fail> {
    let bytes = read_bounded(path, limit).map_err(|e| Fail::new(exit::INVALID, e.to_string()))?;
    String::from_utf8(bytes)
        .map_err(|_| Fail::new(exit::INVALID, format!("{}: not UTF-8 text", path.display())))
}

/// Writes a file only the owner can read, refusing to replace one unless `force`.
pub(crate) fn write_secret(path: &Path, contents: &str, force: bool) -> Result<(), Fail> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |e: std::io::Error, hint: &str| {
        Fail::new(
            exit::FAILED,
            format!("writing {}: {e}{hint}", path.display()),
        )
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let hint = if force { "" } else { " (--force replaces it)" };
    let mut f = opts.open(path).map_err(|e| failed(e, hint))?;
    // An existing file keeps its mode on open; make sure it is private.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| failed(e, ""))?;
    f.write_all(contents.as_bytes()).map_err(|e| failed(e, ""))
}
