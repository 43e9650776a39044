//! Prometheus metrics: counters of the engine's sign-in decisions, the proxy's requests,
//! and the delivery outbox, in the Prometheus text exposition format.
//!
//! The families live in one process-wide registry. The engine counts each audit event
//! (see [`crate::gate::audit`]) as it is emitted, so a metric and its audit line never
//! disagree; the edge proxy counts every answered request. [`render`] writes them all,
//! with the delivery counters read at the time of the scrape.
//!
//! | family                                   | labels           | what                                  |
//! |------------------------------------------|------------------|---------------------------------------|
//! | `otpgate_codes_sent_total`               |                  | codes issued (a send to an unknown account counts the same) |
//! | `otpgate_codes_verified_total`           |                  | codes accepted                        |
//! | `otpgate_code_failures_total`            | `reason`         | codes refused                         |
//! | `otpgate_lockouts_total`                 | `action`         | sends or verifies made to wait        |
//! | `otpgate_sessions_refreshed_total`       |                  | refresh tokens rotated                |
//! | `otpgate_refresh_reuse_total`            |                  | rotated refresh tokens presented again |
//! | `otpgate_logouts_total`                  | `revoked`        | tokens revoked                        |
//! | `otpgate_sms_throttled_total`            | `reason`         | SMS sends the SMS guard refused: `pumping`, `prefix`, `country`, `budget` |
//! | `otpgate_sms_guard_trips_total`          | `reason`         | times a guard cap started refusing (its audit event) |
//! | `otpgate_requests_total`                 | `status`, `route` | requests answered by the edge proxy  |
//! | `otpgate_request_duration_seconds`       | `status_class`, `route` | their latency, head read to answer |
//! | `otpgate_tokens_verified_total`          | `cache`, `result` | access tokens checked, answered from the verified-token cache or not |
//! | `otpgate_store_duration_seconds`         | `operation`      | latency of each store operation       |
//! | `otpgate_store_errors_total`             | `operation`      | store operations that failed          |
//! | `otpgate_upstream_errors_total`          | `kind`           | failures reaching the app: `connect`, `timeout`, `other` |
//! | `otpgate_deliveries_total`               | `outcome`        | `sent`, `retried`, `failed_over`, `failed` |
//! | `otpgate_delivery_attempts_total`        | `provider`, `outcome` | the same outcomes by provider: `console`, `webhook`, `smtp`, `twilio`, `custom` |
//! | `otpgate_outbox_depth`                   |                  | messages queued or in delivery now    |
//!
//! No label carries an address, an account or a path: every label has a small, fixed set
//! of values, so the number of series stays bounded whatever clients send.
//!
//! The edge proxy serves them on a listener of their own (`[metrics] listen`), never on
//! its public port.

use std::sync::OnceLock;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::delivery::DeliveryStats;

