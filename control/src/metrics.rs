//! Counters and the convergence histogram, written in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the convergence histogram, seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What the service counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// PUTs sent to edges (every attempt).
    pub pushes: AtomicU64,
    /// ACK replies.
    pub acks: AtomicU64,
    /// NACK replies.
    pub nacks: AtomicU64,
    /// Pushes that got no usable answer after every retry.
    pub failures: AtomicU64,
    convergence: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Gauges read from the store when scraped.
#[derive(Debug)]
pub struct Gauges {
    /// The committed version.
    pub version: u64,
    /// Versions issued.
    pub versions: u64,
    /// Registered edges.
    pub edges: usize,
    /// Edges holding the committed version.
    pub edges_acked: usize,
    /// Edges behind the committed version that have not answered for the
    /// service's `--unreachable-after`: the ones to alert on.
    pub edges_unreachable: usize,
    /// Plans by phase, all of them.
    pub plans_by_phase: Vec<(String, u64)>,
    /// Every running plan.
    pub running: Vec<PlanGauge>,
    /// Who leads, and which replica this is.
    pub leadership: rollout_api::LeadershipView,
}

/// A running plan, as `/metrics` shows it.
#[derive(Debug)]
pub struct PlanGauge {
    /// Its id.
    pub id: i64,
    /// Its route.
    pub route: String,
    /// Its phase.
    pub phase: &'static str,
    /// Its step, from 1.
    pub step: usize,
    /// The weight it last set, percent.
    pub weight: Option<f64>,
    /// Its checks: name, last verdict, fail results.
    pub checks: Vec<(String, Option<&'static str>, u32)>,
}

impl Metrics {
    /// Records a commit-to-last-ACK time.
    pub fn observe_convergence(&self, seconds: f64) {
        let mut h = self.convergence.lock().unwrap_or_else(|p| p.into_inner());
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (pushes, acks, nacks, fails) = (
            load(&self.pushes),
            load(&self.acks),
            load(&self.nacks),
            load(&self.failures),
        );
        let (edges, acked, unreachable) = (
            g.edges as u64,
            g.edges_acked as u64,
            g.edges_unreachable as u64,
        );
        // A table, one metric a line.
        #[rustfmt::skip]
        let plain = [
            ("rollout_version", "gauge", "The committed config version.", g.version),
            ("rollout_versions_total", "counter", "Config versions issued.", g.versions),
            ("rollout_edges", "gauge", "Registered edges.", edges),
            ("rollout_edges_acked", "gauge", "Edges holding the committed version.", acked),
            ("rollout_edges_unreachable", "gauge", "Edges behind the committed version and silent past --unreachable-after.", unreachable),
            ("rollout_pushes_total", "counter", "PUTs to edges, retries included.", pushes),
            ("rollout_push_acks_total", "counter", "Pushes an edge acknowledged.", acks),
            ("rollout_push_nacks_total", "counter", "Pushes an edge refused.", nacks),
            ("rollout_push_failures_total", "counter", "Pushes never answered.", fails),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in plain {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let h = self.convergence.lock().unwrap_or_else(|p| p.into_inner());
        let name = "rollout_convergence_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from commit to the last edge's ACK, per version.\n# TYPE {name} histogram"
        );
        for (le, count) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
        render_plans(&mut out, g);
        render_leadership(&mut out, &g.leadership);
        out
    }
}

/// Which replica leads. Replica ids are `[A-Za-z0-9._:-]`
/// ([`crate::lease::check_replica_id`]), so label values need no escaping.
fn render_leadership(out: &mut String, l: &rollout_api::LeadershipView) {
    let me = &l.replica;
    family(
        out,
        "rollout_leader",
        "gauge",
        "1 while this replica acts as the leader by its own lease clock (runs fan-out, plans and hooks), 0 otherwise.",
    );
    let leads = u8::from(l.leading);
    let _ = writeln!(out, "rollout_leader{{replica=\"{me}\"}} {leads}");
    family(
        out,
        "rollout_leader_info",
        "gauge",
        "The replica the lease names as leader, as this replica reads it (absent while none holds it).",
    );
    if let Some(leader) = &l.leader {
        let _ = writeln!(out, "rollout_leader_info{{leader=\"{leader}\"}} 1");
    }
    family(
        out,
        "rollout_leader_token",
        "gauge",
        "The leader lease's fencing token: it rises with every new leader.",
    );
    let _ = writeln!(out, "rollout_leader_token {}", l.token);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Plan figures. Route ids and check names are `[A-Za-z0-9._-]`, so label
/// values need no escaping.
fn render_plans(out: &mut String, g: &Gauges) {
    family(out, "rollout_plans", "gauge", "Plans, by phase.");
    for (phase, n) in &g.plans_by_phase {
        let _ = writeln!(out, "rollout_plans{{phase=\"{phase}\"}} {n}");
    }
    // One sample per running plan: (more labels, value), or none.
    type Sample = fn(&PlanGauge) -> Option<(String, String)>;
    let per_plan: [(&str, &str, Sample); 3] = [
        (
            "rollout_plan_running",
            "A running plan, labelled with its phase.",
            |p| Some((format!(",phase=\"{}\"", p.phase), "1".to_owned())),
        ),
        (
            "rollout_plan_step",
            "The step a running plan is at, from 1.",
            |p| Some((String::new(), p.step.to_string())),
        ),
        (
            "rollout_plan_weight_percent",
            "The weight a running plan last set.",
            |p| p.weight.map(|w| (String::new(), w.to_string())),
        ),
    ];
    for (name, help, sample) in per_plan {
        family(out, name, "gauge", help);
        for p in &g.running {
            if let Some((labels, value)) = sample(p) {
                let _ = writeln!(
                    out,
                    "{name}{{plan=\"{}\",route=\"{}\"{labels}}} {value}",
                    p.id, p.route
                );
            }
        }
    }
    family(
        out,
        "rollout_plan_check_fails",
        "gauge",
        "Fail results of a running plan's check.",
    );
    family(
        out,
        "rollout_plan_check_verdict",
        "gauge",
        "A running plan's check's last verdict.",
    );
    for p in &g.running {
        for (check, verdict, fails) in &p.checks {
            let labels = format!("plan=\"{}\",route=\"{}\",check=\"{check}\"", p.id, p.route);
            let _ = writeln!(out, "rollout_plan_check_fails{{{labels}}} {fails}");
            if let Some(v) = verdict {
                let _ = writeln!(
                    out,
                    "rollout_plan_check_verdict{{{labels},verdict=\"{v}\"}} 1"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_convergence(0.02);
        m.observe_convergence(3.0);
        let text = m.render(&Gauges {
            version: 2,
            versions: 2,
            edges: 1,
            edges_acked: 1,
            edges_unreachable: 3,
            plans_by_phase: vec![("aborted".into(), 1)],
            running: vec![PlanGauge {
                id: 4,
                route: "web".into(),
                phase: "paused",
                step: 2,
                weight: Some(10.0),
                checks: vec![("errors".into(), Some("pass"), 0)],
            }],
            leadership: rollout_api::LeadershipView {
                leader: Some("a:1".into()),
                token: 3,
                replica: "b:2".into(),
                leading: false,
            },
        });
        assert!(text.contains("rollout_convergence_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("rollout_convergence_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("rollout_convergence_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("rollout_convergence_seconds_count 2\n"));
        assert!(text.contains("rollout_version 2\n"));
        assert!(text.contains("rollout_edges_unreachable 3\n"));
        assert!(text.contains("rollout_plans{phase=\"aborted\"} 1\n"));
        assert!(
            text.contains("rollout_plan_running{plan=\"4\",route=\"web\",phase=\"paused\"} 1\n")
        );
        assert!(text.contains(
            "rollout_plan_check_verdict{plan=\"4\",route=\"web\",check=\"errors\",verdict=\"pass\"} 1\n"
        ));
        assert!(
            text.contains("rollout_leader{replica=\"b:2\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("rollout_leader_info{leader=\"a:1\"} 1\n"));
        assert!(text.contains("rollout_leader_token 3\n"));
    }
}
