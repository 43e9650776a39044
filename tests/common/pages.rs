//! A browser (or an attacker's client) in front of the sign-in pages, driven through
//! `Front::handle`: a cookie jar, forms read back from the HTML, codes taken from a
//! capturing sender, on a manual clock.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use otpgate::Gate;
use otpgate::delivery::Message;
use otpgate::gate::GateBuilder;
use otpgate::http::{Front, GateResponse, HttpSettings, PageSettings, RequestView, Route};
use otpgate::otp::{ManualClock, ServerSecret, Timestamp};
use tokio::sync::mpsc;

use super::{capture, email_and_sms, next_message};

/// A browser in front of a gate: its cookies, its Host header and the messages the gate
/// sent.
pub struct Browser {
    pub front: Front,
    pub clock: ManualClock,
    pub inbox: mpsc::UnboundedReceiver<Message>,
    pub jar: BTreeMap<String, String>,
    /// The Host header of every request from the jar.
    pub host: &'static str,
    /// Every `Set-Cookie` of the flow cookie seen, for the replace-never-add check.
    pub flow_cookies: Vec<String>,
}

/// A gate on a manual clock that delivers every code, by email and SMS, to its inbox;
/// `configure` adds to it (tenants, limits).
pub fn gate_with(
    configure: impl FnOnce(GateBuilder) -> GateBuilder,
) -> (Gate, ManualClock, mpsc::UnboundedReceiver<Message>) {
    let clock = ManualClock::starting_at(Timestamp(1_700_000_000_000));
    let (sender, inbox) = capture();
    let builder = Gate::builder()
        .clock(Arc::new(clock.clone()))
        .secret(ServerSecret::new(vec![9; 32]).expect("a valid secret"))
        .senders(email_and_sms(sender));
    let gate = configure(builder).build().expect("a gate");
    (gate, clock, inbox)
}

/// A browser in front of a gate served with `http`, `configure` adding to the gate.
pub fn browser_for(
    http: HttpSettings,
    configure: impl FnOnce(GateBuilder) -> GateBuilder,
) -> Browser {
    let (gate, clock, inbox) = gate_with(configure);
    Browser {
        front: Front::new(gate, http),
        clock,
        inbox,
        jar: BTreeMap::new(),
        host: "app.example.com",
        flow_cookies: Vec::new(),
    }
}

/// A browser in front of a gate serving `pages`, `configure` adding to the gate.
pub fn browser_on(
    pages: PageSettings,
    configure: impl FnOnce(GateBuilder) -> GateBuilder,
) -> Browser {
    let http = HttpSettings {
        pages: Some(pages),
        ..HttpSettings::default()
    };
    browser_for(http, configure)
}

/// A browser in front of a gate serving `pages`.
pub fn browser_with(pages: PageSettings) -> Browser {
    browser_on(pages, |builder| builder)
}

/// A browser in front of a gate serving the pages as they come.
pub fn browser() -> Browser {
    browser_with(PageSettings::default())
}

