//! The one client of the edges' admin endpoint: the fan-out, the verify
//! loop and break-glass pushes all speak to edges through it.
//!
//! An edge is outside the service's trust: its replies are read up to
//! [`MAX_REPLY_BYTES`] and the error text it sends is kept to
//! [`MAX_EDGE_ERROR_BYTES`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rollout_api::{Version, clip, holds};
use rollout_core::edge::{ADMIN_PATH, AppliedReply, PushReply, PushStatus};
use rollout_core::{Applied, Digest, MAX_ENVELOPE_BYTES};

use crate::keys::Keys;
use crate::lease::LeaseClock;

/// Largest reply read from an edge.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Longest refusal text kept from an edge.
pub const MAX_EDGE_ERROR_BYTES: usize = 1024;

/// A signed envelope, ready to PUT.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Its version.
    pub version: Version,
    /// The digest of `body`.
    pub digest: Digest,
    /// The exact body that was signed.
    pub body: Bytes,
    /// The `rollout-signature` header value.
    pub signature: String,
    /// Whether to stamp it when sent (see [`EdgeClient::stamping_with`]).
    /// Only the version being pushed is stamped: an older one sent to bring
    /// an edge through a key change is not, so no edge can have control
    /// stamp a superseded version afresh.
    pub stamp: bool,
}

impl Signed {
    /// What an edge holds once it applied this.
    pub fn applied(&self) -> Applied {
        Applied {
            version: self.version.get(),
            digest: self.digest,
        }
    }
}

/// What one edge made of a push.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// It holds the pushed version.
    Ack {
        /// What it holds.
        held: Applied,
        /// Time of the PUT that was acknowledged, ms.
        latency_ms: f64,
    },
    /// It refused it.
    Nack {
        /// What it holds instead.
        held: Option<Applied>,
        /// Why (clipped).
        error: String,
    },
    /// No usable answer: unreachable, timed out, or not a push reply.
    NoAnswer(String),
}

/// A push to one edge and how many PUTs it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// The last answer.
    pub answer: Answer,
    /// PUTs sent (1 + retries used).
    pub attempts: u32,
}

/// Retries of a PUT that got no answer.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// How many.
    pub count: u32,
    /// First delay; doubles each retry.
    pub backoff: Duration,
}

/// An HTTP client for edges' admin endpoints.
#[derive(Debug, Clone)]
pub struct EdgeClient {
    http: reqwest::Client,
    timeout: Duration,
    stamps: Option<Arc<Keys>>,
    /// Pushes go out only while this says the replica leads.
    gate: Option<Arc<LeaseClock>>,
}

