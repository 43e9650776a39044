//! What only the pingora form does: upstream failures, upgrades, and the `otpgate run`
//! process with its signals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use common::{AppCalls, Form, RunningGate, echo_app, free_port, serve, start_form};
use futures_util::{SinkExt, StreamExt};
use otpgate::Gate;
use otpgate::http::Front;
use otpgate::pingora::{OtpProxy, UpstreamTimeouts};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_app_gets_a_502_json() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let base =
        common::start_proxy(Front::with_defaults(Gate::builder().build().unwrap()), dead).await;
    let response = reqwest::get(format!("{base}/anything")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "upstream_unavailable", "message": "the app behind the gate is unavailable"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through() {
    let (base, _) = start_form(
        Form::Pingora,
        Front::with_defaults(Gate::builder().build().unwrap()),
    )
    .await;
    let url = base.replace("http://", "ws://") + "/ws";
    // Many short-lived sockets: the app's 101 racing the request's end must never tear a
    // tunnel down (the case the patched pingora-proxy fixes).
    for round in 0..30 {
        let (mut socket, response) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        for text in ["hello", "through", "the gate"] {
            socket
                .send(tokio_tungstenite::tungstenite::Message::text(text))
                .await
                .unwrap();
            let echoed = socket
                .next()
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(echoed.into_text().unwrap().as_str(), text);
        }
        socket.close(None).await.unwrap();
    }
}

async fn run_gate(upstream: std::net::SocketAddr) -> RunningGate {
    RunningGate::start(&format!(
        "[server]\nupstream = \"http://{upstream}\"\nthreads = 1\ngrace_period = \"3s\"\nshutdown_timeout = \"1s\"\n"
    ))
    .await
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn in_flight_requests_finish_after(signal_name: &str) {
    let upstream = serve(echo_app(AppCalls::default())).await;
    let mut gate = run_gate(upstream).await;
    assert_eq!(
        reqwest::get(format!("{}/healthz", gate.base))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // A request the app takes 1.5 s to answer, then the signal while it is in flight.
    let slow = tokio::spawn(reqwest::get(format!("{}/slow", gate.base)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&gate.child, signal_name);

    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "finished");

    let exit = tokio::task::spawn_blocking(move || {
        let status = gate.child.wait().unwrap();
        let mut logs = String::new();
        for line in BufReader::new(gate.child.stdout.take().unwrap()).lines() {
            logs.push_str(&line.unwrap());
            logs.push('\n');
        }
        (status, logs)
    });
    let (status, logs) = tokio::time::timeout(Duration::from_secs(15), exit)
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}; logs:\n{logs}");
    assert!(logs.contains("finishing in-flight requests"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    in_flight_requests_finish_after("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_in_flight_requests_finish() {
    in_flight_requests_finish_after("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_codes_tokens_or_full_destinations() {
    let upstream = serve(echo_app(AppCalls::default())).await;
    let mut gate = run_gate(upstream).await;
    let client = reqwest::Client::new();
    let send = |body: Value| {
        client
            .post(format!("{}/auth/otp/send", gate.base))
            .json(&body)
            .send()
    };
    assert!(
        send(json!({"email": "secret.person@example.com"}))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        send(json!({"phone": "+14155552671"}))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let bad = client
        .post(format!("{}/auth/otp/verify?code=999999", gate.base))
        .json(&json!({"email": "secret.person@example.com", "code": "123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let token = client
        .get(format!("{}/api/x", gate.base))
        .bearer_auth("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln")
        .send()
        .await
        .unwrap();
    assert!(token.status().is_success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&gate.child, "TERM");
    let output = tokio::task::spawn_blocking(move || {
        let _ = gate.child.wait();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut gate.child.stdout.take().unwrap(), &mut out).unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut gate.child.stderr.take().unwrap(), &mut err).unwrap();
        (out, err)
    })
    .await
    .unwrap();
    // Console delivery prints codes on purpose (development only); the logs are the rest.
    let logs: String = output
        .0
        .lines()
        .chain(output.1.lines())
        .filter(|l| !l.contains("DEVELOPMENT ONLY"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("s***@example.com"),
        "destinations are logged masked:\n{logs}"
    );
    for secret in [
        "secret.person@example.com",
        "4155552671",
        "123456",
        "999999",
        "eyJ",
    ] {
        assert!(
            !logs.contains(secret),
            "`{secret}` leaked into the logs:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_is_not_logged_as_an_error() {
    let upstream = serve(echo_app(AppCalls::default())).await;
    let mut gate = run_gate(upstream).await;
    // The app takes 1.5 s; the client gives up after 200 ms and closes its connection.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(
        impatient
            .get(format!("{}/slow", gate.base))
            .send()
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    signal(&gate.child, "TERM");
    let logs = tokio::task::spawn_blocking(move || {
        let _ = gate.child.wait();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut gate.child.stdout.take().unwrap(), &mut out).unwrap();
        std::io::Read::read_to_string(&mut gate.child.stderr.take().unwrap(), &mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(
        logs.contains("/slow"),
        "the request is still logged: {logs}"
    );
    assert!(!logs.contains("ERROR"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediated_login_the_app_does_not_answer_gets_a_502_after_the_read_timeout() {
    let app = axum::Router::new().route(
        "/v1/auth/login",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }),
    );
    let upstream = serve(app).await;
    let front = otpgate::config::Config::from_file("config/baanx.toml".as_ref())
        .unwrap()
        .build()
        .unwrap();
    let timeouts = UpstreamTimeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_millis(500),
    };
    let base = common::serve_proxy(OtpProxy::with_timeouts(
        front,
        common::upstream_at(upstream),
        timeouts,
    ))
    .await;
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/auth/login"))
        .header("x-client-key", "demo-client-key")
        .json(&json!({"email": "ann@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "upstream_unavailable", "message": "the app behind the gate is unavailable"})
    );
}
