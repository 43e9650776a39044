//! Conformance with shared/seeds/nexudus-send-otp.md, served from config/nexudus.toml,
//! through both forms of the gate.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Form, Inbox, WebhookReceiver, both_forms, gate_from_file, get_with_token, start_form,
};
use otpgate::delivery::{Senders, WebhookSender};
use otpgate::http::Front;
use otpgate::otp::ManualClock;
use reqwest::StatusCode;
use serde_json::{Value, json};

both_forms!(conformance);

/// The Nexudus gate, its email delivered to `hook`; it sends no SMS.
fn gate(hook: &WebhookReceiver, clock: &ManualClock) -> Front {
    let email = Arc::new(WebhookSender::new(hook.url.parse().unwrap()));
    let senders = Senders {
        email: Some(email),
        ..Senders::default()
    };
    gate_from_file("config/nexudus.toml", senders, clock)
}

const OK_ENVELOPE: &str =
    r#"{"Errors":null,"Message":null,"Status":200,"Value":null,"WasSuccessful":true}"#;

async fn conformance(form: Form) {
    let hook = WebhookReceiver::start().await;
    let clock = ManualClock::starting_now();
    let (base, calls) = start_form(form, gate(&hook, &clock)).await;
    let client = reqwest::Client::new();
    let users = format!("{base}/api/sys/users");
    let get = |query: &str| client.get(format!("{users}/sendOtp?{query}")).send();
    let post = |path: &str, query: String| client.post(format!("{users}/{path}?{query}")).send();
    let verify_jane = async |code: &str| {
        post(
            "verifyOtp",
            format!("email=jane.doe%40example.com&businessId=7&code={code}"),
        )
        .await
        .unwrap()
    };
    let status_of = async |path: &str, query: String| post(path, query).await.unwrap().status();
    let me = async |token: &str| get_with_token(&client, format!("{base}/api/me"), token).await;

    // A member and a stranger get the same bytes; only the member gets a code.
    let member = get("email=jane.doe%40example.com&businessId=7")
        .await
        .unwrap();
    assert_eq!(member.status(), StatusCode::OK);
    let member = member.text().await.unwrap();
    let stranger = get("email=nobody%40example.com&businessId=7")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(member, OK_ENVELOPE);
    assert_eq!(stranger, member);
    let delivered = hook.next().await;
    assert_eq!(delivered["to"], "jane.doe@example.com");
    assert_eq!(delivered["tenant"], "7");
    // businessId brands the message with the location's name.
    assert!(
        delivered["message"]
            .as_str()
            .unwrap()
            .starts_with("Your Downtown Hub sign-in code is ")
    );
    assert!(
        hook.nothing_within(Duration::from_millis(200)).await,
        "no code for the stranger"
    );
    // 429 in the envelope, with Retry-After: the cooldown.
    let limited = get("email=jane.doe%40example.com&businessId=7")
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(
        (body["WasSuccessful"].clone(), body["Status"].clone()),
        (json!(false), json!(429))
    );

    // businessId selects the tenant: Jane is no member of location 8.
    clock.advance(Duration::from_secs(31));
    get("email=jane.doe%40example.com&businessId=8")
        .await
        .unwrap();
    assert!(hook.nothing_within(Duration::from_millis(200)).await);

    // 400: missing or malformed email or businessId, in the envelope.
    for query in [
        "businessId=7",
        "email=jane.doe%40example.com",
        "email=not-an-email&businessId=7",
        "email=jane.doe%40example.com&businessId=seven",
        "email=jane.doe%40example.com&businessId=99",
        "email=a%40example.com&email=b%40example.com&businessId=7",
    ] {
        let response = get(query).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["WasSuccessful"], false, "{query}");
        assert_eq!(body["Status"], 400, "{query}");
        assert_eq!(body["Value"], Value::Null);
        assert!(
            body["Message"].as_str().is_some_and(|m| !m.is_empty()),
            "{query}"
        );
        assert!(body["Errors"][0]["Code"].as_str().is_some(), "{query}");
    }

    // Verify: a one-time JWT in Value.
    let code = delivered["code"].as_str().unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = verify_jane(wrong).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let verified: Value = verify_jane(code).await.json().await.unwrap();
    assert_eq!(verified["WasSuccessful"], true);
    let one_time = verified["Value"].as_str().unwrap().to_owned();
    // It is no access token.
    assert_eq!(me(&one_time).await.status(), StatusCode::UNAUTHORIZED);

    // Exchange, once.
    let exchanged = post("exchange", format!("token={one_time}&validForInMinutes=30"))
        .await
        .unwrap();
    assert_eq!(exchanged.status(), StatusCode::OK);
    let exchanged: Value = exchanged.json().await.unwrap();
    assert_eq!(exchanged["token_type"], "bearer");
    assert_eq!(exchanged["expires_in"], 1800);
    let token = exchanged["token"].as_str().unwrap().to_owned();
    let refresh = exchanged["refresh_token"].as_str().unwrap().to_owned();
    let again = post("exchange", format!("token={one_time}")).await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        again.json::<Value>().await.unwrap()["Errors"][0]["Code"],
        "invalid_token"
    );

    // The session reaches the app as the member's id.
    let seen: Value = me(&token).await.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-subject"], "1001");
    assert_eq!(seen["headers"]["x-auth-tenant"], "7");
    assert_eq!(calls.count(), 1);

    // The refresh token works once.
    let renewed = post("refreshToken", format!("refresh_token={refresh}"))
        .await
        .unwrap();
    assert_eq!(renewed.status(), StatusCode::OK);
    assert_eq!(
        renewed.json::<Value>().await.unwrap()["expires_in"],
        8 * 3600
    );
    assert_eq!(
        status_of("refreshToken", format!("refresh_token={refresh}")).await,
        StatusCode::UNAUTHORIZED
    );

    // Forged, malformed and expired one-time tokens are refused.
    assert_eq!(
        status_of("exchange", "token=forged.jwt.value".into()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of("exchange", String::new()).await,
        StatusCode::BAD_REQUEST
    );
    clock.advance(Duration::from_secs(31));
    get("email=jane.doe%40example.com&businessId=7")
        .await
        .unwrap();
    let code = hook.next_code().await;
    let verified: Value = verify_jane(&code).await.json().await.unwrap();
    let late = verified["Value"].as_str().unwrap().to_owned();
    let bad_minutes = post("exchange", format!("token={late}&validForInMinutes=abc"))
        .await
        .unwrap();
    assert_eq!(bad_minutes.status(), StatusCode::BAD_REQUEST);
    clock.advance(Duration::from_secs(6 * 60));
    assert_eq!(
        status_of("exchange", format!("token={late}")).await,
        StatusCode::UNAUTHORIZED
    );

    // sendOtp is a GET.
    let wrong_method = client
        .post(format!(
            "{users}/sendOtp?email=jane.doe%40example.com&businessId=7"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
}
