//! Conformance with shared/seeds/baanx-login-otp.md, served from config/baanx.toml,
//! through both forms, in front of a small "existing app" that implements the password
//! login and only issues its access token after checking the gate's assertion JWT
//! against the gate's JWKS.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Form, WebhookReceiver, both_forms, serve, start_proxy};
use otpgate::config::Config;
use otpgate::delivery::{Senders, WebhookSender};
use otpgate::http::{Front, HttpSettings};
use otpgate::tower::OtpLayer;
use serde_json::{Value, json};

both_forms!(conformance, forwarded_for_on_the_mediated_login);

const USER_ID: &str = "b6b9168c-bb56-4c6a-9c0d-4650ea74f5f9";
const CLIENT_KEY: &str = "demo-client-key";

#[derive(Default)]
struct AppSeen {
    logins: AtomicUsize,
    with_assertion: AtomicUsize,
    saw_otp_code: AtomicUsize,
    /// Every login's `X-Forwarded-For` lines, and the names of the headers in another
    /// spelling of it (`x_forwarded_for`, ...).
    forwarded_for: Mutex<Vec<(Vec<String>, Vec<String>)>>,
}

impl AppSeen {
    fn last_forwarded_for(&self) -> (Vec<String>, Vec<String>) {
        self.forwarded_for.lock().unwrap().last().cloned().unwrap()
    }
}

fn forwarded_for(headers: &HeaderMap) -> (Vec<String>, Vec<String>) {
    let lines = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    let other_spellings = headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| *name != "x-forwarded-for" && name.replace('_', "-") == "x-forwarded-for")
        .map(str::to_owned)
        .collect();
    (lines, other_spellings)
}

/// The app: password login with `isOtpRequired`, and an access token only for a login
/// that carries a valid assertion from the gate.
fn existing_app(jwks: jsonwebtoken::jwk::JwkSet, seen: Arc<AppSeen>) -> axum::Router {
    axum::Router::new().route(
        "/v1/auth/login",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = seen.clone();
            let jwks = jwks.clone();
            async move {
                seen.logins.fetch_add(1, Ordering::SeqCst);
                seen.forwarded_for.lock().unwrap().push(forwarded_for(&headers));
                if body.get("otpCode").is_some() {
                    seen.saw_otp_code.fetch_add(1, Ordering::SeqCst);
                }
                if body["email"] != "ann@example.com" || body["password"] != "correct horse" {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Invalid credentials"}))).into_response();
                }
                let Some(assertion) = headers.get("x-otpgate-assertion").and_then(|v| v.to_str().ok()) else {
                    return Json(json!({"isOtpRequired": true, "userId": USER_ID, "phoneNumber": "+1******2671"})).into_response();
                };
                seen.with_assertion.fetch_add(1, Ordering::SeqCst);
                let header = jsonwebtoken::decode_header(assertion).unwrap();
                let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
                let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
                validation.set_audience(&["baanx-app"]);
                let Ok(claims) = jsonwebtoken::decode::<Value>(assertion, &key, &validation) else {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"message": "bad assertion"}))).into_response();
                };
                let claims = claims.claims;
                let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
                if claims["sub"] != USER_ID || claims["amr"] != json!(["otp"]) || lifetime > 60 {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"message": "wrong assertion"}))).into_response();
                }
                Json(json!({"accessToken": format!("app-session-{USER_ID}")})).into_response()
            }
        }),
    )
}

async fn start(form: Form, hook: &WebhookReceiver, seen: Arc<AppSeen>) -> String {
    start_with(form, hook, seen, |_| {}).await
}

/// [`start`] with the HTTP settings of config/baanx.toml changed by `adjust`.
async fn start_with(
    form: Form,
    hook: &WebhookReceiver,
    seen: Arc<AppSeen>,
    adjust: impl FnOnce(&mut HttpSettings),
) -> String {
    let sender = Arc::new(WebhookSender::new(hook.url.parse().unwrap()));
    let (builder, mut http) = Config::from_file("config/baanx.toml".as_ref())
        .unwrap()
        .into_parts();
    adjust(&mut http);
    let gate = Front::new(
        builder
            .senders(Senders {
                email: None,
                sms: Some(sender),
                ..Default::default()
            })
            .build()
            .unwrap(),
        http,
    );
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(gate.gate().tokens().jwks()).unwrap();
    let app = existing_app(jwks, seen);
    match form {
        Form::Tower => format!("http://{}", serve(app.layer(OtpLayer::new(gate))).await),
        Form::Pingora => start_proxy(gate, serve(app).await).await,
    }
}

