//! Prometheus metrics from `otpgate run` as a process: served on `[metrics] listen` only,
//! read with a Prometheus text parser after a sign-in, and never on the public port.

mod common;

use std::process::Stdio;

use axum::Router;
use axum::routing::get;
use common::{
    WebhookReceiver, free_port, gate_command, serve, sign_in, wait_for_port, webhook_delivery_toml,
    with_listen,
};
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::StatusCode;

/// The gate as a process, killed when dropped.
struct Gate {
    child: std::process::Child,
    base: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Gate {
    /// A gate in front of a trivial app, delivering codes to `hook`.
    async fn start_with_webhook(hook: &WebhookReceiver) -> Gate {
        let upstream = serve(Router::new().route("/", get(|| async { "app" }))).await;
        Gate::start(&format!(
            "[server]\nupstream = \"http://{upstream}\"\nthreads = 1\n\n{}",
            webhook_delivery_toml(&hook.url)
        ))
        .await
    }

    async fn start(config: &str) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let path = dir.path().join("gate.toml");
        let config = format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            with_listen(config, port)
        );
        std::fs::write(&path, config).unwrap();
        let child = gate_command(&path, "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let gate = Gate {
            child,
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            _dir: dir,
        };
        wait_for_port(port).await;
        wait_for_port(metrics_port).await;
        gate
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `sample`, whatever type the parser gave it.
fn value(sample: &Sample) -> f64 {
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{} is not a single number: {other:?}", sample.metric),
    }
}

/// The samples named `name`.
fn samples<'a>(scrape: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    scrape.samples.iter().filter(|s| s.metric == name).collect()
}

/// The one sample named `name` with the label `label` = `expected`, if any.
fn labelled<'a>(scrape: &'a Scrape, name: &str, label: &str, expected: &str) -> Option<&'a Sample> {
    samples(scrape, name)
        .into_iter()
        .find(|s| s.labels.get(label) == Some(expected))
}

/// The count of `outcome` for `provider`, if the series shows.
fn attempts(scrape: &Scrape, provider: &str, outcome: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "otpgate_delivery_attempts_total"
                && s.labels.get("provider") == Some(provider)
                && s.labels.get("outcome") == Some(outcome)
        })
        .map(value)
}

