//! Per-arm figures for Prometheus: what the edge answered clients and how its
//! origins answered it, so a control service can judge a canary from a scrape.
//!
//! Recording is a few relaxed atomic adds into fixed arrays indexed by arm and
//! status class: no allocation, no lock, nothing held across an await. Only
//! [`Metrics::render`], called per scrape, allocates.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use rollout_core::Arm;
use tokio::net::TcpListener;

use crate::limits::Shed;

/// The header the component names the arm with, on the requests it sends to
/// an origin and on the responses it gives a client.
const ARM_HEADER: &str = "x-rollout-arm";
/// The header the component names the applied config version with.
const VERSION_HEADER: &str = "x-rollout-version";

/// The `arm` label values, by index. `none` is a response no arm produced
/// (the host's own errors) or a request that did not name one.
const ARMS: [&str; 3] = ["old", "new", "none"];
const NO_ARM: usize = 2;

/// The `class` label values, by index.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// Classes rendered only once something was counted in them: a proxy never
/// sends a final 1xx, and a status outside 100..=599 is invalid (RFC 9110
/// §15). They exist so that the classes of an arm still add up to every
/// response it sent.
const RARE_CLASSES: [usize; 2] = [0, 5];

/// Upper bounds of the origin histogram's buckets, in nanoseconds (compared
/// exactly) and as the `le` label, which must not drift from them by float
/// formatting.
const BOUNDS: [(u64, &str); 13] = [
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// The `limit` label values of `rollout_edge_shed_total`, by index.
const SHED_LIMITS: [&str; 2] = ["instances", "connections"];

/// The content type of the text exposition format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn arm_index(headers: &HeaderMap) -> usize {
    match headers.get(ARM_HEADER).map(|v| v.as_bytes()) {
        Some(v) if v == Arm::Old.as_str().as_bytes() => 0,
        Some(v) if v == Arm::New.as_str().as_bytes() => 1,
        // The component only ever writes old or new; anything else is not an
        // arm this edge routes to, so it is not credited to one.
        _ => NO_ARM,
    }
}

fn class_index(status: StatusCode) -> usize {
    match status.as_u16() / 100 {
        class @ 1..=5 => usize::from(class - 1),
        _ => CLASSES.len() - 1,
    }
}

/// Origin request durations of one arm. Buckets are kept per bucket, not
/// cumulative, so an observation is one add; rendering sums them.
#[derive(Debug, Default)]
struct Histogram {
    /// One slot per bound, then `+Inf`.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is >= the value (`le` is inclusive).
        let slot = BOUNDS.partition_point(|&(bound, _)| bound < nanos);
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// The figures one edge collects; share one `Arc<Metrics>` between every
/// thread that serves it.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses to clients, by arm and status class.
    responses: [[AtomicU64; CLASSES.len()]; ARMS.len()],
    /// Outbound request durations, by arm.
    origin: [Histogram; ARMS.len()],
    /// Outbound requests that got no response, by arm.
    origin_errors: [AtomicU64; ARMS.len()],
    config_version: AtomicU64,
    /// Whether any response carried a version yet: until then the version is
    /// unknown, which is not the same as version 0 (no config applied).
    config_version_seen: AtomicBool,
    /// `503`s from the host's limits, by [`SHED_LIMITS`].
    shed: [AtomicU64; SHED_LIMITS.len()],
}

impl Metrics {
    /// Counts one response sent to a client on the public path.
    pub(crate) fn record_response(&self, status: StatusCode, headers: &HeaderMap) {
        self.responses[arm_index(headers)][class_index(status)].fetch_add(1, Relaxed);
        let version = headers
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(version) = version {
            self.config_version.store(version, Relaxed);
            self.config_version_seen.store(true, Relaxed);
        }
    }

    /// Counts one `503` a limit answered with (see [`crate::Limits`]).
    pub(crate) fn record_shed(&self, limit: Shed) {
        let i = match limit {
            Shed::Instances => 0,
            Shed::Connections => 1,
        };
        self.shed[i].fetch_add(1, Relaxed);
    }

    /// Starts timing one outbound request, by the arm the component put on it.
    pub(crate) fn origin_timer(self: &Arc<Self>, request_headers: &HeaderMap) -> OriginTimer {
        OriginTimer {
            metrics: self.clone(),
            arm: arm_index(request_headers),
            started: Instant::now(),
        }
    }

