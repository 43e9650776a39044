//! One identity per mailbox, in both forms of the gate: addresses that smuggle another
//! address, markup or a host into tokens and headers are refused with `400
//! invalid_email`, and every spelling of one mailbox shares one code and one budget.

mod common;

use common::{
    Form, both_forms, capture, email_and_sms, get_with_token, next_message, post_json,
    protecting_api, start_form, verify_code,
};
use otpgate::Gate;
use otpgate::delivery::Message;
use otpgate::http::Front;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

both_forms!(
    smuggled_addresses_are_refused,
    every_spelling_of_a_mailbox_is_one_identity,
);

fn gate() -> (Front, UnboundedReceiver<Message>) {
    let (sender, messages) = capture();
    let gate = Front::new(
        Gate::builder()
            .senders(email_and_sms(sender))
            .build()
            .unwrap(),
        protecting_api(),
    );
    (gate, messages)
}

/// Asks for a code for `email`: the status and the JSON answer, if any.
async fn send(client: &reqwest::Client, base: &str, email: &str) -> (StatusCode, Value) {
    let body = json!({ "email": email });
    let response = post_json(client, format!("{base}/auth/otp/send"), body).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn smuggled_addresses_are_refused(form: Form) {
    let (gate, mut messages) = gate();
    let (base, calls) = start_form(form, gate).await;
    let client = reqwest::Client::new();
    for email in [
        "\"victim@example.com\"@attacker.test",
        "\"admin@example.com,\"@attacker.test",
        "\"<img src=x>\"@attacker.test",
        "\"vquote\"@example.com",
        "victim(comment)@example.com",
        "(comment)victim@example.com",
        "victim@example.com(comment)",
        "victim@[127.0.0.1]",
        "victim@[IPv6:::1]",
        "victim@[IPv6:2001:db8::1]",
        "victim@127.0.0.1",
        "victim@example.com\r\nBcc: attacker@attacker.test",
        "vic tim@example.com",
        "victim\u{0}@example.com",
        "vic\u{200B}tim@example.com",
        "victim\u{202E}@example.com",
        "victim@xn--zz-.com",
        "victim@exa_mple.com",
        "victim@example.com.",
    ] {
        let (status, body) = send(&client, &base, email).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?} {email:?}");
        assert_eq!(body["error"], "invalid_email", "{form:?} {email:?}");
    }
    // Nothing was sent, and nothing reached the app.
    assert!(messages.try_recv().is_err());
    assert_eq!(calls.count(), 0);

    // The plain spelling of the quoted one is an ordinary address.
    let (status, _) = send(&client, &base, "vquote@example.com").await;
    assert_eq!(status, StatusCode::OK, "{form:?}");
    assert_eq!(
        next_message(&mut messages).await.to.as_str(),
        "vquote@example.com"
    );
}

async fn every_spelling_of_a_mailbox_is_one_identity(form: Form) {
    let (gate, mut messages) = gate();
    let (base, _calls) = start_form(form, gate).await;
    let client = reqwest::Client::new();

    let (status, _) = send(&client, &base, "vidn@exämple.com").await;
    assert_eq!(status, StatusCode::OK, "{form:?}");
    let message = next_message(&mut messages).await;
    assert_eq!(message.to.as_str(), "vidn@xn--exmple-cua.com");
    let code = message.code.expose().to_owned();

    // Another spelling of the same mailbox is the same identity: it waits out the same
    // resend cooldown instead of getting a code and a budget of its own.
    for spelling in [
        "vidn@xn--exmple-cua.com",
        "VIDN@EXÄMPLE.COM",
        "Vidn@XN--EXMPLE-CUA.COM",
        "vidn@ｅｘäｍｐｌｅ.com",
    ] {
        let (status, body) = send(&client, &base, spelling).await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "{form:?} {spelling}: {body}"
        );
        assert_eq!(body["error"], "rate_limited", "{form:?} {spelling}");
    }
    assert!(
        messages.try_recv().is_err(),
        "{form:?}: a second code went out"
    );

    // The code sent to one spelling verifies with another.
    let verified = verify_code(&client, &base, "VIDN@xn--exmple-cua.com", &code).await;
    assert_eq!(verified.status(), StatusCode::OK, "{form:?}");
    let token = verified.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The app receives the one spelling, in A-labels.
    let seen: Value = get_with_token(&client, format!("{base}/api/me"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen["headers"]["x-auth-subject"], "vidn@xn--exmple-cua.com",
        "{form:?}"
    );
    assert_eq!(
        seen["headers"]["x-auth-email"], "vidn@xn--exmple-cua.com",
        "{form:?}"
    );
}
