//! Prometheus checks: an instant query (`GET /api/v1/query`) that must
//! return exactly one sample. An empty result, several series, NaN or a
//! query error is an `error` measurement, never a pass.

use std::time::Duration;

use rollout_core::plan::judge::Measurement;
use rollout_core::plan::{PromRule, Prometheus};
use serde_json::Value;

/// Time limit of one query.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply read.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Runs `q` for `route` (once, or once per arm).
pub async fn measure(http: &reqwest::Client, q: &Prometheus, route: &str) -> Measurement {
    let query = q.query.replace("$route", route);
    let value = |arm: Option<&str>| {
        let query = match arm {
            Some(a) => query.replace("$arm", a),
            None => query.clone(),
        };
        async move { instant(http, &q.url, &query).await }
    };
    match q.rule {
        PromRule::Condition(..) => match value(None).await {
            Ok(v) => Measurement::Value(v),
            Err(e) => Measurement::Error(e),
        },
        PromRule::MaxIncrease(_) => match (value(Some("old")).await, value(Some("new")).await) {
            (Ok(old), Ok(new)) => Measurement::PerArm { old, new },
            (Err(e), _) | (_, Err(e)) => Measurement::Error(e),
        },
    }
}

/// The one value `query` returns now.
async fn instant(http: &reqwest::Client, url: &str, query: &str) -> Result<f64, String> {
    let mut resp = http
        .get(format!("{url}/api/v1/query"))
        .query(&[("query", query)])
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("prometheus at {url}: {e}"))?;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("prometheus reply: {e}"))?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(format!("prometheus reply over {MAX_REPLY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let reply: Value = serde_json::from_slice(&body)
        .map_err(|_| format!("prometheus answered {} without JSON", resp.status()))?;
    if reply["status"] != "success" {
        let error = reply["error"].as_str().unwrap_or("no error given");
        return Err(format!("query failed: {error}"));
    }
    let data = &reply["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some([]) => return Err("the query returned no series".to_owned()),
            Some(many) => {
                return Err(format!(
                    "the query returned {} series; it must return one",
                    many.len()
                ));
            }
            None => return Err("the query returned no result".to_owned()),
        },
        other => {
            return Err(format!(
                "the query returned a {} result, not one sample",
                other.unwrap_or("?")
            ));
        }
    };
    // Prometheus writes sample values as strings: "0.01", "NaN", "+Inf".
    sample[1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("unreadable sample {sample}"))
}
