//! The results table: every figure next to its budget in DESIGN, marked met
//! or not met, with the command that measures it.

use std::fmt::Write as _;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The figure(s).
    pub figure: String,
    /// DESIGN's budget for it, if it has one.
    pub target: Option<String>,
    /// Whether the figure is within the budget (`None`: no budget).
    pub met: Option<bool>,
    /// The section, i.e. `scripts/bench.sh SECTION` reruns it.
    pub section: &'static str,
}

impl Row {
    /// A row without a budget.
    pub fn info(section: &'static str, what: impl Into<String>, figure: impl Into<String>) -> Row {
        Row {
            what: what.into(),
            figure: figure.into(),
            target: None,
            met: None,
            section,
        }
    }

    /// A row checked against a budget.
    pub fn budget(
        section: &'static str,
        what: impl Into<String>,
        figure: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) -> Row {
        Row {
            what: what.into(),
            figure: figure.into(),
            target: Some(target.into()),
            met: Some(met),
            section,
        }
    }

    /// A budgeted figure that could not be measured (a tool is absent): the
    /// budget without a verdict.
    pub fn unmeasured(
        section: &'static str,
        what: impl Into<String>,
        why: impl std::fmt::Display,
        target: impl Into<String>,
    ) -> Row {
        Row {
            what: what.into(),
            figure: format!("not measured: {why}"),
            target: Some(target.into()),
            met: None,
            section,
        }
    }
}

/// The table in Markdown.
pub fn markdown(rows: &[Row], smoke: bool) -> String {
    let mut out = String::new();
    if smoke {
        out.push_str(
            "SMOKE RUN: a few iterations to check the harness works; these are not figures.\n\n",
        );
    }
    out.push_str("| what | figure | DESIGN budget | met? | command |\n|---|---|---|---|---|\n");
    for r in rows {
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | `scripts/bench.sh {}` |",
            r.what,
            r.figure,
            r.target.as_deref().unwrap_or("—"),
            met,
            r.section
        );
    }
    out
}
