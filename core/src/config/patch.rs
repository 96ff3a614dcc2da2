//! Patches: the small edits a rollout makes to the current config (a weight
//! step, a flag percentage, a flag flipped on or off), as the control API
//! takes them. The result is a whole document, validated like any other.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::wire::{ConfigDoc, FlagDoc, RouteDoc};

/// A change to one route of a config document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Patch {
    /// Set a route's new weight, in percent.
    SetWeight {
        /// Route id.
        route: String,
        /// Percentage.
        percent: f64,
    },
    /// Set a flag's percentage.
    SetFlag {
        /// Route id.
        route: String,
        /// Flag name.
        flag: String,
        /// Percentage.
        percent: f64,
    },
    /// Turn a flag fully on (from anything below 100 %) or fully off.
    ToggleFlag {
        /// Route id.
        route: String,
        /// Flag name.
        flag: String,
    },
}

/// A patch that names what the document does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// No route with that id.
    #[error("no route {0:?} in the current config")]
    NoRoute(String),
    /// The route has no flag of that name.
    #[error("no flag {flag:?} on route {route:?}")]
    NoFlag {
        /// Route id.
        route: String,
        /// Flag name.
        flag: String,
    },
}

impl Patch {
    /// Applies the patch to `doc`; on error `doc` is unchanged. The result
    /// still has to pass validation (a weight of 150 is refused there).
    pub fn apply(&self, doc: &mut ConfigDoc) -> Result<(), PatchError> {
        let route_id = match self {
            Patch::SetWeight { route, .. }
            | Patch::SetFlag { route, .. }
            | Patch::ToggleFlag { route, .. } => route,
        };
        let route = doc
            .routes
            .iter_mut()
            .find(|r| r.id == *route_id)
            .ok_or_else(|| PatchError::NoRoute(route_id.clone()))?;
        match self {
            Patch::SetWeight { percent, .. } => route.new_weight = *percent,
            Patch::SetFlag { flag, percent, .. } => flag_mut(route, flag)?.percent = *percent,
            Patch::ToggleFlag { flag, .. } => {
                let f = flag_mut(route, flag)?;
                f.percent = if f.percent >= 100.0 { 0.0 } else { 100.0 };
            }
        }
        Ok(())
    }
}

fn flag_mut<'d>(route: &'d mut RouteDoc, name: &str) -> Result<&'d mut FlagDoc, PatchError> {
    match route.flags.iter().position(|f| f.name == name) {
        Some(i) => Ok(&mut route.flags[i]),
        None => Err(PatchError::NoFlag {
            route: route.id.clone(),
            flag: name.to_owned(),
        }),
    }
}

/// What the patch does, in words: the default reason of a patched version.
impl fmt::Display for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Patch::SetWeight { route, percent } => {
                write!(f, "set {route} new weight to {percent} %")
            }
            Patch::SetFlag {
                route,
                flag,
                percent,
            } => write!(f, "set flag {flag} on {route} to {percent} %"),
            Patch::ToggleFlag { route, flag } => write!(f, "toggle flag {flag} on {route}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_change_only_what_they_name() {
        let mut doc: ConfigDoc = serde_json::from_value(serde_json::json!({
            "schema": 1,
            "routes": [{"id": "web", "old": "http://o.example", "new": "http://n.example",
                        "new_weight": 0, "flags": [{"name": "beta", "percent": 5}]}]
        }))
        .expect("doc");
        Patch::SetWeight {
            route: "web".into(),
            percent: 10.0,
        }
        .apply(&mut doc)
        .expect("applies");
        assert_eq!(doc.routes[0].new_weight, 10.0);
        Patch::ToggleFlag {
            route: "web".into(),
            flag: "beta".into(),
        }
        .apply(&mut doc)
        .expect("applies");
        assert_eq!(doc.routes[0].flags[0].percent, 100.0);
        Patch::ToggleFlag {
            route: "web".into(),
            flag: "beta".into(),
        }
        .apply(&mut doc)
        .expect("applies");
        assert_eq!(doc.routes[0].flags[0].percent, 0.0);
        assert!(
            Patch::SetWeight {
                route: "api".into(),
                percent: 1.0
            }
            .apply(&mut doc)
            .is_err()
        );
    }

    #[test]
    fn errors_and_reasons_name_what_they_mean() {
        let mut doc: ConfigDoc = serde_json::from_value(serde_json::json!({
            "schema": 1,
            "routes": [{"id": "web", "old": "http://o.example", "new": "http://n.example",
                        "new_weight": 0}]
        }))
        .expect("doc");
        let before = doc.clone();
        let p: Patch = serde_json::from_value(
            serde_json::json!({"op": "set_flag", "route": "web", "flag": "beta", "percent": 5}),
        )
        .expect("the API's JSON form");
        assert_eq!(
            p.apply(&mut doc).map_err(|e| e.to_string()),
            Err(r#"no flag "beta" on route "web""#.to_owned())
        );
        assert_eq!(doc, before, "a refused patch changes nothing");
        assert_eq!(p.to_string(), "set flag beta on web to 5 %");
    }
}
