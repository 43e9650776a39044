//! One set of scenarios, run against both forms of the gate: the tower layer around the
//! app, and the pingora proxy in front of it. The test bodies are shared; only the way
//! the gate is started differs.

mod common;

use common::{
    Form, WebhookReceiver, assert_refused_without_token, both_forms, claims_from_jwks,
    email_identity_headers, get_with_token, json_of, post_json, protecting_api, sign_in,
    start_form, verify_code, webhook_senders,
};
use otpgate::Gate;
use otpgate::http::Front;
use reqwest::StatusCode;
use serde_json::{Value, json};

both_forms!(
    sign_in_and_reach_the_app,
    bad_input_is_refused_the_same_way,
    refresh_rotates_and_logout_revokes,
);

fn gate(hook: &WebhookReceiver) -> Front {
    let mut http = protecting_api();
    // Under hyper's own cap of 100, so that the gate's answer is the one tested.
    http.max_headers = 50;
    Front::new(
        Gate::builder()
            .senders(webhook_senders(hook))
            .build()
            .unwrap(),
        http,
    )
}

async fn sign_in_and_reach_the_app(form: Form) {
    let hook = WebhookReceiver::start().await;
    let (base, calls) = start_form(form, gate(&hook)).await;
    let client = reqwest::Client::new();
    let session = sign_in(&client, &base, &hook, "alice@example.com").await;
    let token = session.access_token;
    let cookie = session.cookie.expect("a session cookie");

    // No token: refused before the app.
    assert_refused_without_token(&client, &base).await;
    assert_eq!(calls.count(), 0);

    // With the token: the app sees the identity and the JWT, never the forgeries.
    for auth in [
        ("authorization", format!("Bearer {token}")),
        ("cookie", cookie.clone()),
    ] {
        let seen = json_of(
            client
                .get(format!("{base}/api/me"))
                .header(auth.0, auth.1)
                .header("X-Auth-Subject", "admin")
                .header("X-Auth-Role", "root")
                .header("X-Otpgate-Jwt", "forged"),
        )
        .await;
        assert_eq!(
            seen["headers"],
            email_identity_headers("alice@example.com", &token)
        );
    }

    // The JWT the app received verifies with the JWKS the gate publishes.
    let claims = claims_from_jwks(&client, &base, &token).await;
    assert_eq!(claims["sub"], "alice@example.com");

    // Public paths pass, stripped of forgeries, with or without a token.
    let public = json_of(
        client
            .get(format!("{base}/public/page"))
            .header("X-Auth-Subject", "admin"),
    )
    .await;
    assert_eq!(
        public,
        json!({"path": "/public/page", "headers": {}, "body_bytes": 0})
    );

    // Single use.
    let again = verify_code(&client, &base, "alice@example.com", &session.code).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "invalid_code"
    );
}