impl Browser {
    /// `method target` with `body` (a form when it is a POST), the jar's cookies and the
    /// Host header, from 127.0.0.1; the cookies set are kept. Every answer carries the
    /// page headers.
    pub async fn request(&mut self, method: Method, target: &str, body: &str) -> GateResponse {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static(self.host));
        if method == Method::POST {
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            headers.insert(
                "cookie",
                HeaderValue::from_str(&cookies.join("; ")).expect("cookie text"),
            );
        }
        let client_ip = Some(IpAddr::from([127, 0, 0, 1]));
        let response = self
            .send(&method, target, &headers, body, None, client_ip)
            .await;
        assert_page_headers(&response);
        self.take_cookies(&response);
        response
    }

    /// One request as given, cookies and all, without the jar, from `peer` (also the
    /// client's address) or from nowhere said.
    pub async fn raw(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &str,
        peer: Option<&str>,
    ) -> GateResponse {
        let peer = peer.map(|p| p.parse().expect("an address"));
        self.send(method, target, headers, body, peer, peer).await
    }

    async fn send(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &str,
        peer: Option<IpAddr>,
        client_ip: Option<IpAddr>,
    ) -> GateResponse {
        let canonical = self
            .front
            .canonical_target(method, target.as_bytes())
            .expect("a readable target");
        let Route::Endpoint(route) = self.front.route(method, &canonical) else {
            panic!("{target} is not a gate endpoint");
        };
        let view = RequestView {
            method,
            path: canonical.path(),
            headers,
            query: canonical.query(),
            client_ip,
            peer,
            authority: None,
        };
        let response = self
            .front
            .handle(route, &view, Bytes::from(body.to_owned()))
            .await;
        let flow_cookies = response
            .headers
            .get_all("set-cookie")
            .iter()
            .filter(|v| v.to_str().is_ok_and(|v| v.starts_with("otpgate_flow=")))
            .count();
        assert!(flow_cookies <= 1, "one flow cookie per answer at most");
        response
    }

    fn take_cookies(&mut self, response: &GateResponse) {
        for value in response.headers.get_all("set-cookie") {
            let text = value.to_str().expect("cookie text").to_owned();
            let (pair, _) = text.split_once(';').expect("cookie attributes");
            let (name, value) = pair.split_once('=').expect("name=value");
            if name == "otpgate_flow" {
                self.flow_cookies.push(text.clone());
            }
            if text.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    pub async fn get(&mut self, target: &str) -> GateResponse {
        self.request(Method::GET, target, "").await
    }

    pub async fn post(&mut self, target: &str, fields: &[(&str, &str)]) -> GateResponse {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.request(Method::POST, target, &body).await
    }

    /// The next message the gate sent.
    pub async fn message(&mut self) -> Message {
        next_message(&mut self.inbox).await
    }

    /// Sign-in up to the code form: a code is sent to `identifier` from the sign-in page
    /// at `target`. Returns the CSRF nonce of the flow.
    pub async fn send_code_to(&mut self, identifier: &str, target: &str) -> String {
        let page = self.get(target).await;
        assert_eq!(page.status, StatusCode::OK, "{}", body(&page));
        let csrf = hidden(&page, "csrf");
        let sent = self
            .post(
                "/auth/sign-in",
                &[("identifier", identifier), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", body(&sent));
        assert_eq!(location(&sent), "/auth/code");
        csrf
    }

    /// Starts a sign-in at `target` and sends a code to `identifier`: the message.
    pub async fn send_to(&mut self, identifier: &str, target: &str) -> Message {
        self.send_code_to(identifier, target).await;
        self.message().await
    }

    /// Starts a sign-in at `target` and sends a code to `identifier`: the code.
    pub async fn code_for(&mut self, identifier: &str, target: &str) -> String {
        self.send_to(identifier, target)
            .await
            .code
            .expose()
            .to_owned()
    }

    /// The csrf of the code form now.
    pub async fn code_csrf(&mut self) -> String {
        let form = self.get("/auth/code").await;
        assert_eq!(form.status, StatusCode::OK, "{}", body(&form));
        hidden(&form, "csrf")
    }
}

pub fn body(response: &GateResponse) -> String {
    String::from_utf8(response.body.to_vec()).expect("UTF-8")
}

/// The `Location` header; empty when there is none.
pub fn location(response: &GateResponse) -> &str {
    response
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The header `name`, which must be there.
pub fn header<'r>(response: &'r GateResponse, name: &str) -> &'r str {
    response
        .headers
        .get(HeaderName::from_bytes(name.as_bytes()).expect("a header name"))
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .expect("header text")
}

/// Whether the answer sets a cookie other than the flow's: a session.
pub fn session_set(response: &GateResponse) -> bool {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| !v.starts_with("otpgate_flow=")))
}

/// `response` signs in: a `303` to `to` that sets the session cookie.
pub fn assert_signed_in(response: &GateResponse, to: &str) {
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", body(response));
    assert_eq!(location(response), to);
    assert!(session_set(response), "no session cookie");
}

/// The value of the hidden input `name`, as written in the HTML (escapes kept).
pub fn hidden_raw(response: &GateResponse, name: &str) -> String {
    let html = body(response);
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = start + html[start..].find('"').expect("a closing quote");
    html[start..end].to_owned()
}

/// The value of the hidden input `name` in the page, its HTML escapes undone.
pub fn hidden(response: &GateResponse, name: &str) -> String {
    hidden_raw(response, name)
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        // Last, so that an escaped `&` does not start another escape.
        .replace("&amp;", "&")
}

/// `value` percent-encoded as a form or query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The headers every page answer carries: HTML that runs no script, cannot be framed or
/// stored, and sends no Referer; its one style carries the CSP nonce.
pub fn assert_page_headers(response: &GateResponse) {
    assert_eq!(header(response, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(response, "cache-control"), "no-store");
    assert_eq!(header(response, "x-frame-options"), "DENY");
    assert_eq!(header(response, "referrer-policy"), "no-referrer");
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
    let csp = header(response, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'nonce-",
        "img-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    let html = body(response);
    assert!(!html.contains("<script"), "{html}");
    if !html.is_empty() {
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("a nonce");
        assert!(
            html.contains(&format!("<style nonce=\"{nonce}\">")),
            "{html}"
        );
    }
}
