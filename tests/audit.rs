//! Audit events from `otpgate run` as a process, logging JSON: one line on the target
//! `otpgate::audit` for each sign-in decision, with the tenant, the masked destination,
//! the client and the dialect, and never a code or a token.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{
    Inbox, WebhookReceiver, free_port, gate_command, post_json, send_code, serve, verify_code,
    wait_for_port, webhook_delivery_toml, with_listen,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Signs in, refreshes, replays a refresh token and logs out.
const ALICE: &str = "alice@example.com";
/// Guesses wrong until locked out.
const BOB: &str = "bob@example.com";

/// The gate as a process, its standard output collected line by line. Killed when
/// dropped.
struct LoggingGate {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl LoggingGate {
    async fn start(config: &str) -> LoggingGate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, with_listen(config, port)).unwrap();
        let mut child = gate_command(&path, "info")
            .env("OTPGATE_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push(line);
            }
        });
        wait_for_port(port).await;
        LoggingGate {
            child,
            base: format!("http://127.0.0.1:{port}"),
            lines,
            _dir: dir,
        }
    }

    /// Every line written so far.
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The audit events written so far, as JSON.
    fn audit_events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            // Every line should be JSON; anything else is not an audit event either.
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["target"] == "otpgate::audit")
            .collect()
    }

    /// The audit events named `name`, waiting up to 5 s for `count` of them.
    async fn events_named(&self, name: &str, count: usize) -> Vec<Value> {
        for _ in 0..500 {
            let events = named(&self.audit_events(), name);
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "fewer than {count} `{name}` audit events after 5 s; the output was:\n{}",
            self.lines().join("\n")
        );
    }
}

impl Drop for LoggingGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn named(events: &[Value], name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|event| event["event"] == name)
        .cloned()
        .collect()
}

/// A code of the same length that is not `code`.
fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| match c.to_digit(10) {
            Some(digit) => char::from_digit((digit + 1) % 10, 10).unwrap_or('0'),
            None => c,
        })
        .collect()
}

/// The answer's body, and that its status is `expected`.
async fn json_answer(response: reqwest::Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, expected, "{body}");
    body
}

fn token(body: &Value, name: &str) -> String {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .to_owned()
}

