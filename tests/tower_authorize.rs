//! `OtpAuthorizer` in tower-http's `AsyncRequireAuthorizationLayer`, over real TCP: an
//! axum app on a free loopback port and a real HTTP client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use otpgate::http::{Front, HttpSettings};
use otpgate::otp::{Clock, ManualClock};
use otpgate::store::conformance::UnreachableStore;
use otpgate::token::{SigningAlgorithm, SigningKey, Subject, TokenSettings, Tokens};
use otpgate::tower::OtpAuthorizer;
use otpgate::{Gate, Identity, RevocationFallback};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower_http::auth::AsyncRequireAuthorizationLayer;

fn alice() -> Subject {
    Subject {
        id: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        phone: None,
        tenant: "default".into(),
    }
}

/// `/me` answers with the subject of the identity the authorizer put in place.
async fn start_guarded(front: Front, before: Option<Identity>) -> String {
    let app = Router::new()
        .route(
            "/me",
            get(|identity: Identity| async move { identity.subject().to_owned() }),
        )
        .layer(AsyncRequireAuthorizationLayer::new(OtpAuthorizer::new(
            front,
        )))
        // Something in front of the authorizer claims an identity of its own.
        .layer(tower::util::MapRequestLayer::new(
            move |mut request: axum::http::Request<axum::body::Body>| {
                if let Some(identity) = before.clone() {
                    request.extensions_mut().insert(identity);
                }
                request
            },
        ));
    format!("http://{}/me", common::serve(app).await)
}

/// A 401 as the gate writes it: its JSON error and the bearer challenge.
async fn assert_refused(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized", "{what}: {body}");
}

#[tokio::test]
async fn a_verified_token_passes_with_its_identity_and_nothing_else_does() {
    let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let clock = ManualClock::starting_now();
    let front = Front::new(
        Gate::builder()
            .signing_key(key.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
        HttpSettings::default(),
    );
    let now = clock.now();
    let good = front.gate().tokens().mint(&alice(), now).unwrap().token;
    let url = start_guarded(front.clone(), None).await;
    let client = reqwest::Client::new();

    // Bearer token, and the same token in the session cookie.
    let response = client.get(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "alice@example.com");
    let response = client
        .get(&url)
        .header("cookie", format!("theme=dark; otpgate_session={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "alice@example.com");

    assert_refused(client.get(&url).send().await.unwrap(), "no token").await;
    let other_key = Tokens::new(
        SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0,
        TokenSettings::default(),
    )
    .mint(&alice(), now)
    .unwrap()
    .token;
    let other_audience = Tokens::new(
        key,
        TokenSettings {
            audience: "other".into(),
            ..TokenSettings::default()
        },
    )
    .mint(&alice(), now)
    .unwrap()
    .token;
    let alg_none = {
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&json!({"alg": "none", "typ": "JWT"})).unwrap());
        format!("{header}.{}.", good.split('.').nth(1).unwrap())
    };
    for (what, forged) in [
        ("another key", other_key),
        ("another audience", other_audience),
        ("alg none", alg_none),
        ("garbage", "garbage".to_owned()),
    ] {
        let response = client.get(&url).bearer_auth(forged).send().await.unwrap();
        assert_refused(response, what).await;
    }
    // The gate would read one Authorization header, the app perhaps the other.
    for first in ["Basic YWxpY2U6c2VjcmV0", "Bearer garbage"] {
        let response = client
            .get(&url)
            .header("authorization", first)
            .header("authorization", format!("Bearer {good}"))
            .send()
            .await
            .unwrap();
        assert_refused(response, &format!("a token after {first}")).await;
    }

    // The good token dies at its expiry.
    clock.advance(Duration::from_secs(3600 + 6));
    let response = client.get(&url).bearer_auth(&good).send().await.unwrap();
    assert_refused(response, "expired").await;
}

/// An identity comes only from a token the gate verified: an `Identity` extension put on
/// the request before the authorizer is removed.
#[tokio::test]
async fn an_identity_extension_from_before_the_authorizer_is_not_believed() {
    let front = Front::with_defaults(Gate::builder().build().unwrap());
    let token = front
        .gate()
        .tokens()
        .mint(&alice(), otpgate::otp::SystemClock.now())
        .unwrap()
        .token;
    let forged = front.gate().authenticate(&token).await.unwrap();
    let url = start_guarded(front, Some(forged)).await;
    let client = reqwest::Client::new();
    assert_refused(client.get(&url).send().await.unwrap(), "forged extension").await;
    let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// With `RevocationFallback::Deny`, a token whose revocation cannot be checked waits for
/// the store: the 503 the gate gives on a protected path, not a 401 nor a pass.
#[tokio::test]
async fn a_store_outage_under_deny_is_answered_503() {
    let front = Front::with_defaults(
        Gate::builder()
            .store(Arc::new(UnreachableStore))
            .revocation_fallback(RevocationFallback::Deny)
            .build()
            .unwrap(),
    );
    let token = front
        .gate()
        .tokens()
        .mint(&alice(), otpgate::otp::SystemClock.now())
        .unwrap()
        .token;
    let url = start_guarded(front, None).await;
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}
