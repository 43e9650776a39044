//! Destination rules through every dialect and the pages, in both forms of the gate: a
//! refused destination gets a 400 with its own code, in the shape of the dialect asked,
//! and no message is sent.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::routing::post;
use common::pages::{body, browser_on, hidden};
use common::{Form, both_forms, capture, email_and_sms, serve, start_form, start_proxy};
use otpgate::Tenant;
use otpgate::config::Config;
use otpgate::delivery::Message;
use otpgate::gate::{Destinations, EmailDomains};
use otpgate::http::{Front, PageSettings};
use otpgate::tower::OtpLayer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

both_forms!(generic, aerocall, nexudus, baanx);

/// Every dialect mounted, one tenant (`7`, as Nexudus names businesses by number) that
/// sends SMS to GB numbers and email to example.com only.
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

[[endpoints]]
dialect = "baanx"
prefix = "/v1/auth"

[[tenants]]
id = "7"
sms_countries = ["GB"]
email_domains = ["example.com"]
"#;

/// The gate of [`CONFIG`], every message captured.
fn gate() -> (Front, mpsc::UnboundedReceiver<Message>) {
    let config = Config::parse(CONFIG, "guard.toml", Path::new(".")).expect("the config reads");
    let (builder, http) = config.into_parts();
    let (sender, inbox) = capture();
    let gate = builder
        .senders(email_and_sms(sender))
        .build()
        .expect("the gate builds");
    (Front::new(gate, http), inbox)
}

/// Fails the test when a message was sent.
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