/// The fields every event of a request from this test carries: its tenant, client and
/// dialect, and, where it names one, `address` masked.
fn assert_origin(event: &Value, address: &str, masked: &str) {
    assert_eq!(event["tenant"], "default", "{event}");
    assert_eq!(event["client"], "127.0.0.1", "{event}");
    assert_eq!(event["dialect"], "generic", "{event}");
    assert_eq!(event["destination"], masked, "{event}");
    assert_ne!(event["destination"], address, "{event}");
    if let Some(subject) = event.get("subject") {
        // Accounts here are auto-created: their id is the address, which stays masked.
        assert_eq!(subject, masked, "{event}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sign_in_decision_writes_one_audit_line() {
    let hook = WebhookReceiver::start().await;
    let upstream = serve(Router::new().route("/", get(|| async { "app" }))).await;
    let gate = LoggingGate::start(&format!(
        "[server]\nupstream = \"http://{upstream}\"\nthreads = 1\n\n{}",
        webhook_delivery_toml(&hook.url)
    ))
    .await;
    let client = reqwest::Client::new();
    let base = gate.base.as_str();

    // Alice: a code, a wrong guess, the right code.
    json_answer(send_code(&client, base, ALICE).await, StatusCode::OK).await;
    let alice_code = hook.next_code().await;
    let refused = verify_code(&client, base, ALICE, &wrong(&alice_code)).await;
    json_answer(refused, StatusCode::UNAUTHORIZED).await;
    let verified = verify_code(&client, base, ALICE, &alice_code).await;
    let session = json_answer(verified, StatusCode::OK).await;
    let first_refresh = token(&session, "refresh_token");

    // A refresh, then the spent refresh token again: a copy in someone else's hands.
    let refresh = |refresh_token: &str| {
        post_json(
            &client,
            format!("{base}/auth/token/refresh"),
            json!({ "refresh_token": refresh_token }),
        )
    };
    let rotated = json_answer(refresh(&first_refresh).await, StatusCode::OK).await;
    json_answer(refresh(&first_refresh).await, StatusCode::UNAUTHORIZED).await;
    let (access, second_refresh) = (
        token(&rotated, "access_token"),
        token(&rotated, "refresh_token"),
    );

    // Logout of both tokens.
    let logout = client
        .post(format!("{base}/auth/logout"))
        .bearer_auth(&access)
        .json(&json!({ "refresh_token": second_refresh }))
        .send()
        .await
        .unwrap();
    json_answer(logout, StatusCode::OK).await;

    // Bob: a code, then wrong guesses until the gate makes him wait.
    json_answer(send_code(&client, base, BOB).await, StatusCode::OK).await;
    let bob_code = hook.next_code().await;
    let mut bob_failures = 0;
    loop {
        let answer = verify_code(&client, base, BOB, &wrong(&bob_code)).await;
        match answer.status() {
            StatusCode::UNAUTHORIZED => bob_failures += 1,
            StatusCode::TOO_MANY_REQUESTS => break,
            other => panic!("a wrong guess answered {other}"),
        }
        assert!(
            bob_failures <= 20,
            "no lockout after {bob_failures} wrong guesses"
        );
    }

    let sent = gate.events_named("code_sent", 2).await;
    let verified = gate.events_named("code_verified", 1).await;
    let failed = gate.events_named("code_failed", 1 + bob_failures).await;
    let locked = gate.events_named("locked_out", 1).await;
    let refreshed = gate.events_named("session_refreshed", 1).await;
    let reused = gate.events_named("refresh_reuse_detected", 1).await;
    let logged_out = gate.events_named("logged_out", 2).await;
    let events = gate.audit_events();
    assert_eq!(events.len(), 9 + bob_failures, "{events:#?}");

    let for_address = |events: &[Value], masked: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|event| event["destination"] == masked)
            .cloned()
            .collect()
    };
    let (alice, bob) = ("a***@example.com", "b***@example.com");
    assert_eq!(for_address(&sent, alice).len(), 1, "{sent:#?}");
    assert_eq!(for_address(&sent, bob).len(), 1, "{sent:#?}");
    assert_eq!(for_address(&failed, alice).len(), 1, "{failed:#?}");
    assert_eq!(for_address(&failed, bob).len(), bob_failures, "{failed:#?}");
    for event in &sent {
        // Nothing says whether the account exists.
        assert!(event.get("subject").is_none(), "{event}");
    }
    for event in &failed {
        assert_eq!(event["reason"], "rejected", "{event}");
    }
    assert_eq!(locked[0]["action"], "verify");
    assert!(
        locked[0]["retry_after_secs"].as_u64() >= Some(1),
        "{}",
        locked[0]
    );
    assert_eq!(locked[0]["level"], "WARN");
    assert_eq!(reused[0]["level"], "WARN");
    let mut revoked: Vec<&str> = logged_out
        .iter()
        .filter_map(|event| event["revoked"].as_str())
        .collect();
    revoked.sort_unstable();
    assert_eq!(revoked, ["access", "refresh"]);
    for event in verified
        .iter()
        .chain(&refreshed)
        .chain(&reused)
        .chain(&logged_out)
    {
        assert!(event.get("subject").is_some(), "{event}");
    }

    for event in &events {
        let (address, masked) = match event["destination"].as_str() {
            Some(masked) if masked == bob => (BOB, bob),
            _ => (ALICE, alice),
        };
        assert_origin(event, address, masked);
        // A timestamp's digits could spell a code by chance; every other field may not.
        let mut fields = event.clone();
        fields.as_object_mut().unwrap().remove("timestamp");
        let text = fields.to_string();
        for secret in [alice_code.as_str(), bob_code.as_str(), ALICE, BOB] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    let tokens = [
        token(&session, "access_token"),
        first_refresh,
        access,
        second_refresh,
    ];
    for line in gate.lines() {
        for secret in &tokens {
            assert!(!line.contains(secret.as_str()), "a token in {line}");
        }
    }
}