/// The content type of [`render`]'s text: OpenMetrics, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label with one value: `reason`, `action` or `revoked`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Revoked {
    revoked: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: u16,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusClass {
    status_class: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenCheck {
    cache: &'static str,
    result: &'static str,
}

/// The store operations [`store_operation`] is called with.
const STORE_OPERATIONS: [&str; 6] = [
    "update_code_state",
    "hit",
    "peek_code_state",
    "set_value",
    "get_value",
    "ping",
];

/// A histogram of store latencies: 0.1 ms to about 3 s.
fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcome {
    provider: &'static str,
    outcome: &'static str,
}

/// The outcomes [`delivery_attempt`] is called with.
const DELIVERY_OUTCOMES: [&str; 4] = ["sent", "retried", "failed_over", "failed"];

/// A histogram of request latencies: 1 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every family, and the registry that writes them.
struct Metrics {
    registry: Registry,
    delivery_attempts: Family<ProviderOutcome, Counter>,
    codes_sent: Counter,
    codes_verified: Counter,
    code_failures: Family<Reason, Counter>,
    lockouts: Family<Action, Counter>,
    sessions_refreshed: Counter,
    refresh_reuse: Counter,
    logouts: Family<Revoked, Counter>,
    sms_throttled: Family<Reason, Counter>,
    sms_guard_trips: Family<Reason, Counter>,
    requests: Family<Status, Counter>,
    request_duration: Family<StatusClass, Histogram, fn() -> Histogram>,
    tokens_verified: Family<TokenCheck, Counter>,
    // The family's four series, indexed by `cache_hit as usize * 2 + valid as usize`:
    // looked up once, so a request adds to an atomic without a lookup.
    token_checks: [Counter; 4],
    store_duration: Family<Operation, Histogram, fn() -> Histogram>,
    store_errors: Family<Operation, Counter>,
    upstream_errors: Family<Kind, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("otpgate");
        let metrics = Metrics {
            delivery_attempts: Family::default(),
            codes_sent: Counter::default(),
            codes_verified: Counter::default(),
            code_failures: Family::default(),
            lockouts: Family::default(),
            sessions_refreshed: Counter::default(),
            refresh_reuse: Counter::default(),
            logouts: Family::default(),
            sms_throttled: Family::default(),
            sms_guard_trips: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            tokens_verified: Family::default(),
            token_checks: Default::default(),
            store_duration: Family::new_with_constructor(store_histogram),
            store_errors: Family::default(),
            upstream_errors: Family::default(),
            registry: Registry::default(),
        };
        let token_checks = std::array::from_fn(|index| {
            let cache = if index >= 2 { "hit" } else { "miss" };
            let result = if index % 2 == 1 { "valid" } else { "invalid" };
            // A clone shares the series' atomic: adding to it moves the family's value.
            metrics
                .tokens_verified
                .get_or_create_owned(&TokenCheck { cache, result })
        });
        for operation in STORE_OPERATIONS {
            drop(metrics.store_errors.get_or_create(&Operation { operation }));
            drop(
                metrics
                    .store_duration
                    .get_or_create(&Operation { operation }),
            );
        }
        for kind in ["connect", "timeout", "other"] {
            drop(metrics.upstream_errors.get_or_create(&Kind { kind }));
        }
        // Every known label value shows from the start, at 0, so that a rate over a
        // series that has not moved yet is 0 rather than missing.
        for reason in ["rejected", "malformed", "no_pending_login"] {
            drop(metrics.code_failures.get_or_create(&Reason { reason }));
        }
        for action in ["send", "verify"] {
            drop(metrics.lockouts.get_or_create(&Action { action }));
        }
        for reason in ["pumping", "prefix", "country", "budget"] {
            drop(metrics.sms_throttled.get_or_create(&Reason { reason }));
            drop(metrics.sms_guard_trips.get_or_create(&Reason { reason }));
        }
        for revoked in ["access", "refresh"] {
            drop(metrics.logouts.get_or_create(&Revoked { revoked }));
        }
        // Counters are named without `_total`: the encoder adds it.
        registry.register(
            "codes_sent",
            "Codes issued and queued for delivery",
            metrics.codes_sent.clone(),
        );
        registry.register(
            "codes_verified",
            "Codes accepted",
            metrics.codes_verified.clone(),
        );
        registry.register(
            "code_failures",
            "Codes refused, by reason",
            metrics.code_failures.clone(),
        );
        registry.register(
            "lockouts",
            "Sends or verifies made to wait for past failures, by action",
            metrics.lockouts.clone(),
        );
        registry.register(
            "sessions_refreshed",
            "Refresh tokens rotated",
            metrics.sessions_refreshed.clone(),
        );
        registry.register(
            "refresh_reuse",
            "Rotated refresh tokens presented again (their family is revoked)",
            metrics.refresh_reuse.clone(),
        );
        registry.register(
            "logouts",
            "Tokens revoked, by kind",
            metrics.logouts.clone(),
        );
        registry.register(
            "sms_throttled",
            "SMS sends the SMS guard refused, by reason",
            metrics.sms_throttled.clone(),
        );
        registry.register(
            "sms_guard_trips",
            "SMS guard caps that started refusing sends, by reason",
            metrics.sms_guard_trips.clone(),
        );
        registry.register(
            "requests",
            "Requests answered by the edge proxy, by status and route kind",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Latency of the edge proxy's requests, from the head read to the answer, by status class and route kind",
            metrics.request_duration.clone(),
        );
        registry.register(
            "tokens_verified",
            "Access tokens checked, by whether the verified-token cache answered and the result",
            metrics.tokens_verified.clone(),
        );
        registry.register(
            "store_duration_seconds",
            "Latency of store operations, by operation",
            metrics.store_duration.clone(),
        );
        registry.register(
            "store_errors",
            "Store operations that failed, by operation",
            metrics.store_errors.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failures reaching the app, by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Delivery outcomes by provider: messages sent, tries retried, messages handed on to the fallback (under the provider that failed), messages no provider delivered (under the last one tried)",
            metrics.delivery_attempts.clone(),
        );
        Metrics {
            registry,
            token_checks,
            ..metrics
        }
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A code was issued.
pub(crate) fn code_sent() {
    metrics().codes_sent.inc();
}

/// A code was accepted.
pub(crate) fn code_verified() {
    metrics().codes_verified.inc();
}

/// A code was refused for `reason`.
pub(crate) fn code_failed(reason: &'static str) {
    metrics()
        .code_failures
        .get_or_create(&Reason { reason })
        .inc();
}

/// A send or verify (`action`) was made to wait.
pub(crate) fn locked_out(action: &'static str) {
    metrics().lockouts.get_or_create(&Action { action }).inc();
}

/// The SMS guard refused a send for `reason`.
pub(crate) fn sms_throttled(reason: &'static str) {
    metrics()
        .sms_throttled
        .get_or_create(&Reason { reason })
        .inc();
}

/// An SMS guard cap started refusing sends for `reason`.
pub(crate) fn sms_guard_tripped(reason: &'static str) {
    metrics()
        .sms_guard_trips
        .get_or_create(&Reason { reason })
        .inc();
}

/// A refresh token was rotated.
pub(crate) fn session_refreshed() {
    metrics().sessions_refreshed.inc();
}

/// A rotated refresh token came back.
pub(crate) fn refresh_reuse_detected() {
    metrics().refresh_reuse.inc();
}

/// A token of kind `revoked` was revoked.
pub(crate) fn logged_out(revoked: &'static str) {
    metrics().logouts.get_or_create(&Revoked { revoked }).inc();
}

/// An access token was checked: answered from the verified-token cache (`cache_hit`) or
/// not, and found `valid` or not. One atomic add.
pub(crate) fn token_verified(cache_hit: bool, valid: bool) {
    metrics().token_checks[usize::from(cache_hit) * 2 + usize::from(valid)].inc();
}

/// A store `operation` (one of the [`crate::store::Store`] methods) took `elapsed` and
/// failed or not.
pub(crate) fn store_operation(operation: &'static str, elapsed: Duration, failed: bool) {
    let metrics = metrics();
    metrics
        .store_duration
        .get_or_create(&Operation { operation })
        .observe(elapsed.as_secs_f64());
    if failed {
        metrics
            .store_errors
            .get_or_create(&Operation { operation })
            .inc();
    }
}

/// Reaching the app failed: `kind` is `connect`, `timeout` or `other`.
pub fn upstream_error(kind: &'static str) {
    metrics()
        .upstream_errors
        .get_or_create(&Kind { kind })
        .inc();
}

/// A request was answered with `status` (0: no answer was written) after `elapsed`;
/// `route` is the kind of route it took: `endpoint`, `mediated`, `upstream` or `refused`.
pub fn request_answered(status: u16, route: &'static str, elapsed: Duration) {
    let record = |(requests, duration): &(Counter, Histogram)| {
        requests.inc();
        duration.observe(elapsed.as_secs_f64());
    };
    match kept_request_series(status, route) {
        Some(kept) => record(kept.get_or_init(|| request_series(status, route))),
        // Any other value is still counted, the slow way.
        None => record(&request_series(status, route)),
    }
}

/// The route kinds [`request_answered`] is called with.
const ROUTES: [&str; 4] = ["endpoint", "mediated", "upstream", "refused"];

/// Where the series of a request with `status` (below 600) on one of [`ROUTES`] are kept
/// once looked up: a family lookup takes a lock and hashes the labels, and this runs on
/// every request. The kept handles share their values with the families'.
fn kept_request_series(
    status: u16,
    route: &str,
) -> Option<&'static OnceLock<(Counter, Histogram)>> {
    type Kept = OnceLock<(Counter, Histogram)>;
    const STATUSES: usize = 600;
    static KEPT: [[Kept; STATUSES]; ROUTES.len()] =
        [const { [const { OnceLock::new() }; STATUSES] }; ROUTES.len()];
    let route = ROUTES.iter().position(|known| *known == route)?;
    KEPT[route].get(usize::from(status))
}

/// The two series a request with `status` on `route` lands in, looked up in their families.
fn request_series(status: u16, route: &'static str) -> (Counter, Histogram) {
    let metrics = metrics();
    let status_class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    };
    let requests = metrics.requests.get_or_create(&Status { status, route });
    let duration = (metrics.request_duration).get_or_create(&StatusClass {
        status_class,
        route,
    });
    (requests.clone(), duration.clone())
}