impl EdgeClient {
    /// A client whose every request ends within `timeout`. Redirects are
    /// not followed: an edge answers its admin path itself.
    pub fn new(timeout: Duration) -> Result<EdgeClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(EdgeClient {
            http,
            timeout,
            stamps: None,
            gate: None,
        })
    }

    /// The same client, stamping every push with the key (in `keys`) that
    /// signed it, at the time it is sent: an edge that holds nothing takes
    /// only a fresh stamped push, so an old envelope replayed to it is refused.
    pub fn stamping_with(mut self, keys: Arc<Keys>) -> EdgeClient {
        self.stamps = Some(keys);
        self
    }

    /// Sends pushes only while `clock` says this replica leads: a replica
    /// that lost the lease (or was frozen past it) sends none.
    #[must_use]
    pub fn gated_by(mut self, clock: Arc<LeaseClock>) -> EdgeClient {
        self.gate = Some(clock);
        self
    }

    fn admin_url(edge: &str) -> String {
        format!("{}{ADMIN_PATH}", edge.trim_end_matches('/'))
    }

    /// What `edge` holds (GET on its admin path).
    pub async fn held(&self, edge: &str) -> Result<Option<Applied>, String> {
        let reply = self.report(edge).await?;
        Ok(reply.digest.map(|digest| Applied {
            version: reply.version,
            digest,
        }))
    }

    /// The edge's whole GET reply: what it holds, how old, which keys it trusts.
    pub async fn report(&self, edge: &str) -> Result<AppliedReply, String> {
        let resp = self
            .http
            .get(Self::admin_url(edge))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp).await?;
        serde_json::from_slice(&body)
            .map_err(|_| format!("HTTP {status} without an applied-version reply"))
    }

    /// The envelope `edge` holds, byte for byte as it was pushed, and the
    /// `rollout-signature` it came with: a GET carrying a read stamp by a
    /// key of this service's that the edge trusts (the edge hands its
    /// envelope to no one else). Only while this replica leads, when gated.
    pub async fn read_back(&self, edge: &str) -> Result<(Bytes, String), String> {
        let keys = self
            .stamps
            .as_ref()
            .ok_or("this client holds no key to sign a read with")?;
        if self.gate.as_ref().is_some_and(|g| !g.valid()) {
            return Err("not sent: this replica does not lead".to_owned());
        }
        let trusted = self.report(edge).await?.keys;
        let ring = keys.current();
        let key = trusted
            .iter()
            .find_map(|id| ring.find(*id))
            .ok_or_else(|| {
                let ids: Vec<String> = trusted.iter().map(ToString::to_string).collect();
                format!(
                    "the edge trusts {}, and this service holds none of them",
                    if ids.is_empty() {
                        "no key".to_owned()
                    } else {
                        ids.join(", ")
                    }
                )
            })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let resp = self
            .http
            .get(Self::admin_url(edge))
            .timeout(self.timeout)
            .header(rollout_core::READ_HEADER, key.read_stamp(now))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let signature = resp
            .headers()
            .get(rollout_core::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_at_most(resp, MAX_ENVELOPE_BYTES).await?;
        match (status, signature) {
            (200, Some(signature)) => Ok((Bytes::from(body), signature)),
            _ => {
                let error = serde_json::from_slice::<PushReply>(&body)
                    .ok()
                    .and_then(|r| r.error)
                    .unwrap_or_else(|| "no envelope in the reply".to_owned());
                Err(format!(
                    "HTTP {status}: {}",
                    clip(&error, MAX_EDGE_ERROR_BYTES)
                ))
            }
        }
    }

    /// One PUT of `signed` to `edge`.
    pub async fn put(&self, edge: &str, signed: &Signed) -> Answer {
        let started = Instant::now();
        let signature = match self.stamps.as_ref().filter(|_| signed.stamp) {
            Some(keys) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                keys.current().stamp(&signed.signature, &signed.body, now)
            }
            None => signed.signature.clone(),
        };
        let sent = self
            .http
            .put(Self::admin_url(edge))
            .timeout(self.timeout)
            .header(rollout_core::SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(signed.body.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return Answer::NoAnswer(describe(&e)),
        };
        let status = resp.status().as_u16();
        let body = match read_limited(resp).await {
            Ok(b) => b,
            Err(e) => return Answer::NoAnswer(e),
        };
        let Ok(reply) = serde_json::from_slice::<PushReply>(&body) else {
            return Answer::NoAnswer(format!("HTTP {status} without a push reply"));
        };
        let held = reply.digest.map(|digest| Applied {
            version: reply.version,
            digest,
        });
        match held {
            Some(held)
                if reply.status == PushStatus::Ack && holds(Some(held), signed.applied()) =>
            {
                Answer::Ack {
                    held,
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                }
            }
            _ => {
                let error = reply.error.unwrap_or_else(|| {
                    format!("edge answered {status} holding version {}", reply.version)
                });
                Answer::Nack {
                    held,
                    error: clip(&error, MAX_EDGE_ERROR_BYTES).to_owned(),
                }
            }
        }
    }

    /// PUTs `signed` to `edge`, again after a pause when there was no answer.
    pub async fn push(&self, edge: &str, signed: &Signed, retries: Retries) -> Pushed {
        let mut attempts = 0;
        loop {
            if self.gate.as_ref().is_some_and(|g| !g.valid()) {
                return Pushed {
                    answer: Answer::NoAnswer("not sent: this replica does not lead".to_owned()),
                    attempts,
                };
            }
            let answer = self.put(edge, signed).await;
            attempts += 1;
            if !matches!(answer, Answer::NoAnswer(_)) || attempts > retries.count {
                return Pushed { answer, attempts };
            }
            tokio::time::sleep(retries.backoff * 2u32.saturating_pow(attempts - 1)).await;
        }
    }
}

/// The body of `resp`, refusing one over [`MAX_REPLY_BYTES`].
async fn read_limited(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    read_at_most(resp, MAX_REPLY_BYTES).await
}

/// The body of `resp`, refusing one over `limit` bytes.
async fn read_at_most(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("reply over {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("reply over {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error in a few words, with its causes.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection refused or unreachable".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        clip(&text, MAX_EDGE_ERROR_BYTES).to_owned()
    }
}
