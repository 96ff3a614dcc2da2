//! The judge alone, seeded: simulated canary plans with `rollout canary`'s
//! defaults, every interval's probe counts drawn at chosen error rates and
//! fed to the plan machine, as the control service feeds it.
//!
//!     cargo run --release -p rollout-core --example judge -- [PLANS] [SEED]
//!
//! Prints a Markdown table: how often each scenario rolls back (with a 95 %
//! Wilson interval) and, when it does, how long after the plan started.

use rollout_core::plan::Plan;
use rollout_core::plan::judge::{Counts, Measurement, ProbeSample};
use rollout_core::plan::machine::{Action, Input, PlanState};

/// `rollout canary` with its defaults: 1, 5, 25, 50, 100 % with 2 minutes
/// between, the default probe check in the background.
fn canary() -> Plan {
    let doc = serde_json::json!({
        "schema": 1,
        "steps": [
            {"set_weight": 1}, {"pause": "2m"}, {"set_weight": 5}, {"pause": "2m"},
            {"set_weight": 25}, {"pause": "2m"}, {"set_weight": 50}, {"pause": "2m"},
            {"set_weight": 100},
        ],
        "checks": {"errors": {"probe": {"path": "/"}}},
        "background": ["errors"],
    });
    match Plan::from_json(doc.to_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("the canary plan is valid: {e}"),
    }
}

/// xorshift64*, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn errors(&mut self, n: u64, p: f64) -> Counts {
        Counts {
            samples: n,
            errors: (0..n).filter(|_| self.next() < p).count() as u64,
        }
    }
}

/// Runs one plan with these error rates to its end; the second of its
/// rollback, if it rolled back.
fn run(plan: &Plan, rng: &mut Rng, old: f64, new: f64) -> Option<i64> {
    let check = plan.check("errors").expect("the canary has its check");
    let interval = check.interval.as_millis() as i64;
    let per_interval = (f64::from(check.min_samples) * 1.1).round() as u64;
    let mut s = PlanState::start(plan, 0);
    let mut running = (Counts::default(), Counts::default());
    let mut version = 0u64;
    let mut now = 0i64;
    let mut inputs = vec![Input::Tick];
    while !s.phase.is_terminal() {
        for input in std::mem::take(&mut inputs) {
            for action in s.advance(plan, now, input) {
                match action {
                    // Edges hold a version the moment it is committed here.
                    Action::SetWeight { .. } => {
                        version += 1;
                        inputs.push(Input::Committed(Some(version)));
                        inputs.push(Input::Converged(version));
                    }
                    Action::Rollback { .. } => return Some(now / 1000),
                    Action::Event { .. } => {}
                }
            }
        }
        if !inputs.is_empty() {
            continue;
        }
        now += interval;
        let (io, inn) = (rng.errors(per_interval, old), rng.errors(per_interval, new));
        let sample = ProbeSample::accumulate(&mut running, io, inn);
        inputs.push(Input::Measured {
            check: "errors".to_owned(),
            measurement: Measurement::Probe(sample),
        });
        inputs.push(Input::Tick);
    }
    None
}

/// The 95 % Wilson score interval of `k` in `n`, in percent.
fn wilson(k: usize, n: usize) -> (f64, f64) {
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    (
        100.0 * (centre - half).max(0.0),
        100.0 * (centre + half).min(1.0),
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let plans: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let plan = canary();
    let mut rng = Rng(seed.max(1));
    println!(
        "{plans} simulated `rollout canary` plans per row (defaults; seed {seed}), old arm at 1 % errors:\n"
    );
    println!(
        "| new arm | rolled back | rate (95 % interval) | time to rollback: median / p90 / max |"
    );
    println!("|---|---|---|---|");
    for (label, new) in [
        ("1 % (equal)", 0.01),
        ("3 % (+2 points)", 0.03),
        ("6 % (+5 points)", 0.06),
        ("21 % (+20 points)", 0.21),
    ] {
        let mut times: Vec<i64> = (0..plans)
            .filter_map(|_| run(&plan, &mut rng, 0.01, new))
            .collect();
        times.sort_unstable();
        let (lo, hi) = wilson(times.len(), plans);
        let at = |q: f64| {
            times
                .get(((times.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        let delays = match (at(0.5), at(0.9), times.last()) {
            (Some(m), Some(p), Some(x)) => format!("{m} s / {p} s / {x} s"),
            _ => "-".to_owned(),
        };
        println!(
            "| {label} | {} of {plans} | {:.2} % ({lo:.2}–{hi:.2} %) | {delays} |",
            times.len(),
            100.0 * times.len() as f64 / plans as f64
        );
    }
}
