//! Conformance with shared/seeds/aerocall-otp-send.md, served from config/aerocall.toml,
//! through both forms of the gate.

mod common;

use std::time::Duration;

use common::{
    Form, Inbox, WebhookReceiver, both_forms, gate_from_file, start_form, webhook_senders,
};
use otpgate::http::Front;
use otpgate::otp::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};

const BASE: &str = "/api/v1/public/projects";

both_forms!(conformance);

fn gate(hook: &WebhookReceiver, clock: &ManualClock) -> Front {
    gate_from_file("config/aerocall.toml", webhook_senders(hook), clock)
}

async fn call(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn conformance(form: Form) {
    let hook = WebhookReceiver::start().await;
    let clock = ManualClock::starting_now();
    let (base, _) = start_form(form, gate(&hook, &clock)).await;
    let client = reqwest::Client::new();
    let send = |project: &str| format!("{base}{BASE}/{project}/auth/otp/send");
    let verify = |project: &str| format!("{base}{BASE}/{project}/auth/otp/verify");

    // Email OTP, auto-create on: a new user, so accountExists is false.
    let (status, body) = call(&client, send("demo"), json!({"email": "new@example.com"})).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"message": "OTP sent successfully", "accountExists": false})
        )
    );
    let code = hook.next_code().await;

    // Verify: a JWT and the user.
    let (status, body) = call(
        &client,
        verify("demo"),
        json!({"email": "new@example.com", "code": code}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["user"],
        json!({"id": "new@example.com", "email": "new@example.com"})
    );
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);

    // The account now exists.
    clock.advance(Duration::from_secs(31));
    let (_, body) = call(&client, send("demo"), json!({"email": "new@example.com"})).await;
    assert_eq!(body["accountExists"], true);
    hook.next().await;

    // Phone OTP in E.164.
    let (status, body) = call(&client, send("demo"), json!({"phone": "+919876543210"})).await;
    assert_eq!(
        (status, body["accountExists"].clone()),
        (StatusCode::OK, json!(false))
    );
    let sms = hook.next().await;
    assert_eq!(
        (sms["channel"].as_str(), sms["to"].as_str()),
        (Some("sms"), Some("+919876543210"))
    );
    let (status, body) = call(
        &client,
        verify("demo"),
        json!({"phone": "+919876543210", "code": sms["code"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["user"],
        json!({"id": "+919876543210", "phone": "+919876543210"})
    );

    // 400s with the seed's texts.
    let cases = [
        (
            "mail-only",
            json!({"phone": "+919876543210"}),
            "channel_disabled",
            "Phone OTP is not enabled for this project",
        ),
        (
            "phone-only",
            json!({"email": "a@example.com"}),
            "channel_disabled",
            "Email OTP is not enabled for this project",
        ),
        (
            "phone-only",
            json!({"phone": "+919876543211"}),
            "account_not_found",
            "No account found. Please sign up first.",
        ),
        (
            "demo",
            json!({}),
            "invalid_request",
            "Invalid request: missing or invalid email or phone",
        ),
        (
            "demo",
            json!({"email": "not-an-email"}),
            "invalid_email",
            "Invalid request: missing or invalid email or phone",
        ),
        (
            "demo",
            json!({"phone": "9876543210"}),
            "invalid_phone",
            "Invalid request: missing or invalid email or phone",
        ),
    ];
    for (project, body, code, message) in cases {
        let (status, answer) = call(&client, send(project), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{project} {body}");
        assert_eq!(
            answer,
            json!({"error": code, "message": message}),
            "{project} {body}"
        );
    }
    let (status, answer) = call(
        &client,
        send("no-such-project"),
        json!({"email": "a@example.com"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("project_not_found"))
    );

    // 429 per identifier (the cooldown), with Retry-After.
    call(&client, send("demo"), json!({"email": "rate@example.com"})).await;
    hook.next().await;
    let limited = client
        .post(send("demo"))
        .json(&json!({"email": "rate@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        limited.json::<Value>().await.unwrap()["message"],
        "Too many OTP requests"
    );

    // 401 for a wrong code and for an expired one.
    call(&client, send("demo"), json!({"email": "late@example.com"})).await;
    let code = hook.next_code().await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, body) = call(
        &client,
        verify("demo"),
        json!({"email": "late@example.com", "code": wrong}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_code"))
    );
    clock.advance(Duration::from_secs(11 * 60));
    let (status, _) = call(
        &client,
        verify("demo"),
        json!({"email": "late@example.com", "code": code}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_answers_429() {
    let hook = WebhookReceiver::start().await;
    let clock = ManualClock::starting_now();
    let (base, _) = start_form(Form::Pingora, gate(&hook, &clock)).await;
    let client = reqwest::Client::new();
    // sends_per_ip = "30/5m": 30 distinct identifiers pass, the 31st does not.
    for i in 0..30 {
        let (status, _) = call(
            &client,
            format!("{base}{BASE}/demo/auth/otp/send"),
            json!({"email": format!("u{i}@example.com")}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "send {i}");
    }
    let (status, body) = call(
        &client,
        format!("{base}{BASE}/demo/auth/otp/send"),
        json!({"email": "u31@example.com"}),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("Too many OTP requests"))
    );
}