async fn generic(form: Form) {
    let (front, mut inbox) = gate();
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    let send = async |body: Value| {
        answer(
            client
                .post(format!("{base}/auth/otp/send"))
                .json(&body)
                .send()
                .await
                .expect("the gate answers"),
        )
        .await
    };
    for (body, code, message) in [
        (
            json!({"phone": "+447012345678"}),
            "number_type_not_allowed",
            "codes are not sent to numbers of this type",
        ),
        (
            json!({"phone": "+33612345678"}),
            "sms_country_not_allowed",
            "codes are not sent to numbers of this country",
        ),
        (
            json!({"email": "bob@other.example"}),
            "email_domain_not_allowed",
            "codes are not sent to this email domain",
        ),
    ] {
        let (status, value) = send(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {value}");
        assert_eq!(value, json!({"error": code, "message": message}), "{body}");
    }
    assert_nothing_sent(&mut inbox);
    // An allowed destination gets its code.
    let (status, value) = send(json!({"phone": "+447400123456"})).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(
        common::next_message(&mut inbox).await.to.as_str(),
        "+447400123456"
    );
}

async fn aerocall(form: Form) {
    let (front, mut inbox) = gate();
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    for (body, code, message) in [
        (
            json!({"phone": "+449012345678"}),
            "number_type_not_allowed",
            "Phone OTP is not available for this type of number",
        ),
        (
            json!({"phone": "+14155552671"}),
            "sms_country_not_allowed",
            "Phone OTP is not available for this country",
        ),
        (
            json!({"email": "bob@mail.example.com"}),
            "email_domain_not_allowed",
            "Email OTP is not available for this email domain",
        ),
    ] {
        let (status, value) = answer(
            client
                .post(format!("{base}/api/v1/public/projects/7/auth/otp/send"))
                .json(&body)
                .send()
                .await
                .expect("the gate answers"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {value}");
        assert_eq!(value, json!({"error": code, "message": message}), "{body}");
    }
    assert_nothing_sent(&mut inbox);
}

async fn nexudus(form: Form) {
    let (front, mut inbox) = gate();
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    let (status, value) = answer(
        client
            .get(format!(
                "{base}/api/sys/users/sendOtp?email=bob%40other.example&businessId=7"
            ))
            .send()
            .await
            .expect("the gate answers"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    let message = "codes are not sent to this email domain";
    assert_eq!(
        value,
        json!({
            "WasSuccessful": false,
            "Value": null,
            "Status": 400,
            "Message": message,
            "Errors": [{"Code": "email_domain_not_allowed", "Message": message}],
        })
    );
    assert_nothing_sent(&mut inbox);
}

/// The baanx app: every password login needs a second factor, to a US phone.
fn baanx_app() -> axum::Router {
    axum::Router::new().route(
        "/v1/auth/login",
        post(|| async {
            Json(json!({
                "isOtpRequired": true,
                "userId": "u-42",
                "phoneNumber": "+14155552671",
            }))
        }),
    )
}

async fn baanx(form: Form) {
    let (front, mut inbox) = gate();
    let base = match form {
        Form::Tower => format!(
            "http://{}",
            serve(baanx_app().layer(OtpLayer::new(front))).await
        ),
        Form::Pingora => start_proxy(front, serve(baanx_app()).await).await,
    };
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": "jane@example.com", "password": "secret"}))
        .send()
        .await
        .expect("the gate answers");
    assert_eq!(login.status(), StatusCode::OK);
    let (status, value) = answer(
        client
            .post(format!("{base}/v1/auth/login/otp"))
            .json(&json!({"userId": "u-42"}))
            .send()
            .await
            .expect("the gate answers"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(
        value,
        json!({
            "error": "sms_country_not_allowed",
            "message": "codes are not sent to numbers of this country",
        })
    );
    assert_nothing_sent(&mut inbox);
}

#[tokio::test]
async fn the_pages_say_each_refusal_in_words() {
    let strict = || Tenant {
        destinations: Destinations {
            sms_countries: Some(HashSet::from(["GB".to_owned()])),
            allow_voip: false,
            email_domains: EmailDomains::Except(Arc::new(HashSet::from([
                "mailinator.com".to_owned()
            ]))),
        },
        ..Tenant::new("default")
    };
    let mut browser = browser_on(PageSettings::default(), |builder| builder.tenant(strict()));
    let page = browser.get("/auth/sign-in").await;
    let csrf = hidden(&page, "csrf");
    for (identifier, words) in [
        (
            "+33612345678",
            "Codes cannot be sent by text message to numbers from this country.",
        ),
        (
            "+449012345678",
            "Codes cannot be sent to this kind of number. Use a mobile phone number.",
        ),
        (
            "bob@x.mailinator.com",
            "Codes cannot be sent to addresses at this domain.",
        ),
    ] {
        let answer = browser
            .post(
                "/auth/sign-in",
                &[("identifier", identifier), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(answer.status, http::StatusCode::BAD_REQUEST, "{identifier}");
        let html = body(&answer);
        assert!(html.contains(words), "{identifier}: {html}");
    }
    if let Ok(message) = browser.inbox.try_recv() {
        panic!("a message was sent to {}", message.to.as_str());
    }
}

#[tokio::test]
async fn the_pages_say_each_refusal_in_french() {
    use otpgate::http::pages::{Branding, Locale};
    let pages = PageSettings {
        branding: vec![Branding {
            tenant: "default".into(),
            locale: Some(Locale::Fr),
            ..Branding::default()
        }],
        ..PageSettings::default()
    };
    let mut browser = browser_on(pages, |builder| {
        builder.tenant(Tenant {
            destinations: Destinations {
                sms_countries: Some(HashSet::from(["GB".to_owned()])),
                allow_voip: false,
                email_domains: EmailDomains::Only(Arc::new(HashSet::from([
                    "example.com".to_owned()
                ]))),
            },
            ..Tenant::new("default")
        })
    });
    let page = browser.get("/auth/sign-in").await;
    let csrf = hidden(&page, "csrf");
    for (identifier, words) in [
        (
            "+33612345678",
            "Les codes ne peuvent pas être envoyés par SMS aux numéros de ce pays.",
        ),
        (
            "+447012345678",
            "Les codes ne peuvent pas être envoyés à ce type de numéro.",
        ),
        (
            "bob@other.example",
            "Les codes ne peuvent pas être envoyés aux adresses de ce domaine.",
        ),
    ] {
        let answer = browser
            .post(
                "/auth/sign-in",
                &[("identifier", identifier), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(answer.status, http::StatusCode::BAD_REQUEST, "{identifier}");
        let html = body(&answer);
        assert!(html.contains(words), "{identifier}: {html}");
    }
}
