//! The proof-of-work challenge through the dialects, in both forms of the gate: a tenant
//! that requires one hands out challenges at `{prefix}/challenge`, refuses sends without
//! a solved one in `X-Otpgate-Challenge` (400 `challenge_required`) or with a wrong,
//! forged or spent one (400 `challenge_invalid`), and sends nothing for them.

mod common;

use std::path::Path;

use common::{Form, both_forms, capture, email_and_sms, start_form};
use otpgate::config::Config;
use otpgate::delivery::Message;
use otpgate::gate::{Challenge, solve_challenge};
use otpgate::http::Front;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

both_forms!(generic, aerocall, nexudus);

const HEADER: &str = "X-Otpgate-Challenge";

/// Three dialects mounted; tenant `7` requires a challenge, `8` does not.
const CONFIG: &str = r#"
[server]
default_tenant = "7"

[[endpoints]]
dialect = "generic"
prefix = "/auth"

[[endpoints]]
dialect = "aerocall"
prefix = "/api/v1/public/projects"

[[endpoints]]
dialect = "nexudus"
prefix = "/api/sys/users"

[[tenants]]
id = "7"
challenge = "always"
challenge_max_number = 5000

[[tenants]]
id = "8"
"#;

fn gate() -> (Front, mpsc::UnboundedReceiver<Message>) {
    let config = Config::parse(CONFIG, "challenge.toml", Path::new(".")).expect("the config reads");
    let (builder, http) = config.into_parts();
    let (sender, inbox) = capture();
    let gate = builder
        .senders(email_and_sms(sender))
        .build()
        .expect("the gate builds");
    (Front::new(gate, http), inbox)
}

fn assert_nothing_sent(inbox: &mut mpsc::UnboundedReceiver<Message>) {
    if let Ok(message) = inbox.try_recv() {
        panic!("a message was sent to {}", message.to.as_str());
    }
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

/// A challenge from the gate's generic endpoint, solved as a client would.
async fn solved(client: &reqwest::Client, base: &str, tenant: &str) -> String {
    let response = client
        .get(format!("{base}/auth/challenge?tenant={tenant}"))
        .send()
        .await
        .expect("the gate answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    let challenge: Challenge = response.json().await.expect("a challenge");
    assert_eq!(challenge.algorithm, "SHA-256");
    assert_eq!(challenge.maxnumber, 5000);
    solve_challenge(&challenge).expect("solvable")
}

async fn generic(form: Form) {
    let (front, mut inbox) = gate();
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    let send = async |challenge: Option<&str>| {
        let mut request = client
            .post(format!("{base}/auth/otp/send"))
            .json(&json!({"email": "alice@example.com"}));
        if let Some(challenge) = challenge {
            request = request.header(HEADER, challenge);
        }
        answer(request.send().await.expect("the gate answers")).await
    };
    let (status, value) = send(None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value["error"], "challenge_required");
    let (status, value) = send(Some("bm90IGEgY2hhbGxlbmdl")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value["error"], "challenge_invalid");
    assert_nothing_sent(&mut inbox);

    let payload = solved(&client, &base, "7").await;
    let (status, value) = send(Some(&payload)).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(
        common::next_message(&mut inbox).await.to.as_str(),
        "alice@example.com"
    );
    // Spent.
    let (status, value) = send(Some(&payload)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value["error"], "challenge_invalid");

    // A tenant without challenges sends without one.
    let (status, value) = answer(
        client
            .post(format!("{base}/auth/otp/send"))
            .json(&json!({"email": "bob@example.com", "tenant": "8"}))
            .send()
            .await
            .expect("the gate answers"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    // An unknown tenant gets no challenge.
    let response = client
        .get(format!("{base}/auth/challenge?tenant=nobody"))
        .send()
        .await
        .expect("the gate answers");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

async fn aerocall(form: Form) {
    let (front, mut inbox) = gate();
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/public/projects/7/auth/otp/send");
    let body = json!({"email": "alice@example.com"});
    let (status, value) = answer(
        client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("the gate answers"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(
        value,
        json!({"error": "challenge_required", "message": "Proof-of-work challenge required"})
    );
    assert_nothing_sent(&mut inbox);
    let payload = solved(&client, &base, "7").await;
    let (status, value) = answer(
        client
            .post(&url)
            .header(HEADER, &payload)
            .json(&body)
            .send()
            .await
            .expect("the gate answers"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    common::next_message(&mut inbox).await;
}

async fn nexudus(form: Form) {
    let (front, mut inbox) = gate();
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/api/sys/users/sendOtp?email=alice%40example.com&businessId=7");
    let (status, value) = answer(
        client
            .get(&url)
            .header(HEADER, "e30=")
            .send()
            .await
            .expect("the gate answers"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value["Errors"][0]["Code"], "challenge_invalid", "{value}");
    assert_nothing_sent(&mut inbox);
    let payload = solved(&client, &base, "7").await;
    let (status, value) = answer(
        client
            .get(&url)
            .header(HEADER, &payload)
            .send()
            .await
            .expect("the gate answers"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    common::next_message(&mut inbox).await;
}
