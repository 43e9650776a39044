//! The sign-in pages, the route policy and forward-auth under attack: return URLs in every
//! spelling a browser reads as another site, markup in every value a page shows, flow
//! cookies moved between steps and people, sign-in links, methods spelled otherwise, and
//! forward-auth descriptions no proxy writes. Each test is an attack that must fail.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};
use otpgate::http::pages::Branding;
use otpgate::http::policy::{rule_for, safe_return};
use otpgate::http::{GateResponse, HttpSettings, PageSettings, ProtectRule, Route};

use common::pages::{
    Browser, assert_signed_in, body, browser, browser_for, browser_on, browser_with, encode,
    hidden, location, session_set,
};
use common::raw::exchange;
use common::{AppCalls, Form, start_form};

/// A browser in front of the pages and of the routes `protect` guards, with 10.0.0.1 as
/// the trusted proxy that may ask forward-auth.
fn guarding(protect: Vec<ProtectRule>) -> Browser {
    let http = HttpSettings {
        pages: Some(PageSettings::default()),
        protect,
        trusted_proxies: vec!["10.0.0.1/32".parse().expect("a network")],
        ..HttpSettings::default()
    };
    browser_for(http, |builder| builder)
}

/// Spellings of another site that browsers follow (or that could mean something else to
/// a browser than to a check), as return URLs. Each must end at the default return.
const FOREIGN: &[&str] = &[
    "//evil.com",
    "//evil.com/app.example.com",
    "/\\evil.com",
    "\\/evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r\n/evil.com",
    " //evil.com",
    "\u{0}//evil.com",
    "https:evil.com",
    "https:/evil.com",
    "https:///evil.com",
    "http:/\\evil.com",
    "https:\\\\evil.com",
    "HTTPS://evil.com/",
    "hTtP://evil.com",
    "https://evil.com",
    "https://app.example.com.evil.com/",
    "https://app.example.com@evil.com/",
    "https://evil.com?@app.example.com",
    "https://evil.com#@app.example.com",
    "https://evil.com\\@app.example.com",
    "https://app.example.com%40evil.com/",
    "https://app.example.com:443@evil.com/",
    "https://xn--pple-43d.com/",
    "https://\u{430}pple.com/",
    "https://app.example.com\u{3002}evil.com/",
    "https://app\u{ff0e}example.com/",
    "https://app.example.com:99x/",
    "https://[::1/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox",
    "ftp://app.example.com/",
    "evil.com",
    "\\\\evil.com",
    "/\u{2028}/evil.com",
    "/\u{ff0f}evil.com",
    // Paths the browser resolves to `//evil.com` on this site, which an app that
    // redirects to its own path sends to another origin.
    "/.//evil.com",
    "/..//evil.com",
    "/%2e//evil.com",
    "/%2E%2E//evil.com",
    "/x/..//evil.com",
    "/x//evil.com",
    "https://app.example.com//evil.com",
    "https://app.example.com/./%2e//evil.com",
];

#[test]
fn safe_return_refuses_every_foreign_spelling() {
    let host = Some("app.example.com");
    for raw in FOREIGN {
        assert_eq!(safe_return(raw, host, &[]), None, "{raw:?}");
    }
    let long = format!("/{}", "a".repeat(4096));
    assert_eq!(safe_return(&long, host, &[]), None);
    // Percent-escapes stay escapes: a browser reads `/%5Cevil` and `/%2F%2Fevil` as paths
    // of this site, and the Location header carries them as written.
    for raw in [
        "/%5Cevil.com",
        "/%2F%2Fevil.com",
        "/%0d%0aSet-Cookie:%20x=1",
        "/docs/",
        "/a.b/.c/..d/?next=//x#/./",
        "https://app.example.com",
        "https://app.example.com/?a=//b",
    ] {
        assert_eq!(safe_return(raw, host, &[]).as_deref(), Some(raw), "{raw}");
    }
}

