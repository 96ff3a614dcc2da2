use crate::weight::InvalidWeight;

/// A plan that cannot run, with the path of the offending field
/// (`steps[2].set_weight: must be 0..=100`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct PlanError {
    /// Where in the document: `checks.errors.interval`, or `plan` for the whole.
    pub path: String,
    /// What is wrong there.
    pub problem: PlanProblem,
}

impl PlanError {
    pub(crate) fn new(path: impl Into<String>, problem: PlanProblem) -> PlanError {
        PlanError {
            path: path.into(),
            problem,
        }
    }
}

/// Everything a plan can get wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanProblem {
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
    /// A name that breaks its character rule.
    #[error("must be 1-64 of a-z 0-9 - _ .")]
    BadName,
    /// A name used twice.
    #[error("{0:?} is listed twice")]
    Duplicate(String),
    /// A percentage out of range or too precise.
    #[error(transparent)]
    Weight(#[from] InvalidWeight),
    /// Not a duration.
    #[error("{0:?} is not a duration (e.g. 30s, 5m, 1h30m)")]
    BadDuration(String),
    /// A duration out of its range.
    #[error("must be between {min} and {max}")]
    DurationRange {
        /// Shortest.
        min: &'static str,
        /// Longest.
        max: &'static str,
    },
    /// A number out of its range.
    #[error("must be between {min} and {max}")]
    Range {
        /// Smallest.
        min: f64,
        /// Largest.
        max: f64,
    },
    /// A name that is not in `checks`.
    #[error("no check {0:?} in checks")]
    UnknownCheck(String),
    /// A template the control service does not have.
    #[error("no stored template {0:?}")]
    NoTemplate(String),
    /// A template that refers to another template.
    #[error("template {0:?} refers to another template")]
    NestedTemplate(String),
    /// Fields of which exactly one must be given.
    #[error("give exactly one of {0}")]
    ExactlyOne(&'static str),
    /// A value that breaks a documented rule.
    #[error("{0}")]
    Invalid(&'static str),
    /// A step after which nothing could run.
    #[error("a plan needs a set_weight step")]
    NoWeightStep,
}
