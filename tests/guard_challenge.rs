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

/// `request`, carrying `challenge` in the challenge header when given: the gate's status
/// and JSON answer.
async fn sent(request: reqwest::RequestBuilder, challenge: Option<&str>) -> (StatusCode, Value) {
    let request = match challenge {
        Some(challenge) => request.header(HEADER, challenge),
        None => request,
    };
    let response = request.send().await.expect("the gate answers");
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
        let request = client
            .post(format!("{base}/auth/otp/send"))
            .json(&json!({"email": "alice@example.com"}));
        sent(request, challenge).await
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
    let (status, value) = sent(
        client
            .post(format!("{base}/auth/otp/send"))
            .json(&json!({"email": "bob@example.com", "tenant": "8"})),
        None,
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
    let (status, value) = sent(client.post(&url).json(&body), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(
        value,
        json!({"error": "challenge_required", "message": "Proof-of-work challenge required"})
    );
    assert_nothing_sent(&mut inbox);
    let payload = solved(&client, &base, "7").await;
    let (status, value) = sent(client.post(&url).json(&body), Some(&payload)).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    common::next_message(&mut inbox).await;
}

async fn nexudus(form: Form) {
    let (front, mut inbox) = gate();
    let (base, _) = start_form(form, front).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/api/sys/users/sendOtp?email=alice%40example.com&businessId=7");
    let (status, value) = sent(client.get(&url), Some("e30=")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value["Errors"][0]["Code"], "challenge_invalid", "{value}");
    assert_nothing_sent(&mut inbox);
    let payload = solved(&client, &base, "7").await;
    let (status, value) = sent(client.get(&url), Some(&payload)).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    common::next_message(&mut inbox).await;
}

/// The sign-in pages of a tenant that requires a challenge: they carry the gate's own
/// script (by the answer's nonce, the only script the CSP lets run), say that JavaScript
/// is needed, refuse a send without a solved challenge and take one with it.
mod pages {
    use http::{HeaderMap, HeaderValue, Method, StatusCode};
    use otpgate::Tenant;
    use otpgate::gate::{Challenge, ChallengeMode, ChallengePolicy, solve_challenge};
    use otpgate::http::{GateResponse, PageSettings};

    use crate::common::pages::{Browser, body, browser_on, header, hidden, location};

    fn browser() -> Browser {
        browser_on(PageSettings::default(), |builder| {
            builder
                .tenant(Tenant {
                    challenge: ChallengePolicy {
                        mode: ChallengeMode::Always,
                        max_number: 3000,
                        ..ChallengePolicy::default()
                    },
                    ..Tenant::new("default")
                })
                .tenant(Tenant::new("open"))
        })
    }

    /// `method target` with `cookie` and `body` (a form), without the page checks of
    /// `Browser::request`, which refuse every script.
    async fn raw(
        browser: &Browser,
        method: Method,
        target: &str,
        cookie: Option<&str>,
        body: &str,
    ) -> GateResponse {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("app.example.com"));
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Some(cookie) = cookie {
            headers.insert("cookie", HeaderValue::from_str(cookie).unwrap());
        }
        browser
            .raw(&method, target, &headers, body, Some("127.0.0.1"))
            .await
    }

    fn flow_cookie(response: &GateResponse) -> String {
        let set = header(response, "set-cookie");
        set.split(';').next().unwrap().to_owned()
    }

    fn form(fields: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish()
    }

    #[tokio::test]
    async fn the_sign_in_page_solves_a_challenge_before_sending() {
        let mut browser = browser();
        let page = raw(&browser, Method::GET, "/auth/sign-in", None, "").await;
        assert_eq!(page.status, StatusCode::OK);
        let html = body(&page);
        let csp = header(&page, "content-security-policy");
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        assert!(
            csp.contains(&format!("script-src 'nonce-{nonce}'")),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"));
        assert!(
            html.contains(&format!(
                "<script nonce=\"{nonce}\" src=\"/auth/challenge.js\" defer></script>"
            )),
            "{html}"
        );
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(html.contains("<noscript>") && html.contains("JavaScript is needed"));

        // Without JavaScript the field stays empty: the page says what is missing.
        let cookie = flow_cookie(&page);
        let fields = [
            ("identifier", "alice@example.com"),
            ("csrf", &hidden(&page, "csrf")),
            ("challenge", ""),
        ];
        let refused = raw(
            &browser,
            Method::POST,
            "/auth/sign-in",
            Some(&cookie),
            &form(&fields),
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(
            body(&refused).contains("needs JavaScript"),
            "{}",
            body(&refused)
        );
        assert!(browser.inbox.try_recv().is_err(), "nothing sent");

        // The script's work: a challenge from beside the pages, solved.
        let answer = raw(
            &browser,
            Method::GET,
            "/auth/challenge?tenant=default",
            None,
            "",
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(header(&answer, "cache-control"), "no-store");
        let challenge: Challenge = serde_json::from_slice(&answer.body).unwrap();
        let solved = solve_challenge(&challenge).unwrap();
        let cookie = flow_cookie(&refused);
        let fields = [
            ("identifier", "alice@example.com"),
            ("csrf", &hidden(&refused, "csrf")),
            ("challenge", &solved),
        ];
        let sent = raw(
            &browser,
            Method::POST,
            "/auth/sign-in",
            Some(&cookie),
            &form(&fields),
        )
        .await;
        assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", body(&sent));
        assert_eq!(location(&sent), "/auth/code");
        assert_eq!(browser.message().await.to.as_str(), "alice@example.com");

        let script = raw(&browser, Method::GET, "/auth/challenge.js", None, "").await;
        assert_eq!(script.status, StatusCode::OK);
        assert_eq!(
            header(&script, "content-type"),
            "text/javascript; charset=utf-8"
        );
        assert!(body(&script).contains("crypto.subtle.digest(\"SHA-256\""));
    }

    #[tokio::test]
    async fn a_tenant_without_challenges_keeps_its_pages_script_free() {
        let mut browser = browser();
        // `Browser::get` checks the strict page headers and that no script is there.
        let page = browser.get("/auth/sign-in?tenant=open").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!header(&page, "content-security-policy").contains("script-src"));
        assert!(!body(&page).contains("name=\"challenge\""));
    }
}