#[tokio::test]
async fn foreign_return_urls_fall_back_on_every_way_in() {
    let mut browser = browser();
    for raw in FOREIGN {
        // The `return` query of the sign-in page.
        let page = browser
            .get(&format!("/auth/sign-in?return={}", encode(raw)))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{raw:?}");
        assert_eq!(hidden(&page, "return"), "/", "{raw:?}");
        // The `r` of a sign-in link.
        let link = browser
            .get(&format!(
                "/auth/link?e=ann%40example.com&code=123456&r={}",
                encode(raw)
            ))
            .await;
        assert_eq!(link.status, StatusCode::OK, "{raw:?}");
        assert_eq!(hidden(&link, "r"), "/", "{raw:?}");
        // The hidden field of an expired form, sent back without a flow.
        let mut stranger = browser_with(PageSettings::default());
        let expired = stranger
            .post(
                "/auth/sign-in",
                &[
                    ("identifier", "a@example.com"),
                    ("csrf", "x"),
                    ("return", raw),
                ],
            )
            .await;
        assert_eq!(expired.status, StatusCode::FORBIDDEN, "{raw:?}");
        assert!(
            body(&expired).contains("href=\"/auth/sign-in?return=%2F\""),
            "{raw:?}: {}",
            body(&expired)
        );
    }
}

#[tokio::test]
async fn a_sign_in_ends_on_this_site_whatever_the_form_says() {
    let mut browser = browser();
    let code = browser
        .code_for("ann@example.com", "/auth/sign-in?return=%2Fdocs")
        .await;
    let csrf = browser.code_csrf().await;
    // The form's fields cannot move the return URL: only the sealed flow holds it.
    let signed_in = browser
        .post(
            "/auth/code",
            &[
                ("code", &code),
                ("csrf", &csrf),
                ("return", "https://evil.com/"),
                ("r", "//evil.com"),
            ],
        )
        .await;
    assert_signed_in(&signed_in, "/docs");
}

#[tokio::test]
async fn header_breaking_return_urls_never_split_the_location() {
    let mut browser = browser();
    let raw = "/x%0d%0aSet-Cookie:%20otpgate_session=evil";
    let code = browser
        .code_for(
            "bob@example.com",
            &format!("/auth/sign-in?return={}", encode(raw)),
        )
        .await;
    let csrf = browser.code_csrf().await;
    let signed_in = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&signed_in), raw);
    assert_eq!(signed_in.headers.get_all("location").iter().count(), 1);
    assert!(
        !signed_in
            .headers
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("evil"))),
        "a return URL set a cookie"
    );
}

#[tokio::test]
async fn markup_in_every_value_a_page_shows_is_escaped() {
    let mut texts = BTreeMap::new();
    texts.insert(
        "sign_in_heading".to_owned(),
        "<img src=x onerror=alert(1)>".to_owned(),
    );
    let pages = PageSettings {
        branding: vec![Branding {
            tenant: "default".into(),
            title: Some("</title><script>alert(1)</script>".into()),
            logo_url: Some("https://cdn.example.com/x.png\" onerror=\"alert(1)".into()),
            primary_color: Some("red;}</style><script>alert(1)</script>".into()),
            background_color: Some("#fff;background:url(//evil)".into()),
            ..Branding::default()
        }],
        ..PageSettings::default()
    };
    let mut browser = browser_with(pages);
    let attack = "\"'><script>alert(1)</script><img src=x onerror=alert(1)>";
    let page = browser
        .get(&format!(
            "/auth/sign-in?return={}",
            encode(&format!("/{attack}"))
        ))
        .await;
    let csrf = hidden(&page, "csrf");
    let refused = browser
        .post(
            "/auth/sign-in",
            &[("identifier", &format!("{attack}@x")), ("csrf", &csrf)],
        )
        .await;
    let link = browser
        .get(&format!(
            "/auth/link?e=ann%40example.com&code={}&r=%2F",
            encode(attack)
        ))
        .await;
    let unknown = browser
        .get(&format!("/auth/sign-in?tenant={}", encode(attack)))
        .await;
    for response in [&page, &refused, &link, &unknown] {
        let html = body(response);
        for needle in [
            "<script",
            "<img src=x",
            "onerror=\"alert",
            "\"'>",
            "url(//evil",
        ] {
            assert!(!html.contains(needle), "{needle} in {html}");
        }
        assert!(!html.contains("</style><"), "{html}");
        let csp = response.headers["content-security-policy"]
            .to_str()
            .expect("text");
        assert!(!csp.contains("script-src"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("onerror"), "{csp}");
    }
    // What was typed comes back, escaped, in the attribute only.
    assert!(body(&refused).contains("value=\"&quot;&#x27;&gt;&lt;script&gt;"));
}

#[tokio::test]
async fn csp_nonces_are_fresh_on_every_answer() {
    let mut browser = browser();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let page = browser.get("/auth/sign-in").await;
        let csp = page.headers["content-security-policy"]
            .to_str()
            .expect("text")
            .to_owned();
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("a nonce")
            .to_owned();
        assert!(nonce.len() >= 22, "{nonce}");
        assert!(seen.insert(nonce), "a nonce came twice");
    }
}

