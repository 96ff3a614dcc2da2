//! Bearer tokens and roles.
//!
//! Tokens come from a file or the environment, one per line:
//! `ROLE NAME TOKEN`, where ROLE is `read`, `deploy` or `admin`, NAME is who
//! the token belongs to (it becomes the actor of what the token does), and
//! TOKEN is the secret itself or `sha256:<hex>` of it. Only digests are kept
//! in memory, and a presented token is compared with every one of them in
//! constant time.

use rollout_api::Actor;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a token may do. Each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read versions, history, status and edges.
    Read,
    /// Also create versions and roll back.
    Deploy,
    /// Also add and remove edges.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "deploy" => Ok(Role::Deploy),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected read, deploy or admin)"
            )),
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: the actor of what it does.
    pub name: Actor,
    /// Its role.
    pub role: Role,
}

#[derive(Debug, Clone)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
}

/// The known tokens, as digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Entry>);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token, or one that is not known: 401.
    #[error("missing or unknown bearer token")]
    Unauthenticated,
    /// A known token whose role may not do this: 403.
    #[error("{name} has role {have:?}; this needs {need:?}")]
    Forbidden {
        /// The token's name.
        name: Actor,
        /// Its role.
        have: Role,
        /// The role needed.
        need: Role,
    },
}

impl Tokens {
    /// Parses the `ROLE NAME TOKEN` lines of a token file; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, token] = fields[..] else {
                return Err(format!("line {}: expected ROLE NAME TOKEN", i + 1));
            };
            let role: Role = role.parse().map_err(|e| format!("line {}: {e}", i + 1))?;
            let name: Actor = name.parse().map_err(|e| {
                format!(
                    "line {}: name {:?}: {e}",
                    i + 1,
                    rollout_api::shorten(name, 40)
                )
            })?;
            let digest = match token.strip_prefix("sha256:") {
                Some(hex_digest) => {
                    let mut d = [0u8; 32];
                    hex::decode_to_slice(hex_digest, &mut d).map_err(|_| {
                        format!("line {}: sha256: must be followed by 64 hex digits", i + 1)
                    })?;
                    d
                }
                None => Sha256::digest(token.as_bytes()).into(),
            };
            out.push(Entry {
                digest,
                caller: Caller { name, role },
            });
        }
        if out.is_empty() {
            return Err("no tokens: every request would be refused".to_owned());
        }
        Ok(Tokens(out))
    }

    /// The caller behind an `Authorization` header value, if it may act as `need`.
    pub fn check(&self, authorization: Option<&str>, need: Role) -> Result<Caller, Denied> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Denied::Unauthenticated)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Look at every entry so the time taken says nothing about which matched.
        let mut found = None;
        for entry in &self.0 {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(&entry.caller);
            }
        }
        let caller = found.ok_or(Denied::Unauthenticated)?;
        if caller.role < need {
            return Err(Denied::Forbidden {
                name: caller.name.clone(),
                have: caller.role,
                need,
            });
        }
        Ok(caller.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_unknown_tokens_are_unauthenticated() {
        let digest = hex::encode(Sha256::digest(b"r3ad"));
        let tokens = Tokens::parse(&format!(
            "# comment\nadmin ops s3cret\nread viewer sha256:{digest}\ndeploy ci d3ploy\n"
        ))
        .expect("parses");
        let ok = |h: &str, need| tokens.check(Some(h), need);
        assert_eq!(
            ok("Bearer s3cret", Role::Admin).map(|c| c.name.to_string()),
            Ok("ops".into())
        );
        assert_eq!(
            ok("Bearer r3ad", Role::Read).map(|c| c.role),
            Ok(Role::Read)
        );
        assert!(matches!(
            ok("Bearer r3ad", Role::Deploy),
            Err(Denied::Forbidden { .. })
        ));
        assert!(ok("Bearer d3ploy", Role::Deploy).is_ok());
        assert!(matches!(
            ok("Bearer d3ploy", Role::Admin),
            Err(Denied::Forbidden { .. })
        ));
        assert_eq!(ok("Bearer nope", Role::Read), Err(Denied::Unauthenticated));
        assert_eq!(ok("s3cret", Role::Read), Err(Denied::Unauthenticated));
        assert_eq!(tokens.check(None, Role::Read), Err(Denied::Unauthenticated));
        assert!(Tokens::parse("boss x y").is_err());
        assert!(Tokens::parse("").is_err());
        let long = format!(
            "read {} t0ken",
            "n".repeat(rollout_api::MAX_ACTOR_BYTES + 1)
        );
        assert!(
            Tokens::parse(&long).is_err_and(|e| e.contains("over the limit")),
            "a token name becomes the actor of versions: it is bounded"
        );
    }
}