    /// The figures in the Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP rollout_edge_requests_total Responses the edge sent to clients, by the arm that produced them (none: the host's own) and status class."
        )?;
        writeln!(out, "# TYPE rollout_edge_requests_total counter")?;
        for (arm, counts) in ARMS.iter().zip(&self.responses) {
            for (i, (class, count)) in CLASSES.iter().zip(counts).enumerate() {
                let count = count.load(Relaxed);
                if count == 0 && RARE_CLASSES.contains(&i) {
                    continue;
                }
                writeln!(
                    out,
                    "rollout_edge_requests_total{{arm=\"{arm}\",class=\"{class}\"}} {count}"
                )?;
            }
        }

        writeln!(
            out,
            "# HELP rollout_edge_origin_seconds Time from sending a request to an origin to its response head or error, by arm."
        )?;
        writeln!(out, "# TYPE rollout_edge_origin_seconds histogram")?;
        for (arm, histogram) in ARMS.iter().zip(&self.origin) {
            let mut cumulative = 0u64;
            let les = BOUNDS.iter().map(|&(_, le)| le).chain(["+Inf"]);
            for (le, bucket) in les.zip(&histogram.buckets) {
                cumulative += bucket.load(Relaxed);
                writeln!(
                    out,
                    "rollout_edge_origin_seconds_bucket{{arm=\"{arm}\",le=\"{le}\"}} {cumulative}"
                )?;
            }
            // Seconds as a decimal: f64's Display never uses an exponent.
            let sum = histogram.sum_nanos.load(Relaxed) as f64 / 1e9;
            writeln!(
                out,
                "rollout_edge_origin_seconds_sum{{arm=\"{arm}\"}} {sum}"
            )?;
            // The count is the +Inf bucket as read above, so the two always agree.
            writeln!(
                out,
                "rollout_edge_origin_seconds_count{{arm=\"{arm}\"}} {cumulative}"
            )?;
        }

        writeln!(
            out,
            "# HELP rollout_edge_origin_errors_total Requests to an origin that got no response (connect error, timeout), by arm."
        )?;
        writeln!(out, "# TYPE rollout_edge_origin_errors_total counter")?;
        for (arm, count) in ARMS.iter().zip(&self.origin_errors) {
            let count = count.load(Relaxed);
            writeln!(
                out,
                "rollout_edge_origin_errors_total{{arm=\"{arm}\"}} {count}"
            )?;
        }

        writeln!(
            out,
            "# HELP rollout_edge_shed_total Requests the host answered 503 because a limit was reached (instances in flight, open connections)."
        )?;
        writeln!(out, "# TYPE rollout_edge_shed_total counter")?;
        for (limit, count) in SHED_LIMITS.iter().zip(&self.shed) {
            let count = count.load(Relaxed);
            writeln!(out, "rollout_edge_shed_total{{limit=\"{limit}\"}} {count}")?;
        }

        if self.config_version_seen.load(Relaxed) {
            writeln!(
                out,
                "# HELP rollout_edge_config_version The config version of the last response the edge sent (0: none applied)."
            )?;
            writeln!(out, "# TYPE rollout_edge_config_version gauge")?;
            let version = self.config_version.load(Relaxed);
            writeln!(out, "rollout_edge_config_version {version}")?;
        }
        Ok(())
    }
}

/// One outbound request being timed; [`OriginTimer::finish`] records it.
#[derive(Debug)]
pub(crate) struct OriginTimer {
    metrics: Arc<Metrics>,
    arm: usize,
    started: Instant,
}

impl OriginTimer {
    /// Records the request: `answered` when a response head arrived.
    pub(crate) fn finish(self, answered: bool) {
        self.metrics.origin[self.arm].observe(self.started.elapsed());
        if !answered {
            self.metrics.origin_errors[self.arm].fetch_add(1, Relaxed);
        }
    }
}

type MetricsBody = Full<Bytes>;

fn exposition(
    metrics: &Metrics,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<MetricsBody> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        // hyper drops the body of a HEAD response itself.
        (&http::Method::GET | &http::Method::HEAD, "/metrics") => {
            (StatusCode::OK, CONTENT_TYPE, Bytes::from(metrics.render()))
        }
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"GET /metrics\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"metrics are at /metrics\n"),
        ),
    };
    let mut resp = hyper::Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
    }
    resp
}

