use crate::weight::InvalidWeight;

/// A config that cannot be applied, with the path of the offending field
/// (`routes[1].new_weight: must be 0..=100`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ConfigError {
    /// Where in the document: `routes[1].flags[0].percent`, or `config` for the whole.
    pub path: String,
    /// What is wrong there.
    pub problem: Problem,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, problem: Problem) -> ConfigError {
        ConfigError {
            path: path.into(),
            problem,
        }
    }

    /// The same error under a parent path, e.g. `config.` inside an envelope.
    pub fn nested(self, parent: &str) -> ConfigError {
        let path = if self.path == "config" || self.path.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.path)
        };
        ConfigError {
            path,
            problem: self.problem,
        }
    }
}

/// Everything a config can get wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not JSON, a wrong type, a missing or unknown field.
    #[error("{0}")]
    Syntax(String),
    /// The document is over the size limit.
    #[error("{size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the document.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A schema number this build does not read.
    #[error("unsupported schema {0} (this build reads schema 1)")]
    UnsupportedSchema(u32),
    /// A list over its limit.
    #[error("{count} {what} is over the limit of {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A list that must not be empty is.
    #[error("must not be empty")]
    Empty,
    /// A name or value used twice.
    #[error("duplicate {value:?} (first at {first})")]
    Duplicate {
        /// The repeated value.
        value: String,
        /// Path of its first use.
        first: String,
    },
    /// A name that breaks its character rule.
    #[error("{0}")]
    BadName(&'static str),
    /// A percentage out of range or too precise.
    #[error(transparent)]
    Weight(#[from] InvalidWeight),
    /// An origin that is not a plain `http(s)://host[:port]` URL.
    #[error("{0}")]
    Origin(&'static str),
    /// A salt with a NUL byte, which would make `salt || 0x00 || key` ambiguous.
    #[error("must not contain NUL")]
    NulInSalt,
    /// A key or override source that is not one of the known forms.
    #[error("unknown source {0:?} (expected {1})")]
    UnknownSource(String, &'static str),
    /// `assign_cookie` without a cookie to assign.
    #[error("needs a cookie:NAME key source to name the minted cookie")]
    AssignCookieWithoutCookie,
    /// A token digest that is not a SHA-256 in lowercase hex.
    #[error("must be 64 lowercase hex digits (a SHA-256 digest)")]
    TokenDigest,
    /// A failover status outside 500..=599.
    #[error("{0} is not a 5xx status")]
    FailoverStatus(u16),
    /// A `match` with no condition in it.
    #[error("needs at least one of host, path_prefix, methods (omit match for the default route)")]
    EmptyMatch,
    /// No route without `match`.
    #[error("the last route must have no match: it is the default route")]
    NoDefaultRoute,
    /// A route after the default route can never be taken.
    #[error("unreachable: it follows the default route {0:?}")]
    Unreachable(String),
    /// A text field over its length limit.
    #[error("{len} characters is over the limit of {limit}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}
