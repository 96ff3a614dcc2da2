//! Concurrent pushes never take an edge back to a lower version.
//!
//! Each round starts a fresh edge (memory store) and sends it 64 signed
//! pushes, versions 1..=64 of a valid config, all in flight at once in a
//! shuffled order. Whatever order they land in, the edge must end on version
//! 64, ACK every push it applied, and refuse (409) only a push older than what
//! it then held. An edge that reads the applied version and then writes with a
//! plain `set` can lose: two pushes read the same version, the higher one
//! writes first and the lower one overwrites it. A compare-and-swap write
//! (`wasi:keyvalue/atomics`) cannot.

use std::sync::Arc;

use rollout_tests::*;
use serde_json::json;

const ROUNDS: u64 = 100;
const VERSIONS: u64 = 64;

/// SplitMix64: a small deterministic PRNG, seeded per round so a failing
/// round's order can be replayed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Versions 1..=`VERSIONS` in a Fisher-Yates shuffle seeded by `round`.
fn shuffled(round: u64) -> Vec<u64> {
    let mut rng = SplitMix64(0x00C0_FFEE_0000_0000 ^ round);
    let mut order: Vec<u64> = (1..=VERSIONS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// What one push got back: (pushed version, HTTP status, reply JSON), or why
/// it got nothing.
type Answer = Result<(u64, u16, serde_json::Value), String>;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_pushes_in_any_order_end_on_the_highest_version() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    // Version v routes v % to new: every version is a different config.
    let envelopes: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        (1..=VERSIONS)
            .map(|v| envelope(v, config(&old.url(), &new.url(), v as f64, json!({}))))
            .collect(),
    );
    let highest_digest = digest(&envelopes[VERSIONS as usize - 1].0);
    let client = client();

    let mut failed_rounds: Vec<(u64, Vec<String>)> = Vec::new();
    let (mut acks, mut nacks) = (0u64, 0u64);
    for round in 0..ROUNDS {
        let edge = edge_for(&old, &new).await;
        let order = shuffled(round);
        // Every push waits here until all are ready, then all go at once.
        let start = Arc::new(tokio::sync::Barrier::new(order.len()));
        let tasks: Vec<tokio::task::JoinHandle<Answer>> = order
            .iter()
            .map(|&version| {
                let (client, start, envelopes) = (client.clone(), start.clone(), envelopes.clone());
                let addr = edge.addr;
                tokio::spawn(async move {
                    let (body, signature) = envelopes[version as usize - 1].clone();
                    start.wait().await;
                    let (status, reply) = push(&client, addr, body, &signature).await;
                    Ok((version, status, reply))
                })
            })
            .collect();
        let answers: Vec<Answer> = futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(|joined| joined.unwrap_or_else(|e| Err(format!("push task failed: {e}"))))
            .collect();

        let mut problems = Vec::new();
        let mut highest_acked = 0;
        for answer in answers {
            let (version, status, reply) = match answer {
                Ok(a) => a,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let held = reply["version"].as_u64();
            match (status, reply["status"].as_str()) {
                (200, Some("ack")) if held == Some(version) => {
                    acks += 1;
                    highest_acked = highest_acked.max(version);
                }
                (409, Some("nack")) if held.is_some_and(|h| h > version) => nacks += 1,
                _ => problems.push(format!("push of version {version}: {status} {reply}")),
            }
        }
        let (version, digest) = applied(&client, edge.addr).await;
        if version != VERSIONS || digest.as_deref() != Some(highest_digest.as_str()) {
            problems.push(format!(
                "ended on version {version} (digest {digest:?}), not {VERSIONS}"
            ));
        }
        if version < highest_acked {
            problems.push(format!(
                "ended on version {version}, below version {highest_acked}, which it ACKed"
            ));
        }
        if !problems.is_empty() {
            failed_rounds.push((round, problems));
        }
    }

    println!(
        "{ROUNDS} rounds of {VERSIONS} concurrent pushes: {} failed; {acks} ACKs, {nacks} 409 NACKs",
        failed_rounds.len()
    );
    for (round, problems) in &failed_rounds {
        println!("round {round} (order {:?}):", shuffled(*round));
        for problem in problems {
            println!("  {problem}");
        }
    }
    assert!(
        failed_rounds.is_empty(),
        "{} of {ROUNDS} rounds let concurrent pushes go wrong (details above)",
        failed_rounds.len()
    );
}