async fn bad_input_is_refused_the_same_way(form: Form) {
    let hook = WebhookReceiver::start().await;
    let (base, calls) = start_form(form, gate(&hook)).await;
    let client = reqwest::Client::new();
    let send = format!("{base}/auth/otp/send");
    let verify = format!("{base}/auth/otp/verify");
    // Well-formed JSON the endpoints refuse: 400 with the code given.
    let refused_json = [
        (&send, json!({"email": 42}), "invalid_request"),
        (&send, json!({}), "invalid_request"),
        (
            &send,
            json!({"email": "a@example.com", "phone": "+14155552671"}),
            "invalid_request",
        ),
        (&send, json!({"email": "not-an-email"}), "invalid_email"),
        (&send, json!({"email": "nope"}), "invalid_email"),
        (&send, json!({"phone": "4155552671"}), "invalid_phone"),
        (&send, json!({"phone": "555"}), "invalid_phone"),
        (
            &send,
            json!({"email": "a@example.com", "tenant": "nope"}),
            "unknown_tenant",
        ),
        (
            &verify,
            json!({"email": "a@example.com"}),
            "invalid_request",
        ),
        (
            &verify,
            json!({"email": "a@example.com", "code": ""}),
            "invalid_request",
        ),
    ];
    // Bodies that are not the JSON object asked for, in type, syntax or size.
    let raw_body = |content_type: Option<&str>, body: String| {
        let request = client.post(&send).body(body);
        match content_type {
            Some(content_type) => request.header("content-type", content_type),
            None => request,
        }
    };
    let too_long = json!({"email": "x".repeat(20_000)}).to_string();
    let mut cases = vec![
        (
            raw_body(None, "{\"email\":\"a@example.com\"}".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            raw_body(None, "{}".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            raw_body(Some("text/plain"), "x".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            raw_body(Some("application/json"), "{\"email\":".into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            raw_body(Some("application/json"), "{".into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            raw_body(Some("application/json"), "[1,2]".into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            raw_body(Some("application/json"), too_long),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            client.get(&send),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    cases.extend(
        refused_json
            .into_iter()
            .map(|(url, body, code)| (client.post(url).json(&body), StatusCode::BAD_REQUEST, code)),
    );
    let mut too_many_headers = client.get(format!("{base}/public/page"));
    for i in 0..60 {
        too_many_headers = too_many_headers.header(format!("x-filler-{i}"), "v");
    }
    let cases = cases.into_iter().chain([
        (
            client
                .get(format!("{base}/public/page"))
                .header("x-big", "v".repeat(33 * 1024)),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
        (
            too_many_headers,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
        (
            client
                .get(format!("{base}/public/page"))
                .header("authorization", "Bearer one")
                .header("authorization", "Bearer two"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            client.get(format!("{base}/api%2Fme")),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            client.get(format!("{base}/api;x/me")),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
    ]);
    for (i, (request, status, code)) in cases.enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{form:?} case {i}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{form:?} case {i}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{form:?} case {i}: {body}");
        assert!(
            !body["message"].as_str().unwrap().is_empty(),
            "{form:?} case {i}"
        );
    }

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(calls.count(), 0, "the app saw none of these");

    // What passes reaches the app in the canonical form it was judged in, query untouched.
    let seen = json_of(client.get(format!("{base}//public//%70age/?q=%2F..%2F"))).await;
    assert_eq!(seen["path"], "/public/page/", "{form:?}");
    let refused = client.get(format!("{base}//API//me")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{form:?}");
}

async fn refresh_rotates_and_logout_revokes(form: Form) {
    let hook = WebhookReceiver::start().await;
    let (base, _) = start_form(form, gate(&hook)).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| post_json(&client, format!("{base}{path}"), body);
    let me = async |token: &str| {
        get_with_token(&client, format!("{base}/api/me"), token)
            .await
            .status()
    };

    let first = sign_in(&client, &base, &hook, "+14155552671").await;
    let refresh_1 = first.refresh_token.expect("a refresh token");
    // A refresh token is no access token.
    assert_eq!(me(&refresh_1).await, StatusCode::UNAUTHORIZED);

    // Rotation: the first refresh token buys a new pair, once.
    let second = post("/auth/token/refresh", json!({"refresh_token": refresh_1})).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    let access_2 = second["access_token"].as_str().unwrap().to_owned();
    let refresh_2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh_2, refresh_1);
    assert_eq!(me(&access_2).await, StatusCode::OK);

    // Reusing the spent token revokes the family: the newer refresh token dies too.
    let reuse = post("/auth/token/refresh", json!({"refresh_token": refresh_1})).await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        reuse.json::<Value>().await.unwrap()["error"],
        "invalid_token"
    );
    let after = post("/auth/token/refresh", json!({"refresh_token": refresh_2})).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // Logout revokes the access token at once, though it has not expired.
    let out = client
        .post(format!("{base}/auth/logout"))
        .bearer_auth(&access_2)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(me(&access_2).await, StatusCode::UNAUTHORIZED);

    // Logout with a refresh token in the body revokes it as well.
    let third = sign_in(&client, &base, &hook, "zed@example.com").await;
    let refresh_3 = third.refresh_token.expect("a refresh token");
    let out = post("/auth/logout", json!({"refresh_token": refresh_3})).await;
    assert_eq!(out.status(), StatusCode::OK);
    let dead = post("/auth/token/refresh", json!({"refresh_token": refresh_3})).await;
    assert_eq!(dead.status(), StatusCode::UNAUTHORIZED);
}