async fn conformance(form: Form) {
    let hook = WebhookReceiver::start().await;
    let seen = Arc::new(AppSeen::default());
    let base = start(form, &hook, seen.clone()).await;
    let client = reqwest::Client::new();
    let call = |path: &str, body: Value, key: Option<&str>| {
        let mut request = client.post(format!("{base}{path}")).json(&body);
        if let Some(key) = key {
            request = request.header("x-client-key", key);
        }
        request.send()
    };
    let login = json!({"email": "ann@example.com", "password": "correct horse"});

    // 1. The password login passes through; the app asks for a second factor.
    let first = call("/v1/auth/login", login.clone(), Some(CLIENT_KEY))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({"isOtpRequired": true, "userId": USER_ID, "phoneNumber": "+1******2671"})
    );
    // The app is told who the client is, as on every request that reaches it.
    assert_eq!(
        seen.last_forwarded_for(),
        (vec!["127.0.0.1".into()], vec![])
    );
    // A wrong password is the app's to refuse.
    let wrong = call(
        "/v1/auth/login",
        json!({"email": "ann@example.com", "password": "x"}),
        Some(CLIENT_KEY),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // 2. The client key is required.
    for key in [None, Some("wrong-key")] {
        let refused = call("/v1/auth/login/otp", json!({"userId": USER_ID}), key)
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.json::<Value>().await.unwrap()["error"],
            "invalid_client_key"
        );
    }
    let refused = call("/v1/auth/login", login.clone(), None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // 3. Send the code: {"success": true}, 6 digits to the registered phone.
    let sent = call(
        "/v1/auth/login/otp",
        json!({"userId": USER_ID}),
        Some(CLIENT_KEY),
    )
    .await
    .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    assert_eq!(
        sent.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    let sms = hook.next().await;
    assert_eq!(sms["channel"], "sms");
    assert_eq!(sms["to"], "+14155552671");
    let code = sms["code"].as_str().unwrap().to_owned();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    // Resend = call again; the cooldown applies.
    let again = call(
        "/v1/auth/login/otp",
        json!({"userId": USER_ID}),
        Some(CLIENT_KEY),
    )
    .await
    .unwrap();
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    // A user with no pending login gets nothing.
    let nobody = call(
        "/v1/auth/login/otp",
        json!({"userId": "someone-else"}),
        Some(CLIENT_KEY),
    )
    .await
    .unwrap();
    assert_eq!(nobody.status(), StatusCode::BAD_REQUEST);

    // 4. A wrong code never reaches the app.
    let logins_before = seen.logins.load(Ordering::SeqCst);
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    let mut retry = login.clone();
    retry["otpCode"] = wrong_code.into();
    let refused = call("/v1/auth/login", retry, Some(CLIENT_KEY))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_code"
    );
    assert_eq!(
        seen.logins.load(Ordering::SeqCst),
        logins_before,
        "the app never saw it"
    );

    // A forged assertion from the client is stripped: the app asks for the factor again.
    let forged = client
        .post(format!("{base}/v1/auth/login"))
        .header("x-client-key", CLIENT_KEY)
        .header("X-Otpgate-Assertion", "eyJhbGciOiJub25lIn0.e30.")
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.json::<Value>().await.unwrap()["isOtpRequired"], true);
    assert_eq!(seen.with_assertion.load(Ordering::SeqCst), 0);

    // 5. The right code: the app gets the login without otpCode and with the assertion.
    let mut retry = login.clone();
    retry["otpCode"] = code.clone().into();
    let accepted = call("/v1/auth/login", retry.clone(), Some(CLIENT_KEY))
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(
        accepted.json::<Value>().await.unwrap(),
        json!({"accessToken": format!("app-session-{USER_ID}")})
    );
    assert_eq!(seen.with_assertion.load(Ordering::SeqCst), 1);
    assert_eq!(
        seen.saw_otp_code.load(Ordering::SeqCst),
        0,
        "otpCode never reaches the app"
    );

    // 6. The code was single use.
    let reused = call("/v1/auth/login", retry, Some(CLIENT_KEY))
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
}

/// The login the gate forwards itself carries `X-Forwarded-For` as every proxied request
/// does: a list from an untrusted client is replaced by its address, in every spelling;
/// a trusted proxy's list is extended.
async fn forwarded_for_on_the_mediated_login(form: Form) {
    let login = json!({"email": "ann@example.com", "password": "correct horse"});
    let forged_login = |base: String| {
        reqwest::Client::new()
            .post(format!("{base}/v1/auth/login"))
            .header("x-client-key", CLIENT_KEY)
            .header("X-Forwarded-For", "203.0.113.9")
            .header("X_Forwarded_For", "198.51.100.7")
            .json(&login)
            .send()
    };

    let hook = WebhookReceiver::start().await;
    let seen = Arc::new(AppSeen::default());
    let base = start(form, &hook, seen.clone()).await;
    let answer = forged_login(base).await.unwrap();
    assert_eq!(answer.json::<Value>().await.unwrap()["isOtpRequired"], true);
    assert_eq!(seen.logins.load(Ordering::SeqCst), 1);
    assert_eq!(
        seen.last_forwarded_for(),
        (vec!["127.0.0.1".into()], vec![]),
        "an untrusted client's list is replaced"
    );

    let seen = Arc::new(AppSeen::default());
    let base = start_with(form, &hook, seen.clone(), |http| {
        http.trusted_proxies.push("127.0.0.0/8".parse().unwrap());
    })
    .await;
    let answer = forged_login(base).await.unwrap();
    assert_eq!(answer.json::<Value>().await.unwrap()["isOtpRequired"], true);
    assert_eq!(
        seen.last_forwarded_for(),
        (vec!["203.0.113.9, 127.0.0.1".into()], vec![]),
        "a trusted proxy's list is extended, and only in the spelling proxies write"
    );
}
