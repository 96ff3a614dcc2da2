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
        let (edges, acked) = (g.edges as u64, g.edges_acked as u64);
        // A table, one metric a line.
        #[rustfmt::skip]
        let plain = [
            ("rollout_version", "gauge", "The committed config version.", g.version),
            ("rollout_versions_total", "counter", "Config versions issued.", g.versions),
            ("rollout_edges", "gauge", "Registered edges.", edges),
            ("rollout_edges_acked", "gauge", "Edges holding the committed version.", acked),
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
        out
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
        });
        assert!(text.contains("rollout_convergence_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("rollout_convergence_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("rollout_convergence_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("rollout_convergence_seconds_count 2\n"));
        assert!(text.contains("rollout_version 2\n"));
    }
}