async fn scrape(client: &reqwest::Client, url: &str) -> (String, Scrape) {
    let answer = client.get(url).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = answer.text().await.unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let parsed = Scrape::parse(lines).unwrap();
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_moves_the_counters_on_the_metrics_listener_only() {
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start_with_webhook(&hook).await;
    let client = reqwest::Client::new();

    let (_, before) = scrape(&client, &gate.metrics).await;
    let sent_before = samples(&before, "otpgate_codes_sent_total")
        .first()
        .map_or(0.0, |s| value(s));
    assert_eq!(sent_before, 0.0, "nothing was sent yet");

    let signed_in = sign_in(&client, &gate.base, &hook, "alice@example.com").await;
    let proxied = client
        .get(format!("{}/", gate.base))
        .bearer_auth(&signed_in.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::OK);
    assert_eq!(proxied.text().await.unwrap(), "app");
    // The same token again: answered from the verified-token cache.
    let again = client
        .get(format!("{}/", gate.base))
        .bearer_auth(&signed_in.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    // Nothing is protected here, so a forged token still reaches the app, without identity.
    let forged = client
        .get(format!("{}/", gate.base))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::OK);

    // A request's log line, where it is counted, may be written just after its answer:
    // wait until the proxied ones show.
    let mut upstream_counted = 0.0;
    let (mut text, mut after) = scrape(&client, &gate.metrics).await;
    for _ in 0..50 {
        upstream_counted = samples(&after, "otpgate_requests_total")
            .into_iter()
            .filter(|s| s.labels.get("route") == Some("upstream"))
            .map(value)
            .sum();
        if upstream_counted >= 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (text, after) = scrape(&client, &gate.metrics).await;
    }
    assert!(upstream_counted >= 3.0, "{text}");
    let one = |name: &str| {
        let found = samples(&after, name);
        assert_eq!(found.len(), 1, "{name} in:\n{text}");
        value(found[0])
    };
    assert!(one("otpgate_codes_sent_total") >= 1.0, "{text}");
    assert!(one("otpgate_codes_verified_total") >= 1.0, "{text}");
    let ok = labelled(&after, "otpgate_requests_total", "status", "200")
        .unwrap_or_else(|| panic!("no requests with status 200 in:\n{text}"));
    // The send, the verify and the proxied request, at least; the log line of the last
    // may be written just after its answer, so it may or may not be counted yet.
    assert!(value(ok) >= 2.0, "{text}");
    let latencies = labelled(
        &after,
        "otpgate_request_duration_seconds_count",
        "status_class",
        "2xx",
    );
    assert!(latencies.is_some_and(|s| value(s) >= 2.0), "{text}");
    // The send and the verify were answered by the gate itself.
    let answered_by_gate: f64 = samples(&after, "otpgate_requests_total")
        .into_iter()
        .filter(|s| s.labels.get("route") == Some("endpoint"))
        .map(value)
        .sum();
    assert!(answered_by_gate >= 2.0, "{text}");
    assert!(
        samples(&after, "otpgate_request_duration_seconds_count")
            .iter()
            .any(|s| s.labels.get("route") == Some("upstream") && value(s) >= 3.0),
        "{text}"
    );
    // Tokens: the first check of the token is a miss, the second a hit; the forged one
    // is invalid.
    let tokens = |cache: &str, result: &str| {
        samples(&after, "otpgate_tokens_verified_total")
            .into_iter()
            .find(|s| {
                s.labels.get("cache") == Some(cache) && s.labels.get("result") == Some(result)
            })
            .map_or(0.0, value)
    };
    assert!(tokens("miss", "valid") >= 1.0, "{text}");
    assert!(tokens("hit", "valid") >= 1.0, "{text}");
    assert!(tokens("miss", "invalid") >= 1.0, "{text}");
    // The store: each code write timed, none failed.
    let code_writes = labelled(
        &after,
        "otpgate_store_duration_seconds_count",
        "operation",
        "update_code_state",
    )
    .unwrap_or_else(|| panic!("no store latency in:\n{text}"));
    assert!(value(code_writes) >= 2.0, "{text}");
    let store_errors = samples(&after, "otpgate_store_errors_total");
    assert!(!store_errors.is_empty(), "{text}");
    assert!(store_errors.iter().all(|s| value(s) == 0.0), "{text}");
    let upstream_errors = samples(&after, "otpgate_upstream_errors_total");
    assert!(!upstream_errors.is_empty(), "{text}");
    assert!(upstream_errors.iter().all(|s| value(s) == 0.0), "{text}");
    // The webhook received the code, so the outbox counted one message sent.
    let delivered = labelled(&after, "otpgate_deliveries_total", "outcome", "sent")
        .unwrap_or_else(|| panic!("no delivery counter in:\n{text}"));
    assert!(value(delivered) >= 1.0, "{text}");

    // The public port does not serve the metrics: the path goes to the app, which has
    // no such route.
    let public = client
        .get(format!("{}/metrics", gate.base))
        .bearer_auth(&signed_in.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    assert!(!public.text().await.unwrap().contains("otpgate_"));

    // Only GET /metrics on the metrics listener.
    let other = client
        .get(gate.metrics.replace("/metrics", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_refuses_connections_counts_as_an_upstream_connect_error() {
    // A port nothing listens on: every connection to the app is refused.
    let down = free_port();
    let gate = Gate::start(&format!(
        "[server]\nupstream = \"http://127.0.0.1:{down}\"\nthreads = 1\n"
    ))
    .await;
    let client = reqwest::Client::new();
    let answer = client.get(format!("{}/", gate.base)).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    let (text, after) = scrape(&client, &gate.metrics).await;
    let connect = labelled(&after, "otpgate_upstream_errors_total", "kind", "connect")
        .unwrap_or_else(|| panic!("no upstream errors in:\n{text}"));
    assert!(value(connect) >= 1.0, "{text}");
}

#[test]
fn metrics_on_the_public_port_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:8080\"\n\n[metrics]\nlisten = \"127.0.0.1:8080\"\n",
    )
    .unwrap();
    let error = otpgate::config::Config::from_file(&path).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`metrics.listen`"), "{message}");
    assert!(message.contains(":5:"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivery_counts_under_its_provider_and_the_depth_shows() {
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start_with_webhook(&hook).await;
    let client = reqwest::Client::new();

    // The configured provider shows from the start, at 0, and the outbox is empty.
    let (text, before) = scrape(&client, &gate.metrics).await;
    assert_eq!(attempts(&before, "webhook", "sent"), Some(0.0), "{text}");
    assert_eq!(attempts(&before, "webhook", "failed"), Some(0.0), "{text}");

    sign_in(&client, &gate.base, &hook, "alice@example.com").await;

    // The webhook received the code; the outbox counts the send once the webhook's
    // answer is read, which may be just after: wait until it shows.
    let (mut text, mut after) = scrape(&client, &gate.metrics).await;
    for _ in 0..50 {
        if attempts(&after, "webhook", "sent").is_some_and(|sent| sent >= 1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (text, after) = scrape(&client, &gate.metrics).await;
    }
    let sent = attempts(&after, "webhook", "sent")
        .unwrap_or_else(|| panic!("no webhook series in:\n{text}"));
    assert!(sent >= 1.0, "{text}");
    assert_eq!(attempts(&after, "webhook", "failed"), Some(0.0), "{text}");
    let depth = samples(&after, "otpgate_outbox_depth");
    assert_eq!(depth.len(), 1, "{text}");
    assert!(value(depth[0]) >= 0.0, "{text}");
}
