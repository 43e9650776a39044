//! The tower layer over real TCP: an axum app on a free port, a real HTTP client, a
//! webhook receiver that the codes are delivered to.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Inbox, WebhookReceiver, assert_refused_without_token, claims_from_jwks, email_identity_headers,
    email_subject, get_with_token, json_of, post_json, protecting_api, send_code, start_app,
    verify_code, webhook_senders,
};
use otpgate::directory::StaticDirectory;
use otpgate::http::Front;
use otpgate::http::HttpSettings;
use otpgate::identifier::Identifier;
use otpgate::{Gate, Tenant};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A gate with `/api/` protected that delivers its codes to `hook`.
fn delivering_to(hook: &WebhookReceiver) -> Front {
    Front::new(
        Gate::builder()
            .senders(webhook_senders(hook))
            .build()
            .unwrap(),
        protecting_api(),
    )
}

/// A gate with `/api/` protected and no delivery configured.
fn undelivering() -> Front {
    Front::new(Gate::builder().build().unwrap(), protecting_api())
}

#[tokio::test]
async fn email_sign_in_reaches_the_app_with_the_identity_and_never_a_forged_header() {
    let hook = WebhookReceiver::start().await;
    let (base, calls) = start_app(delivering_to(&hook)).await;
    let client = reqwest::Client::new();

    let sent = send_code(&client, &base, "Alice@Example.com").await;
    assert_eq!(sent.status(), StatusCode::OK);
    assert_eq!(
        sent.json::<Value>().await.unwrap(),
        json!({"message": "OTP sent successfully"})
    );

    let payload = hook.next().await;
    assert_eq!(payload["channel"], "email");
    assert_eq!(payload["to"], "alice@example.com");
    assert_eq!(payload["tenant"], "default");
    assert_eq!(payload["expires_in"], 300);
    let code = payload["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    assert!(payload["message"].as_str().unwrap().contains(&code));

    let verified = verify_code(&client, &base, "alice@example.com", &code).await;
    assert_eq!(verified.status(), StatusCode::OK);
    let cookie = verified.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("otpgate_session=ey")
            && cookie.contains("HttpOnly")
            && cookie.contains("Secure")
    );
    let body: Value = verified.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap().to_owned();

    // Without a token the protected route is refused and the app never called.
    assert_refused_without_token(&client, &base).await;
    assert_eq!(calls.count(), 0);

    // With it, the app sees the identity, and the client's forgeries are gone.
    let me = json_of(
        client
            .get(format!("{base}/api/me"))
            .bearer_auth(&token)
            .header("X-Auth-Subject", "admin")
            .header("x-auth-email", "admin@example.com")
            .header("X-Auth-Role", "superuser")
            .header("X-Otpgate-Jwt", "forged"),
    )
    .await;
    assert_eq!(me["subject"], "alice@example.com");
    assert_eq!(
        me["headers"],
        email_identity_headers("alice@example.com", &token)
    );

    // The cookie works as well as the bearer header.
    let session = cookie.split(';').next().unwrap().to_owned();
    let by_cookie = client
        .get(format!("{base}/api/me"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), StatusCode::OK);

    // On a public path, forged headers are stripped even without any token.
    let public = json_of(
        client
            .get(format!("{base}/public"))
            .header("X-Auth-Subject", "admin")
            .header("X-Otpgate-Jwt", "forged"),
    )
    .await;
    assert_eq!(public, json!({"subject": null, "headers": {}}));

    // The code was single use.
    let again = verify_code(&client, &base, "alice@example.com", &code).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sms_sign_in_and_the_app_can_verify_the_token_from_the_jwks() {
    let hook = WebhookReceiver::start().await;
    let (base, _) = start_app(delivering_to(&hook)).await;
    let client = reqwest::Client::new();

    let sent = send_code(&client, &base, "+14155552671").await;
    assert_eq!(sent.status(), StatusCode::OK);
    let payload = hook.next().await;
    assert_eq!(payload["channel"], "sms");
    assert_eq!(payload["to"], "+14155552671");
    let code = payload["code"].as_str().unwrap();
    let verified: Value = verify_code(&client, &base, "+14155552671", code)
        .await
        .json()
        .await
        .unwrap();
    let token = verified["access_token"].as_str().unwrap();

    // The app's side: fetch the JWKS and verify the token with nothing but it.
    let claims = claims_from_jwks(&client, &base, token).await;
    assert_eq!(claims["sub"], "+14155552671");
    assert_eq!(claims["phone"], "+14155552671");
    assert_eq!(claims["amr"], json!(["otp"]));
    assert!(claims.get("email").is_none());
    for claim in ["iat", "nbf", "exp", "jti", "auth_time", "tenant"] {
        assert!(claims.get(claim).is_some(), "{claim}");
    }
}

/// The limit on a body holds when no Content-Length announces it. (Bad bodies of every
/// other kind are in both_forms.rs, for both forms.)
#[tokio::test]
async fn a_streamed_body_is_cut_off_at_the_limit() {
    let (base, _) = start_app(undelivering()).await;
    let chunks =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let streamed = reqwest::Client::new()
        .post(format!("{base}/auth/otp/send"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn resend_cooldown_answers_429_with_retry_after() {
    let (base, _) = start_app(undelivering()).await;
    let client = reqwest::Client::new();
    assert_eq!(
        send_code(&client, &base, "bob@example.com").await.status(),
        StatusCode::OK
    );
    let limited = send_code(&client, &base, "bob@example.com").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(
        limited.json::<Value>().await.unwrap()["error"],
        "rate_limited"
    );
}

#[tokio::test]
async fn per_ip_send_limit_holds_across_identifiers() {
    let gate = Front::new(
        Gate::builder()
            .ip_limits(otpgate::IpLimits {
                sends: "3/5m".parse().unwrap(),
                ..otpgate::IpLimits::default()
            })
            .build()
            .unwrap(),
        protecting_api(),
    );
    let (base, _) = start_app(gate).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = send_code(&client, &base, &format!("u{i}@example.com")).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = send_code(&client, &base, "u9@example.com").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn known_and_unknown_identities_get_byte_identical_send_answers() {
    let hook = WebhookReceiver::start().await;
    let known = Identifier::email("known@example.com").unwrap();
    let gate = Front::new(
        Gate::builder()
            .senders(webhook_senders(&hook))
            .directory(Arc::new(
                StaticDirectory::new().with_account("default", known, "user-1"),
            ))
            .tenant(Tenant {
                auto_create: false,
                ..Tenant::new("default")
            })
            .build()
            .unwrap(),
        protecting_api(),
    );
    let (base, _) = start_app(gate).await;
    let client = reqwest::Client::new();

    let answer = async |email: &str| {
        let r = send_code(&client, &base, email).await;
        let status = r.status();
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        (status, headers, r.bytes().await.unwrap())
    };
    let for_known = answer("known@example.com").await;
    let for_unknown = answer("stranger@example.com").await;
    assert_eq!(for_known.0, StatusCode::OK);
    assert_eq!(for_known, for_unknown);

    // Only the known account got a code; the unknown one's code is never delivered...
    let delivered = hook.next().await;
    assert_eq!(delivered["to"], "known@example.com");
    assert!(hook.nothing_within(Duration::from_millis(300)).await);
    // ...and its limits behave exactly the same.
    assert_eq!(
        answer("known@example.com").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        answer("stranger@example.com").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // The known account signs in with the directory's subject.
    let code = delivered["code"].as_str().unwrap();
    let verified: Value = verify_code(&client, &base, "known@example.com", code)
        .await
        .json()
        .await
        .unwrap();
    let token = verified["access_token"].as_str().unwrap();
    let me: Value = get_with_token(&client, format!("{base}/api/me"), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "user-1");
}

#[tokio::test]
async fn wrong_expired_used_and_unknown_codes_get_the_same_answer() {
    let hook = WebhookReceiver::start().await;
    let clock = otpgate::otp::ManualClock::starting_now();
    let gate = Front::new(
        Gate::builder()
            .senders(webhook_senders(&hook))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
        protecting_api(),
    );
    let (base, _) = start_app(gate).await;
    let client = reqwest::Client::new();
    let verify = async |email: &str, code: &str| {
        let r = verify_code(&client, &base, email, code).await;
        (r.status(), r.bytes().await.unwrap())
    };

    send_code(&client, &base, "carol@example.com").await;
    let code = hook.next_code().await;
    let wrong_code = if code == "000000" { "111111" } else { "000000" };

    let wrong = verify("carol@example.com", wrong_code).await;
    let unknown = verify("nobody@example.com", &code).await;
    assert!(verify("carol@example.com", &code).await.0.is_success());
    let used = verify("carol@example.com", &code).await;

    send_code(&client, &base, "dave@example.com").await;
    let code = hook.next_code().await;
    clock.advance(Duration::from_secs(301));
    let expired = verify("dave@example.com", &code).await;

    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    for other in [&unknown, &used, &expired] {
        assert_eq!(other, &wrong);
    }
    let body: Value = serde_json::from_slice(&wrong.1).unwrap();
    assert_eq!(body["error"], "invalid_code");
}

#[tokio::test]
async fn a_gate_built_from_a_config_file_serves_the_same_flow() {
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, pem) =
        otpgate::token::SigningKey::generate(otpgate::token::SigningAlgorithm::ES256).unwrap();
    let key_path = dir.path().join("gate.pem");
    std::fs::write(&key_path, pem.as_bytes()).unwrap();
    let text = format!(
        r#"
[otp]
length = 8
alphabet = "alphanumeric"
[token]
algorithm = "ES256"
private_key = "{key}"
audience = "shop"
cookie = ""
[identity]
subject_header = "X-User"
strip = ["X-User*", "X-Auth-*", "X-Otpgate-*"]
[[protect]]
prefix = "/api/"
[[endpoints]]
dialect = "generic"
prefix = "/login"
[delivery.email]
kind = "webhook"
url = "{url}"
[[tenants]]
id = "default"
channels = ["email"]
"#,
        key = key_path.display(),
        url = hook.url
    );
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, text).unwrap();
    let gate = otpgate::config::Config::from_file(&path)
        .unwrap()
        .build()
        .unwrap();
    let (base, _) = start_app(gate).await;
    let client = reqwest::Client::new();

    // SMS is not offered by this tenant.
    let r = post_json(
        &client,
        format!("{base}/login/otp/send"),
        json!({"phone": "+14155552671"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "channel_disabled"
    );

    let r = post_json(
        &client,
        format!("{base}/login/otp/send"),
        json!({"email": "erin@example.com"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let code = hook.next_code().await;
    assert_eq!(code.len(), 8);
    let verified = post_json(
        &client,
        format!("{base}/login/otp/verify"),
        json!({"email": "erin@example.com", "code": code.to_lowercase()}),
    )
    .await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert!(
        !verified.headers().contains_key("set-cookie"),
        "cookies are off"
    );
    let token = verified.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::ES256
    );
    let me = json_of(
        client
            .get(format!("{base}/api/me"))
            .bearer_auth(&token)
            .header("X-User-Role", "admin"),
    )
    .await;
    assert_eq!(me["subject"], "erin@example.com");
    // The renamed subject header is injected; the forged header under the strip pattern is gone.
    assert_eq!(me["headers"]["x-user"], "erin@example.com");
    assert_eq!(me["headers"].get("x-user-role"), None);
    assert_eq!(me["headers"]["x-otpgate-jwt"], token.as_str());
}

#[tokio::test]
async fn protected_routes_refuse_forged_expired_and_foreign_tokens() {
    use otpgate::token::{SigningAlgorithm, SigningKey, TokenSettings, Tokens};
    let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let clock = otpgate::otp::ManualClock::starting_now();
    let gate = Front::new(
        Gate::builder()
            .signing_key(key.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
        protecting_api(),
    );
    let (base, calls) = start_app(gate.clone()).await;
    let client = reqwest::Client::new();
    let subject = email_subject("alice@example.com", "alice@example.com");
    let now = otpgate::otp::Clock::now(&clock);
    let good = gate.gate().tokens().mint(&subject, now).unwrap().token;

    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let payload = good.split('.').nth(1).unwrap();
    let alg_none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    let minted_by = |key: SigningKey, settings: TokenSettings| {
        Tokens::new(key, settings)
            .mint(&subject, now)
            .unwrap()
            .token
    };
    let other_audience = minted_by(
        key.clone(),
        TokenSettings {
            audience: "other".into(),
            ..TokenSettings::default()
        },
    );
    let fresh_key = |algorithm| SigningKey::generate(algorithm).unwrap().0;
    let other_key = minted_by(fresh_key(SigningAlgorithm::EdDSA), TokenSettings::default());
    let other_algorithm = minted_by(fresh_key(SigningAlgorithm::ES256), TokenSettings::default());

    let status = async |token: &str| {
        get_with_token(&client, format!("{base}/api/me"), token)
            .await
            .status()
    };
    assert_eq!(status(&good).await, StatusCode::OK);
    for forged in [
        alg_none,
        other_audience,
        other_key,
        other_algorithm,
        "garbage".into(),
    ] {
        assert_eq!(status(&forged).await, StatusCode::UNAUTHORIZED, "{forged}");
    }
    // The good token, already verified and cached, still dies at its expiry.
    clock.advance(Duration::from_secs(3600 + 6));
    assert_eq!(status(&good).await, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.count(), 1, "the app saw only the one valid request");
}

/// An identity comes only from a token the gate verified: an `Identity` extension that
/// something in front of the layer put on the request is removed before the app runs.
#[tokio::test]
async fn an_identity_extension_from_before_the_layer_is_not_believed() {
    use axum::Router;
    use axum::routing::get;
    use otpgate::Identity;
    use otpgate::otp::{Clock, SystemClock};
    use otpgate::tower::OtpLayer;

    let gate = Front::new(Gate::builder().build().unwrap(), HttpSettings::default());
    let subject = email_subject("mallory@example.com", "mallory@example.com");
    let minted = gate
        .gate()
        .tokens()
        .mint(&subject, SystemClock.now())
        .unwrap();
    let forged = gate.gate().authenticate(&minted.token).await.unwrap();
    let app = Router::new()
        .route(
            "/whoami",
            get(|identity: Option<Identity>| async move {
                identity.map_or("nobody".to_owned(), |i| i.subject().to_owned())
            }),
        )
        .layer(OtpLayer::new(gate))
        .layer(tower::util::MapRequestLayer::new(
            move |mut request: axum::http::Request<axum::body::Body>| {
                request.extensions_mut().insert(forged.clone());
                request
            },
        ));
    let base = format!("http://{}", common::serve(app).await);
    let seen = reqwest::get(format!("{base}/whoami"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, "nobody");
    // With the token itself, the layer puts the identity in place.
    let seen = reqwest::Client::new()
        .get(format!("{base}/whoami"))
        .bearer_auth(&minted.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, "mallory@example.com");
}