/// A delivery through `provider` (a [`crate::delivery::Sender::provider`] name) ended a
/// try with `outcome`: `sent`, `retried`, `failed_over` or `failed`.
pub(crate) fn delivery_attempt(provider: &'static str, outcome: &'static str) {
    metrics()
        .delivery_attempts
        .get_or_create(&ProviderOutcome { provider, outcome })
        .inc();
}

/// `provider` is configured: its series show from now, at 0 until they move.
pub(crate) fn delivery_provider(provider: &'static str) {
    for outcome in DELIVERY_OUTCOMES {
        drop(
            metrics()
                .delivery_attempts
                .get_or_create(&ProviderOutcome { provider, outcome }),
        );
    }
}

/// The count of `outcome` for `provider` so far.
#[cfg(test)]
pub(crate) fn delivery_attempts(provider: &'static str, outcome: &'static str) -> u64 {
    metrics()
        .delivery_attempts
        .get_or_create(&ProviderOutcome { provider, outcome })
        .get()
}

/// Every metric in the text exposition format, with `delivery`'s counters as
/// `otpgate_deliveries_total` when given.
pub fn render(delivery: Option<DeliveryStats>) -> String {
    render_with_depth(delivery, None)
}

/// As [`render`], with the outbox's depth as the gauge `otpgate_outbox_depth` when given.
pub fn render_with_depth(delivery: Option<DeliveryStats>, outbox_depth: Option<usize>) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a metric.
    let _ = encode_registry(&mut text, &metrics().registry);
    if let Some(stats) = delivery {
        let mut registry = Registry::with_prefix("otpgate");
        let deliveries = Family::<Outcome, Counter>::default();
        for (outcome, value) in [
            ("sent", stats.sent),
            ("retried", stats.retried),
            ("failed_over", stats.failed_over),
            ("failed", stats.failed),
        ] {
            deliveries.get_or_create(&Outcome { outcome }).inc_by(value);
        }
        registry.register(
            "deliveries",
            "Delivery outcomes since start: messages sent, tries retried, messages handed to a fallback provider, messages no provider delivered",
            deliveries,
        );
        let _ = encode_registry(&mut text, &registry);
    }
    if let Some(depth) = outbox_depth {
        let mut registry = Registry::with_prefix("otpgate");
        let gauge = Gauge::<i64, AtomicI64>::default();
        gauge.set(i64::try_from(depth).unwrap_or(i64::MAX));
        registry.register(
            "outbox_depth",
            "Messages queued for delivery or being delivered now",
            gauge,
        );
        let _ = encode_registry(&mut text, &registry);
    }
    let _ = encode_eof(&mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_series_kept_after_its_first_lookup_still_counts() {
        // Statuses no other test uses: the registry is one for the whole process.
        for _ in 0..3 {
            request_answered(299, "mediated", Duration::from_millis(1));
            // Past the kept range: looked up in the family every time.
            request_answered(600, "mediated", Duration::from_millis(1));
        }
        let text = render(None);
        for status in [299, 600] {
            let line =
                format!("otpgate_requests_total{{status=\"{status}\",route=\"mediated\"}} 3");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn counts_show_in_the_text() {
        code_sent();
        code_failed("rejected");
        request_answered(200, "endpoint", Duration::from_millis(3));
        token_verified(true, true);
        store_operation("hit", Duration::from_millis(1), true);
        upstream_error("connect");
        let text = render(Some(DeliveryStats {
            sent: 4,
            ..DeliveryStats::default()
        }));
        assert!(text.contains("otpgate_codes_sent_total "), "{text}");
        assert!(
            text.contains("otpgate_code_failures_total{reason=\"rejected\"}"),
            "{text}"
        );
        assert!(
            text.contains("otpgate_requests_total{status=\"200\",route=\"endpoint\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "otpgate_request_duration_seconds_count{status_class=\"2xx\",route=\"endpoint\"}"
            ),
            "{text}"
        );
        assert!(
            text.contains("otpgate_tokens_verified_total{cache=\"hit\",result=\"valid\"}"),
            "{text}"
        );
        assert!(
            text.contains("otpgate_tokens_verified_total{cache=\"miss\",result=\"invalid\"} "),
            "{text}"
        );
        assert!(
            text.contains("otpgate_store_duration_seconds_count{operation=\"hit\"}"),
            "{text}"
        );
        assert!(
            text.contains("otpgate_store_errors_total{operation=\"hit\"}"),
            "{text}"
        );
        assert!(
            text.contains("otpgate_upstream_errors_total{kind=\"connect\"}"),
            "{text}"
        );
        assert!(
            text.contains("otpgate_deliveries_total{outcome=\"sent\"} 4"),
            "{text}"
        );
        // Known label values show before they first move.
        assert!(
            text.contains("otpgate_lockouts_total{action=\"verify\"}"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