#[tokio::test]
async fn a_flow_serves_only_its_own_step_and_browser() {
    let mut browser = browser();
    let code = browser.code_for("ann@example.com", "/auth/sign-in").await;
    let csrf = browser.code_csrf().await;
    let ann = std::mem::take(&mut browser.jar);
    let ann_flow = ann["otpgate_flow"].clone();

    // A sign-out flow (no identifier) cannot verify anyone's code.
    let sign_out = browser.get("/auth/sign-out").await;
    let sign_out_csrf = hidden(&sign_out, "csrf");
    let verify = browser
        .post("/auth/code", &[("code", &code), ("csrf", &sign_out_csrf)])
        .await;
    assert_eq!(verify.status, StatusCode::SEE_OTHER);
    assert!(
        location(&verify).starts_with("/auth/sign-in?"),
        "{}",
        location(&verify)
    );
    assert!(!session_set(&verify));
    let linked = browser
        .post(
            "/auth/link",
            &[
                ("code", &code),
                ("csrf", &sign_out_csrf),
                ("e", "ann@example.com"),
            ],
        )
        .await;
    assert!(
        !session_set(&linked),
        "a link form named its own identifier"
    );

    // Ann's flow with another flow's nonce, or her nonce without her flow: refused.
    browser.jar.insert("otpgate_flow".into(), ann_flow.clone());
    let swapped = browser
        .post("/auth/code", &[("code", &code), ("csrf", &sign_out_csrf)])
        .await;
    assert_eq!(swapped.status, StatusCode::FORBIDDEN);
    assert!(!session_set(&swapped));
    browser.jar.clear();
    let cross_site = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert!(!session_set(&cross_site));

    // Altered, or sealed for another purpose with the same key: not a flow.
    let (data, tag) = ann_flow.split_once('.').expect("data.tag");
    let mut altered = tag.to_owned();
    let last = if altered.ends_with('A') { 'B' } else { 'A' };
    altered.pop();
    altered.push(last);
    let json = base64_decode(data);
    for forged in [
        format!("{data}.{altered}"),
        browser.front.gate().seal("pages.flow2", &json),
        browser.front.gate().seal("", &json),
        format!("{data}."),
        data.to_owned(),
    ] {
        browser.jar.insert("otpgate_flow".into(), forged.clone());
        let answer = browser
            .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{forged}");
        assert!(!session_set(&answer));
    }

    // Ann's own flow still works, and only once: the flow cookie is cleared with it.
    browser.jar = ann;
    let signed_in = browser
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        body(&signed_in)
    );
    assert!(session_set(&signed_in));
    assert!(!browser.jar.contains_key("otpgate_flow"));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