/// Serves `GET /metrics` on `listener` until the returned future is dropped,
/// which also closes every open connection.
pub async fn serve_metrics(metrics: Arc<Metrics>, listener: TcpListener) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("the metrics listener has no address")?;
    tracing::debug!("serving metrics on http://{local}/metrics");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            accepted = crate::accept(&listener) => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let metrics = metrics.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = exposition(&metrics, &req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection from {peer}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn sample<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn statuses_fall_into_their_class_and_invalid_ones_into_other() {
        for (status, class) in [
            (100, "1xx"),
            (200, "2xx"),
            (204, "2xx"),
            (301, "3xx"),
            (399, "3xx"),
            (404, "4xx"),
            (500, "5xx"),
            (502, "5xx"),
            (599, "5xx"),
            (600, "other"),
            (999, "other"),
        ] {
            let status = StatusCode::from_u16(status).expect("status in 100..=999");
            assert_eq!(CLASSES[class_index(status)], class, "{status}");
        }
    }

    #[test]
    fn the_arm_comes_from_the_header_and_anything_else_is_none() {
        for (pairs, arm) in [
            (&[("x-rollout-arm", "old")][..], "old"),
            (&[("x-rollout-arm", "new")][..], "new"),
            (&[("x-rollout-arm", "NEW")][..], "none"),
            (&[("x-rollout-arm", "canary")][..], "none"),
            (&[][..], "none"),
        ] {
            assert_eq!(ARMS[arm_index(&headers(pairs))], arm, "{pairs:?}");
        }
    }

    #[test]
    fn responses_are_counted_by_arm_and_class_and_rare_classes_appear_once_used() {
        let m = Metrics::default();
        let new = headers(&[("x-rollout-arm", "new"), ("x-rollout-version", "7")]);
        for _ in 0..3 {
            m.record_response(StatusCode::OK, &new);
        }
        m.record_response(StatusCode::BAD_GATEWAY, &new);
        m.record_response(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new());
        let text = m.render();
        let count = |s: &str| sample(&text, s);
        assert_eq!(
            count(r#"rollout_edge_requests_total{arm="new",class="2xx"}"#),
            Some("3")
        );
        assert_eq!(
            count(r#"rollout_edge_requests_total{arm="new",class="5xx"}"#),
            Some("1")
        );
        assert_eq!(
            count(r#"rollout_edge_requests_total{arm="none",class="5xx"}"#),
            Some("1")
        );
        assert_eq!(
            count(r#"rollout_edge_requests_total{arm="old",class="2xx"}"#),
            Some("0")
        );
        assert_eq!(
            count(r#"rollout_edge_requests_total{arm="new",class="1xx"}"#),
            None
        );
        assert_eq!(
            count(r#"rollout_edge_requests_total{arm="old",class="other"}"#),
            None
        );
        assert_eq!(count("rollout_edge_config_version"), Some("7"));

        m.record_response(StatusCode::from_u16(600).expect("600"), &new);
        assert_eq!(
            sample(
                &m.render(),
                r#"rollout_edge_requests_total{arm="new",class="other"}"#
            ),
            Some("1")
        );
    }

    #[test]
    fn the_config_version_is_absent_until_a_response_carries_one() {
        let m = Metrics::default();
        m.record_response(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new());
        assert!(!m.render().contains("rollout_edge_config_version"));
        m.record_response(StatusCode::OK, &headers(&[("x-rollout-version", "0")]));
        assert_eq!(
            sample(&m.render(), "rollout_edge_config_version"),
            Some("0")
        );
    }

    #[test]
    fn an_observation_on_a_bound_lands_in_that_bucket_and_buckets_are_cumulative() {
        let h = Histogram::default();
        for ms in [1, 2, 10, 11, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        let buckets: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
        // 1 ms in le=0.001, 2 ms in 0.0025, 10 ms in 0.01, 11 ms in 0.025, 20 s in +Inf.
        assert_eq!(buckets, [1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(h.sum_nanos.load(Relaxed), 20_024_000_000);

        let mut m = Metrics::default();
        m.origin[1] = h;
        let text = m.render();
        let le = |bound: &str| {
            sample(
                &text,
                &format!("rollout_edge_origin_seconds_bucket{{arm=\"new\",le=\"{bound}\"}}"),
            )
        };
        assert_eq!(le("0.001"), Some("1"));
        assert_eq!(le("0.005"), Some("2"));
        assert_eq!(le("0.01"), Some("3"));
        assert_eq!(le("10"), Some("4"));
        assert_eq!(le("+Inf"), Some("5"));
        assert_eq!(
            sample(&text, r#"rollout_edge_origin_seconds_count{arm="new"}"#),
            Some("5")
        );
        assert_eq!(
            sample(&text, r#"rollout_edge_origin_seconds_sum{arm="new"}"#),
            Some("20.024")
        );
    }

    #[test]
    fn a_failed_origin_request_is_timed_and_counted_as_an_error_on_its_arm() {
        let m = Arc::new(Metrics::default());
        m.origin_timer(&headers(&[("x-rollout-arm", "old")]))
            .finish(true);
        m.origin_timer(&headers(&[("x-rollout-arm", "new")]))
            .finish(false);
        let text = m.render();
        for (series, want) in [
            (r#"rollout_edge_origin_seconds_count{arm="old"}"#, "1"),
            (r#"rollout_edge_origin_seconds_count{arm="new"}"#, "1"),
            (r#"rollout_edge_origin_errors_total{arm="old"}"#, "0"),
            (r#"rollout_edge_origin_errors_total{arm="new"}"#, "1"),
            (r#"rollout_edge_origin_errors_total{arm="none"}"#, "0"),
        ] {
            assert_eq!(sample(&text, series), Some(want), "{series}");
        }
    }

    #[test]
    fn every_sample_line_belongs_to_a_declared_family() {
        let m = Metrics::default();
        m.record_response(StatusCode::OK, &headers(&[("x-rollout-version", "3")]));
        let text = m.render();
        assert!(text.ends_with('\n'));
        let mut declared: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("name and type");
                assert!(["counter", "histogram", "gauge"].contains(&kind), "{line}");
                declared.push(name);
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().expect("a name");
                let family = declared.last().expect("a TYPE line first");
                assert!(
                    name == *family
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(family)),
                    "{line} outside {family}"
                );
                let value = line.rsplit(' ').next().expect("a value");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert_eq!(declared.len(), 5);
    }
}
