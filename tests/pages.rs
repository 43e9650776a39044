//! The sign-in pages through the front, as a browser uses them: a cookie jar, forms read
//! back from the HTML, codes taken from a capturing sender, on a manual clock. Every
//! answer is checked for the page headers (CSP with a style nonce, no framing, no-store,
//! no-referrer) as it arrives.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};
use otpgate::gate::Tenant;
use otpgate::http::pages::{Branding, Locale, PageSettings};
use otpgate::identifier::Channel;

use common::pages::{
    assert_page_headers, body, browser, browser_on, browser_with, header, hidden, location,
};

#[tokio::test]
async fn a_browser_signs_in_and_goes_back() {
    let mut browser = browser();
    let page = browser.get("/auth/sign-in?return=%2Fdocs%3Fpage%3D2").await;
    let html = body(&page);
    for part in [
        "<html lang=\"en\">",
        "<form id=\"sign-in\" method=\"post\" action=\"/auth/sign-in\">",
        "<label for=\"identifier\">Email or phone number</label>",
        "autocomplete=\"username\"",
        "required autofocus",
        "<button id=\"send\" type=\"submit\">",
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
    assert_eq!(hidden(&page, "return"), "/docs?page=2");
    browser
        .send_code_to(
            "Alice@Example.com",
            "/auth/sign-in?return=%2Fdocs%3Fpage%3D2",
        )
        .await;
    let code = browser.message().await.code.expose().to_owned();
    let form = browser.get("/auth/code").await;
    assert_eq!(form.status, StatusCode::OK);
    let html = body(&form);
    for part in [
        "We sent a code to a•••@example.com.",
        "You can ask for a new code in 30 seconds.",
        "<form id=\"verify\" method=\"post\" action=\"/auth/code\">",
        "autocomplete=\"one-time-code\" inputmode=\"numeric\" pattern=\"[0-9]*\"",
        "<button id=\"verify-button\" type=\"submit\">",
        "<form id=\"resend\" method=\"post\" action=\"/auth/resend\">",
        "<button id=\"resend-button\"",
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
    let csrf = hidden(&form, "csrf");
    let done = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", body(&done));
    assert_eq!(location(&done), "/docs?page=2");
    let token = browser
        .jar
        .get("otpgate_session")
        .expect("a session cookie")
        .clone();
    let session_cookie = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("otpgate_session="))
        .unwrap();
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"));
    let identity = browser.front.gate().authenticate(&token).await.unwrap();
    assert_eq!(identity.email(), Some("alice@example.com"));
    assert!(
        !browser.jar.contains_key("otpgate_flow"),
        "the flow cookie is cleared"
    );
    // Every flow cookie had one name and one path, and was replaced, never added.
    assert!(browser.flow_cookies.len() >= 3);
    for cookie in &browser.flow_cookies {
        assert!(cookie.starts_with("otpgate_flow="), "{cookie}");
        assert!(cookie.contains("; Path=/auth;"), "{cookie}");
        assert!(
            cookie.contains("HttpOnly; SameSite=Strict; Secure"),
            "{cookie}"
        );
    }
    // The code went once: the form does not take it again.
    let again = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_wrong_code_is_said_in_words_with_401() {
    let mut browser = browser();
    let csrf = browser
        .send_code_to("bob@example.com", "/auth/sign-in")
        .await;
    let code = browser.message().await.code.expose().to_owned();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let answer = browser
        .post("/auth/code", &[("code", wrong), ("csrf", &csrf)])
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let html = body(&answer);
    assert!(
        html.contains("<p id=\"error\" role=\"alert\">That code is not right"),
        "{html}"
    );
    assert!(html.contains("aria-describedby=\"error\""), "{html}");
    assert!(!html.contains("invalid_code"), "no API words: {html}");
    // Empty is a 400 in words; the right code still works after both.
    let empty = browser
        .post("/auth/code", &[("code", " "), ("csrf", &csrf)])
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(body(&empty).contains("Enter the code we sent you."));
    let right = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(location(&right), "/");
}

#[tokio::test]
async fn forms_without_their_flow_are_refused_403() {
    let mut browser = browser();
    let csrf = browser
        .send_code_to("carol@example.com", "/auth/sign-in?return=%2Fapp")
        .await;
    let code = browser.message().await.code.expose().to_owned();
    // The wrong nonce.
    let forged = browser
        .post("/auth/code", &[("code", &code), ("csrf", "x")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let html = body(&forged);
    assert!(
        html.contains("This form has expired. Start again."),
        "{html}"
    );
    assert!(
        html.contains("/auth/sign-in?return=%2Fapp"),
        "keeps the return URL: {html}"
    );
    // A tampered cookie.
    let mut tampered = browser_with(PageSettings::default());
    let csrf_b = tampered
        .send_code_to("dan@example.com", "/auth/sign-in")
        .await;
    let cookie = tampered.jar.get_mut("otpgate_flow").unwrap();
    let (data, tag) = cookie.split_once('.').unwrap();
    let mut bytes = data.as_bytes().to_vec();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    *cookie = format!("{}.{tag}", String::from_utf8(bytes).unwrap());
    let answer = tampered
        .post("/auth/code", &[("code", "123456"), ("csrf", &csrf_b)])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // A cookie sealed by another gate.
    browser.jar.insert("otpgate_flow".into(), "e30.AAAA".into());
    let answer = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // No cookie at all; the form's own return URL is kept when it is safe.
    browser.jar.clear();
    let answer = browser
        .post(
            "/auth/sign-in",
            &[
                ("identifier", "a@example.com"),
                ("csrf", &csrf),
                ("return", "/back"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(body(&answer).contains("return=%2Fback"));
    // An expired flow.
    let mut late = browser_with(PageSettings::default());
    let csrf = late.send_code_to("erin@example.com", "/auth/sign-in").await;
    late.clock.advance(Duration::from_secs(16 * 60));
    let answer = late.post("/auth/resend", &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // Without a flow, the code form sends the browser to sign in.
    let mut fresh = browser_with(PageSettings::default());
    let answer = fresh.get("/auth/code").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/auth/sign-in?return=%2F");
}

#[tokio::test]
async fn forged_return_urls_end_on_the_default() {
    let mut browser = browser_with(PageSettings {
        default_return: "/home".into(),
        allowed_return_hosts: vec!["docs.example.com".into()],
        ..PageSettings::default()
    });
    for forged in [
        "//evil.com",
        "/\\evil.com",
        "javascript:alert(1)",
        "https://app@evil.com",
        "https://evil.com/",
    ] {
        let target = format!(
            "/auth/sign-in?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("return", forged)
                .finish()
        );
        let page = browser.get(&target).await;
        assert_eq!(hidden(&page, "return"), "/home", "{forged}");
    }
    let page = browser
        .get("/auth/sign-in?return=https%3A%2F%2Fdocs.example.com%2Fx")
        .await;
    assert_eq!(hidden(&page, "return"), "https://docs.example.com/x");
    assert!(
        header(&page, "content-security-policy").contains("form-action 'self' docs.example.com;")
    );
    // The whole way through, a forged one ends on the default.
    let csrf = browser
        .send_code_to("fay@example.com", "/auth/sign-in?return=%2F%2Fevil.com")
        .await;
    let code = browser.message().await.code.expose().to_owned();
    let done = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(location(&done), "/home");
}

#[tokio::test]
async fn identifiers_are_shown_escaped() {
    let mut browser = browser();
    let page = browser.get("/auth/sign-in").await;
    let csrf = hidden(&page, "csrf");
    let answer = browser
        .post(
            "/auth/sign-in",
            &[
                ("identifier", "<script>x</script>@example.com"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let html = body(&answer);
    assert!(
        html.contains("&lt;script&gt;x&lt;/script&gt;@example.com"),
        "{html}"
    );
    assert!(html.contains("Enter a valid email address"), "{html}");
    // A phone without its country code, said in words.
    let answer = browser
        .post(
            "/auth/sign-in",
            &[("identifier", "07700 900123"), ("csrf", &csrf)],
        )
        .await;
    assert!(body(&answer).contains("with its country code"));
}

#[tokio::test]
async fn resends_wait_for_the_cooldown() {
    let mut browser = browser();
    let csrf = browser
        .send_code_to("gus@example.com", "/auth/sign-in")
        .await;
    let first = browser.message().await.code.expose().to_owned();
    browser.clock.advance(Duration::from_secs(5));
    let early = browser.post("/auth/resend", &[("csrf", &csrf)]).await;
    assert_eq!(early.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&early, "retry-after"), "25");
    assert!(
        body(&early).contains("You can ask for a new code in 25 seconds."),
        "{}",
        body(&early)
    );
    browser.clock.advance(Duration::from_secs(25));
    let resent = browser.post("/auth/resend", &[("csrf", &csrf)]).await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&resent), "/auth/code?sent=1");
    let second = browser.message().await.code.expose().to_owned();
    assert_ne!(first, second);
    let form = browser.get("/auth/code?sent=1").await;
    assert!(body(&form).contains("We sent a new code."));
    let done = browser
        .post("/auth/code", &[("code", &second), ("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_links_spend_nothing_until_confirmed() {
    let mut browser = browser_with(PageSettings {
        sign_in_links: true,
        public_url: Some("https://app.example.com".into()),
        ..PageSettings::default()
    });
    browser
        .send_code_to("hana@example.com", "/auth/sign-in?return=%2Finbox")
        .await;
    let message = browser.message().await;
    let link = message
        .link
        .expect("the email carries a link")
        .expose()
        .to_owned();
    let target = link
        .strip_prefix("https://app.example.com")
        .expect("the configured origin");
    assert!(
        target.starts_with("/auth/link?e=hana%40example.com&r=%2Finbox&code="),
        "{target}"
    );
    // A mail scanner, then the person: two GETs, and the code is still good.
    let mut scanner = browser_with(PageSettings::default());
    scanner.front = browser.front.clone();
    scanner.get(target).await;
    let page = browser.get(target).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = body(&page);
    assert!(
        html.contains("<h1>Sign in as hana@example.com?</h1>"),
        "{html}"
    );
    assert!(html.contains("<form id=\"link\" method=\"post\" action=\"/auth/link\">"));
    assert!(html.contains("<button id=\"confirm-button\" type=\"submit\""));
    let fields = ["e", "r", "code", "csrf"].map(|name| (name, hidden(&page, name)));
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let done = browser.post("/auth/link", &fields).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", body(&done));
    assert_eq!(location(&done), "/inbox");
    assert!(browser.jar.contains_key("otpgate_session"));
}

#[tokio::test]
async fn signing_out_revokes_the_session() {
    let mut browser = browser();
    let csrf = browser
        .send_code_to("ivy@example.com", "/auth/sign-in")
        .await;
    let code = browser.message().await.code.expose().to_owned();
    browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    let token = browser.jar["otpgate_session"].clone();
    let confirm = browser.get("/auth/sign-out").await;
    let html = body(&confirm);
    assert!(html.contains("<form id=\"sign-out\" method=\"post\" action=\"/auth/sign-out\">"));
    assert!(html.contains("<button id=\"sign-out-button\" type=\"submit\""));
    // Without the form's nonce nothing is revoked.
    let forged = browser.post("/auth/sign-out", &[("csrf", "nope")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(browser.front.gate().authenticate(&token).await.is_ok());
    let confirm = browser.get("/auth/sign-out").await;
    let done = browser
        .post("/auth/sign-out", &[("csrf", &hidden(&confirm, "csrf"))])
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(body(&done).contains("<h1>You are signed out</h1>"));
    assert!(browser.front.gate().authenticate(&token).await.is_err());
    assert!(!browser.jar.contains_key("otpgate_session"));
    assert!(!browser.jar.contains_key("otpgate_flow"));
}

#[tokio::test]
async fn other_methods_and_bodies_are_refused_as_pages() {
    let mut browser = browser();
    let put = browser.request(Method::PUT, "/auth/sign-in", "").await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&put, "allow"), "GET, POST");
    let get = browser.get("/auth/resend").await;
    assert_eq!(header(&get, "allow"), "POST");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let json = browser
        .raw(
            &Method::POST,
            "/auth/sign-in",
            &headers,
            "{\"email\":\"a@example.com\"}",
            None,
        )
        .await;
    assert_page_headers(&json);
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body(&json).contains("role=\"alert\""));
    let unknown = browser.get("/auth/sign-in?tenant=nope").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(body(&unknown).contains("This sign-in page does not exist."));
}

#[tokio::test]
async fn branding_sets_language_colours_and_words() {
    let mut texts = BTreeMap::new();
    texts.insert("send_button".to_owned(), "Recevoir mon code".to_owned());
    let mut browser = browser_with(PageSettings {
        branding: vec![Branding {
            tenant: "default".into(),
            title: Some("Acme".into()),
            logo_url: Some("https://cdn.example.com/acme.svg".into()),
            primary_color: Some("#ff0".into()),
            background_color: Some("red;}body{".into()),
            locale: Some(Locale::Fr),
            texts,
        }],
        ..PageSettings::default()
    });
    let page = browser.get("/auth/sign-in").await;
    let html = body(&page);
    assert!(html.contains("<html lang=\"fr\">"), "{html}");
    assert!(html.contains("<title>Acme</title>"));
    assert!(
        html.contains("--primary: #ff0; --on-primary: #000000;"),
        "{html}"
    );
    // A colour made in code that is not plain hex is ignored, never written.
    assert!(!html.contains("red;}"), "{html}");
    assert!(html.contains("Recevoir mon code"));
    assert!(html.contains("Adresse e-mail ou numéro de téléphone"));
    assert!(
        header(&page, "content-security-policy")
            .contains("img-src 'self' https://cdn.example.com;")
    );
}

#[test]
fn the_config_file_checks_branding_and_links() {
    use otpgate::config::Config;
    let parse = |text: &str| Config::parse(text, "pages.toml", std::path::Path::new("."));
    let error = parse(
        "[pages]\n\n[[pages.branding]]\ntenant = \"default\"\nprimary_color = \"red;}body{\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("pages.toml:5: `pages.branding.primary_color`"),
        "{error}"
    );
    let error = parse("[[pages.branding]]\ntenant = \"acme\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`pages.branding.tenant`") && error.contains("acme"),
        "{error}"
    );
    let error = parse("[pages]\nsign_in_links = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pages.toml:2: `pages.sign_in_links`"),
        "{error}"
    );
    let error = parse("[[pages.branding]]\ntenant = \"default\"\ntexts = { nope = \"x\" }\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pages.branding.texts") && error.contains("nope"),
        "{error}"
    );
    let config = parse(
        "[pages]\nsign_in_links = true\npublic_url = \"https://app.example.com/\"\n\n\
         [[pages.branding]]\ntenant = \"default\"\nprimary_color = \"#123abc\"\nlocale = \"fr\"\n\
         logo_url = \"/logo.svg\"\ntexts = { send_button = \"Go\" }\n",
    )
    .unwrap();
    let pages = config.http.pages.as_ref().unwrap();
    assert_eq!(pages.public_url.as_deref(), Some("https://app.example.com"));
    assert_eq!(pages.branding[0].locale, Some(Locale::Fr));
    assert_eq!(pages.branding[0].texts["send_button"], "Go");
}

#[tokio::test]
async fn too_many_wrong_codes_wait_with_429() {
    let mut browser = browser();
    let csrf = browser
        .send_code_to("jay@example.com", "/auth/sign-in")
        .await;
    let code = browser.message().await.code.expose().to_owned();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let mut answer = None;
    for _ in 0..20 {
        let attempt = browser
            .post("/auth/code", &[("code", wrong), ("csrf", &csrf)])
            .await;
        if attempt.status != StatusCode::UNAUTHORIZED {
            answer = Some(attempt);
            break;
        }
    }
    let answer = answer.expect("wrong codes are stopped");
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&answer, "retry-after").parse::<u64>().unwrap() >= 1);
    let html = body(&answer);
    assert!(
        html.contains("Too many tries. You can try again in"),
        "{html}"
    );
}

#[tokio::test]
async fn the_identifier_field_asks_for_what_the_tenant_sends_by() {
    let mut browser = browser_on(PageSettings::default(), |builder| {
        let mut email = Tenant::new("mail");
        email.channels = vec![Channel::Email];
        let mut phone = Tenant::new("phone");
        phone.channels = vec![Channel::Sms];
        builder.tenant(email).tenant(phone).default_tenant("mail")
    });
    let html = body(&browser.get("/auth/sign-in").await);
    assert!(
        html.contains("<label for=\"identifier\">Email</label>"),
        "{html}"
    );
    assert!(
        html.contains("type=\"email\" autocomplete=\"email\""),
        "{html}"
    );
    let page = browser.get("/auth/sign-in?tenant=phone").await;
    let html = body(&page);
    assert!(
        html.contains("<label for=\"identifier\">Phone number</label>"),
        "{html}"
    );
    assert!(html.contains("type=\"tel\" autocomplete=\"tel\""), "{html}");
    assert_eq!(hidden(&page, "tenant"), "phone");
    // An email where only phones are taken is said in words.
    let csrf = hidden(&page, "csrf");
    let answer = browser
        .post(
            "/auth/sign-in",
            &[("identifier", "kim@example.com"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(body(&answer).contains("Codes cannot be sent by email here."));
    let sent = browser
        .post(
            "/auth/sign-in",
            &[("identifier", "+1 (415) 555-2671"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", body(&sent));
    assert_eq!(browser.message().await.tenant, "phone");
    let form = body(&browser.get("/auth/code").await);
    assert!(form.contains("We sent a code to +1•••2671."), "{form}");
}