#[tokio::test]
async fn login_csrf_finds_no_flow_to_ride() {
    // The attacker signs in to their own account up to the code, and keeps the form.
    let mut attacker = browser();
    let code = attacker
        .code_for("mallory@example.com", "/auth/sign-in")
        .await;
    let csrf = attacker.code_csrf().await;
    let flow = attacker.jar["otpgate_flow"].clone();
    let page = attacker.get("/auth/code").await;
    let set_cookie = page.headers.get_all("set-cookie").iter().count();
    assert_eq!(set_cookie, 0, "showing the code form sets nothing");

    // The flow cookie never travels on another site's request, nor reaches a script.
    let start = attacker.get("/auth/sign-in").await;
    let cookie = start.headers["set-cookie"]
        .to_str()
        .expect("text")
        .to_owned();
    for attribute in [
        "; Path=/auth;",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Secure",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }

    // The victim's browser posts the attacker's form from another site: no flow cookie
    // comes with it (SameSite=Strict), or the victim's own flow does.
    let mut victim = browser();
    victim.front = attacker.front.clone();
    let forged = victim
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!session_set(&forged));
    victim.get("/auth/sign-in").await;
    let forged = victim
        .post("/auth/code", &[("code", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!session_set(&forged));
    assert_ne!(victim.jar.get("otpgate_flow"), Some(&flow));
}

#[tokio::test]
async fn a_sign_in_link_is_spent_only_by_its_button_and_names_only_the_configured_host() {
    let pages = PageSettings {
        sign_in_links: true,
        public_url: Some("https://app.example.com".into()),
        ..PageSettings::default()
    };
    let mut browser = browser_with(pages);
    // A forged Host header does not reach the link.
    browser.host = "evil.com";
    let message = browser
        .send_to("ann@example.com", "/auth/sign-in?return=%2Fdocs")
        .await;
    let link = message.link.expect("a link").expose().to_owned();
    let path = link
        .strip_prefix("https://app.example.com/auth/link?")
        .map(|query| format!("/auth/link?{query}"))
        .unwrap_or_else(|| panic!("{link}"));
    assert!(!link.contains("evil"), "{link}");

    // A mail scanner follows the link any number of times: nothing is spent or set but
    // the flow, and nothing leaks by Referer.
    let mut scanner = browser_with(PageSettings::default());
    scanner.front = browser.front.clone();
    for _ in 0..5 {
        let page = scanner.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", body(&page));
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert!(!session_set(&page));
    }

    // The person presses the button: signed in, back at the return URL.
    let mut person = browser_with(PageSettings::default());
    person.front = browser.front.clone();
    let page = person.get(&path).await;
    let fields: Vec<(String, String)> = ["e", "t", "r", "code", "csrf"]
        .iter()
        .map(|name| ((*name).to_owned(), hidden(&page, name)))
        .collect();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signed_in = person.post("/auth/link", &fields).await;
    assert_signed_in(&signed_in, "/docs");
}

fn admin_writes_only() -> Vec<ProtectRule> {
    let mut admin = ProtectRule::prefix("/admin/");
    admin.methods = vec![Method::POST, Method::DELETE];
    let mut reports = ProtectRule::prefix("/reports/");
    reports.methods = vec![Method::GET];
    vec![admin, reports]
}

fn method(text: &str) -> Method {
    Method::from_bytes(text.as_bytes()).expect("a method token")
}

#[test]
fn methods_spelled_in_lower_case_are_guarded_like_their_capitals() {
    // Servers such as Werkzeug (Flask) upper-case the method before routing: `post`
    // reaches the app's POST handler, so a rule for POST must guard it.
    let rules = admin_writes_only();
    for (spelled, path, rule) in [
        ("post", "/admin/users", Some(0)),
        ("Post", "/admin/users", Some(0)),
        ("delete", "/admin/users/1", Some(0)),
        ("get", "/reports/q1", Some(1)),
        ("head", "/reports/q1", Some(1)),
        ("HEAD", "/reports/q1", Some(1)),
        ("GET", "/admin/users", None),
        ("put", "/reports/q1", None),
        ("options", "/admin/users", None),
        // A method the gate cannot read is guarded wherever a rule lists methods.
        ("PROPFIND", "/admin/users", Some(0)),
        ("MKCOL", "/reports/q1", Some(1)),
        ("purge", "/reports/q1", Some(1)),
        ("PROPFIND", "/public", None),
    ] {
        assert_eq!(
            rule_for(&rules, &method(spelled), path, false),
            rule,
            "{spelled} {path}"
        );
    }
    let front = guarding(rules).front;
    let target = front
        .canonical_target(&method("post"), b"/admin/users")
        .expect("a target");
    assert_eq!(
        front.route(&method("post"), &target),
        Route::Upstream { rule: Some(0) }
    );
}

/// Asks forward-auth about a request, from `peer`.
async fn check(browser: &Browser, peer: &str, headers: &[(&str, &str)]) -> GateResponse {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a name"),
            HeaderValue::from_str(value).expect("a value"),
        );
    }
    browser
        .raw(&Method::GET, "/auth/check", &map, "", Some(peer))
        .await
}

