//! Delivery metrics from `otpgate run` as a process: after a sign-in through a webhook,
//! the scrape counts the message sent under the `webhook` provider and shows the outbox
//! depth.

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
    let text = answer.text().await.unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let parsed = Scrape::parse(lines).unwrap();
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivery_counts_under_its_provider_and_the_depth_shows() {
    let hook = WebhookReceiver::start().await;
    let upstream = serve(Router::new().route("/", get(|| async { "app" }))).await;
    let gate = Gate::start(&format!(
        "[server]\nupstream = \"http://{upstream}\"\nthreads = 1\n\n{}",
        webhook_delivery_toml(&hook.url)
    ))
    .await;
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
    let depth: Vec<&Sample> = after
        .samples
        .iter()
        .filter(|s| s.metric == "otpgate_outbox_depth")
        .collect();
    assert_eq!(depth.len(), 1, "{text}");
    assert!(value(depth[0]) >= 0.0, "{text}");
}
