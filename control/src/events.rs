//! Plan events to webhooks, signed as Standard Webhooks sign them, from a
//! durable outbox: an event queued in a plan's transaction is delivered
//! even when the service restarts in between, and retried until the
//! receiver takes it (2xx) or 12 tries have failed.
//!
//! Each POST carries `{"type": "plan.<kind>", "timestamp", "data": event}`
//! and the headers `webhook-id: evt_<id>`, `webhook-timestamp` (Unix
//! seconds) and `webhook-signature: v1,<base64 of HMAC-SHA256 over
//! "<id>.<timestamp>.<body>">`, keyed with the secret `whsec_<base64>`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};

use crate::store::{OutboxRow, Store, now_ms};

/// Tries before a delivery is given up.
const ATTEMPTS: u32 = 12;
/// Time limit of one delivery.
const TIMEOUT: Duration = Duration::from_secs(10);

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A webhook signing secret, from its `whsec_<base64>` text.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Secret, String> {
        let b64 = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or("a webhook secret is whsec_ followed by base64")?;
        let key = BASE64
            .decode(b64)
            .map_err(|_| "a webhook secret is whsec_ followed by base64")?;
        if key.len() < 16 {
            return Err("a webhook secret must hold at least 16 bytes".to_owned());
        }
        Ok(Secret(key))
    }
}

impl Secret {
    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// A JSON POST of `body` to `url` as Standard Webhooks send it: with
/// `webhook-id`, `webhook-timestamp` and, given a secret, `webhook-signature`.
pub fn signed_post(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    body: String,
    secret: Option<&Secret>,
) -> reqwest::RequestBuilder {
    let timestamp = now_ms() / 1000;
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(secret) = secret {
        req = req.header(
            "webhook-signature",
            secret.sign(id, timestamp, body.as_bytes()),
        );
    }
    req.body(body)
}

/// The webhooks and their deliverer.
#[derive(Debug)]
pub struct Events {
    store: Arc<Store>,
    urls: Vec<String>,
    secret: Option<Secret>,
    http: reqwest::Client,
    wake: tokio::sync::Notify,
    /// Events are sent only while this says the replica leads.
    gate: std::sync::OnceLock<Arc<crate::lease::LeaseClock>>,
}

impl Events {
    /// Events to `urls`, signed with `secret`.
    pub fn new(
        store: Arc<Store>,
        urls: Vec<String>,
        secret: Option<Secret>,
    ) -> Result<Events, reqwest::Error> {
        Ok(Events {
            store,
            urls,
            secret,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(TIMEOUT)
                .build()?,
            wake: tokio::sync::Notify::new(),
            gate: std::sync::OnceLock::new(),
        })
    }

    /// Where events go.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// New events are queued: deliver now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends events only while `clock` says this replica leads (checked
    /// before every POST).
    pub fn gated_by(&self, clock: Arc<crate::lease::LeaseClock>) {
        let _ = self.gate.set(clock);
    }

    /// Delivers until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.store.due_deliveries(now_ms(), 32) {
                Ok(due) => {
                    let sends = due.into_iter().map(|row| self.deliver(row));
                    futures_util::future::join_all(sends).await;
                }
                Err(e) => tracing::warn!("reading the webhook outbox: {e}"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn deliver(&self, row: OutboxRow) {
        if self.gate.get().is_some_and(|g| !g.valid()) {
            return;
        }
        let event = crate::plans::event_view(&row.event);
        let body = serde_json::json!({
            "type": format!("plan.{}", event.kind.as_str()),
            "timestamp": event.at,
            "data": event,
        })
        .to_string();
        let id = format!("evt_{}", row.event.id);
        let req = signed_post(&self.http, &row.url, &id, body, self.secret.as_ref());
        let error = match req.send().await {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Some(e.to_string()),
        };
        let attempts = row.attempts + 1;
        let gave_up = error.is_some() && attempts >= ATTEMPTS;
        if let Some(e) = &error {
            tracing::warn!(
                "webhook {} (event {}), try {attempts}: {e}",
                row.url,
                row.event.id
            );
        }
        let next = now_ms() + 1000 * (1i64 << attempts.min(12)).min(3600);
        if let Err(e) = self
            .store
            .delivered(row.id, error.as_deref(), next, gave_up)
        {
            tracing::warn!("recording a webhook delivery: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference tests.
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            .parse()
            .expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!("secret".parse::<Secret>().is_err());
    }
}