#[tokio::test]
async fn forward_auth_reads_only_what_a_proxy_writes() {
    let mut rules = admin_writes_only();
    rules.push(ProtectRule::prefix("/api/"));
    let browser = guarding(rules);
    let proxy = "10.0.0.1";
    let nav = [("accept", "text/html"), ("sec-fetch-mode", "navigate")];
    let ask = |method: &'static str, uri: &'static str| {
        vec![("x-forwarded-method", method), ("x-forwarded-uri", uri)]
    };

    // Forged descriptions, from the trusted proxy: refused, never passed.
    let long = format!("/api/{}", "a".repeat(60_000));
    let long: &'static str = Box::leak(long.into_boxed_str());
    for headers in [
        ask("GET", "api/x"),
        ask("GET", "*"),
        ask("GET", ""),
        ask("GET", "/api/%2Fx"),
        ask("GET", "/api/..%2f..%2fx"),
        ask("GET", "/../api/x"),
        ask("G ET", "/api/x"),
        ask("", "/api/x"),
        vec![("x-forwarded-method", "GET")],
        vec![("x-forwarded-uri", "/public")],
        vec![
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/public"),
            ("x-forwarded-uri", "/api/x"),
        ],
        vec![
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/public"),
            ("x-original-uri", "/api/x"),
        ],
        vec![
            ("x-original-method", "GET"),
            ("x-original-uri", "/public"),
            ("x-forwarded-method", "POST"),
        ],
    ] {
        let answer = check(&browser, proxy, &headers).await;
        assert!(
            answer.status == StatusCode::FORBIDDEN || answer.status == StatusCode::UNAUTHORIZED,
            "{headers:?}: {}",
            answer.status
        );
        assert!(answer.headers.get("x-auth-subject").is_none());
    }
    let answer = check(&browser, proxy, &ask("GET", long)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    // An absolute URI is judged, and returned to, by its path: never its host.
    let mut headers = ask("GET", "http://evil.com/api/x?y=1");
    headers.extend(nav);
    let answer = check(&browser, proxy, &headers).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/auth/sign-in?return=%2Fapi%2Fx%3Fy%3D1");
    assert!(answer.headers.get("set-cookie").is_none());

    // Methods the app reads as a guarded one are guarded.
    for (spelled, uri) in [
        ("post", "/admin/x"),
        ("delete", "/admin/x"),
        ("head", "/reports/q"),
        ("PROPFIND", "/reports/q"),
        ("MOVE", "/admin/x"),
    ] {
        let answer = check(&browser, proxy, &ask(spelled, uri)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{spelled} {uri}");
    }

    // A peer the gate does not trust is not told anything, whatever it claims.
    let mut headers = ask("GET", "/public");
    headers.push(("x-forwarded-for", proxy));
    let answer = check(&browser, "10.0.0.2", &headers).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

/// The status of `raw` sent to `base` (`http://127.0.0.1:port`), read to the connection's
/// close.
async fn raw_status(base: &str, raw: &str) -> u16 {
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .expect("a loopback address");
    // The limit guards against a hang, not a timed assertion: every answer here is
    // immediate.
    let reply = exchange(
        Ipv4Addr::LOCALHOST,
        addr.port(),
        raw.as_bytes(),
        Duration::from_secs(30),
    )
    .await
    .expect("connects and sends");
    let text = String::from_utf8_lossy(&reply);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_case_write_never_reaches_the_app_unsigned() {
    for form in [Form::Tower, Form::Pingora] {
        let front = guarding(admin_writes_only()).front;
        let (base, calls): (String, AppCalls) = start_form(form, front).await;
        for method in ["post", "Post", "delete", "POST", "PROPPATCH", "BREW"] {
            let request = format!(
                "{method} /admin/users HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            let status = raw_status(&base, &request).await;
            assert!(
                status == 401 || status == 400 || status == 405,
                "{method} via {form:?}: {status}"
            );
        }
        assert_eq!(
            calls.count(),
            0,
            "an unsigned write reached the app via {form:?}"
        );
        // The control: a read there is not guarded, and reaches the app.
        let status = raw_status(
            &base,
            "GET /admin/users HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "via {form:?}");
        assert_eq!(calls.count(), 1);
    }
}

#[tokio::test]
async fn junk_is_refused_never_answered_5xx() {
    let browser = browser();
    let sealed = browser
        .front
        .gate()
        .seal("pages.flow", b"{\"n\":1,\"r\":[],\"e\":\"x\"}");
    let wrong_types = format!("otpgate_flow={sealed}");
    let many = vec!["otpgate_flow=a.b"; 200].join("; ");
    let huge = format!("otpgate_flow={}", "A".repeat(30_000));
    let cookies: [&[u8]; 6] = [
        b"otpgate_flow=\xff\xfe",
        b"otpgate_flow",
        b"otpgate_flow==.=.",
        wrong_types.as_bytes(),
        many.as_bytes(),
        huge.as_bytes(),
    ];
    let bodies: [&[u8]; 5] = [
        b"identifier=%FF%FE&csrf=%C0%AF&return=%00",
        b"\xff\xfe\x00=\x01",
        b"csrf&csrf=&csrf=x&identifier",
        b"code=%F0%9F%92%A9&csrf=x",
        b"=&&&=&",
    ];
    for page in ["sign-in", "code", "resend", "sign-out", "link"] {
        for cookie in cookies {
            for body_bytes in bodies {
                let mut headers = HeaderMap::new();
                headers.insert("host", HeaderValue::from_static("app.example.com"));
                headers.insert(
                    "content-type",
                    HeaderValue::from_static("application/x-www-form-urlencoded; charset=x"),
                );
                headers.insert("cookie", HeaderValue::from_bytes(cookie).expect("a value"));
                headers.insert(
                    "accept-language",
                    HeaderValue::from_static("*;q=x, fr-;;, -"),
                );
                let body_text = String::from_utf8_lossy(body_bytes);
                for (method, target) in [
                    (Method::POST, format!("/auth/{page}")),
                    (
                        Method::GET,
                        format!("/auth/{page}?return=%FF&tenant=%00&t=&e=%40&code=&r=%0A"),
                    ),
                    (Method::PUT, format!("/auth/{page}")),
                ] {
                    let answer = browser
                        .raw(&method, &target, &headers, &body_text, None)
                        .await;
                    assert!(
                        !answer.status.is_server_error(),
                        "{method} {target} with {:?}: {}",
                        String::from_utf8_lossy(cookie),
                        answer.status
                    );
                    assert!(!session_set(&answer), "{method} {target}");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_page_wears_only_its_own_flows_tenant() {
    let pages = PageSettings {
        branding: vec![Branding {
            tenant: "acme".into(),
            title: Some("Acme Bank".into()),
            ..Branding::default()
        }],
        ..PageSettings::default()
    };
    let mut browser = browser_on(pages, |builder| {
        builder
            .tenant(otpgate::gate::Tenant::new("default"))
            .tenant(otpgate::gate::Tenant::new("acme"))
            .default_tenant("default")
    });
    // A sign-in to the default tenant cannot be dressed as Acme's by a stray `t`.
    let page = browser.get("/auth/sign-in?t=acme").await;
    assert_eq!(hidden(&page, "tenant"), "");
    assert!(!body(&page).contains("Acme Bank"), "{}", body(&page));
    let code = browser.get("/auth/code?tenant=acme").await;
    assert!(!body(&code).contains("Acme Bank"), "{}", body(&code));
    // Acme's own sign-in, and its flow's later steps, are Acme's.
    let page = browser.get("/auth/sign-in?tenant=acme").await;
    assert_eq!(hidden(&page, "tenant"), "acme");
    assert!(body(&page).contains("Acme Bank"));
    let csrf = hidden(&page, "csrf");
    let sent = browser
        .post(
            "/auth/sign-in?tenant=default",
            &[("identifier", "ann@example.com"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", body(&sent));
    let code = browser.get("/auth/code").await;
    assert!(body(&code).contains("Acme Bank"), "{}", body(&code));
}

#[tokio::test]
async fn look_alike_emails_and_numbers_do_not_pass_an_identifier_rule() {
    let mut staff = ProtectRule::prefix("/staff/");
    staff.email_domains = vec!["example.com".into()];
    staff.phone_countries = vec!["44".into()];
    let front = guarding(vec![staff]).front;
    let target = front
        .canonical_target(&Method::GET, b"/staff/x")
        .expect("a target");
    for (email, phone, passes) in [
        (Some("ann@example.com"), None, true),
        (Some("ann@sub.example.com"), None, false),
        (Some("ann@example.com.evil.com"), None, false),
        (Some("ann@evil-example.com"), None, false),
        (Some("ann@xn--exmple-cua.com"), None, false),
        (Some("ann@example.com."), None, false),
        (Some("example.com@evil.com"), None, false),
        (None, Some("+447700900123"), true),
        (None, Some("+14155550100"), false),
        (None, Some("+4915112345678"), false),
        (None, Some("+4"), false),
    ] {
        let session = front
            .gate()
            .start_session(&otpgate::token::Subject {
                id: "someone".into(),
                email: email.map(str::to_owned),
                phone: phone.map(str::to_owned),
                tenant: "default".into(),
            })
            .expect("a session");
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", session.access.token)).expect("text"),
        );
        let plan = front
            .plan_upstream(&Method::GET, &target, &headers, None, Some(0))
            .await;
        match plan {
            Ok(plan) => {
                assert!(passes, "{email:?} {phone:?} passed");
                assert!(plan.identity.is_some());
            }
            Err(refusal) => {
                assert!(!passes, "{email:?} {phone:?} refused");
                assert_eq!(refusal.status, StatusCode::FORBIDDEN, "{email:?} {phone:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_tossed_flow_cookie_neither_hides_the_browsers_own_nor_stands_for_it() {
    let mut browser = browser();
    // The attacker's own genuine flow, which a sibling subdomain could set for this site.
    let tossed_page = browser.get("/auth/sign-out").await;
    let tossed_csrf = hidden(&tossed_page, "csrf");
    let tossed = browser.jar.remove("otpgate_flow").expect("a flow");

    let code = browser
        .code_for("ann@example.com", "/auth/sign-in?return=%2Fdocs")
        .await;
    let csrf = browser.code_csrf().await;
    let own = browser.jar["otpgate_flow"].clone();
    let post = |cookie: String, csrf: String| {
        let front = &browser;
        let code = code.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static("app.example.com"));
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            headers.insert("cookie", HeaderValue::from_str(&cookie).expect("text"));
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs([("code", code.as_str()), ("csrf", csrf.as_str())])
                .finish();
            front
                .raw(&Method::POST, "/auth/code", &headers, &body, None)
                .await
        }
    };
    // The tossed flow's nonce never stands for the browser's flow.
    let refused = post(format!("otpgate_flow={own}"), tossed_csrf.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!session_set(&refused));
    // Sent first (a longer path), the tossed flow does not hide the browser's own.
    let both = format!("otpgate_flow={tossed}; otpgate_flow={own}");
    let signed_in = post(both, csrf).await;
    assert_signed_in(&signed_in, "/docs");
}
