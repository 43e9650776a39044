//! Route policy, judged alike in every form of the gate: one table of cases (the rule,
//! the caller, the request, what comes back) run through the tower layer, the pingora
//! proxy and forward-auth, plus the `[[protect]]` mistakes a config load refuses.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use otpgate::config::Config;
use otpgate::http::Front;
use otpgate::otp::ManualClock;
use otpgate::token::Subject;
use otpgate::tower::OtpLayer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::raw::{RawReply as Reply, parse_reply};
use common::{AppCalls, echo_app, serve, start_proxy};

/// One config, several rules: every case is judged against all of them at once, so a
/// case also checks that the right rule is the one that applies.
const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[delivery.email]
kind = "console"
[delivery.sms]
kind = "console"

[[tenants]]
id = "default"
[[tenants]]
id = "acme"

[[protect]]
prefix = "/api/"

[[protect]]
prefix = "/api/keys/"
methods = ["POST"]
max_session_age = "5m"

[[protect]]
prefix = "/acme/"
tenants = ["acme"]

[[protect]]
prefix = "/staff/"
email_domains = ["example.com"]
emails = ["Boss@Other.org"]

[[protect]]
prefix = "/uk/"
phone_countries = ["+44"]

[[protect]]
prefix = "/admin/"
methods = ["POST", "DELETE"]
max_session_age = "5m"

[[protect]]
prefix = "/reports/"
methods = ["GET"]

[[protect]]
prefix = "/vault/"
max_session_age = "5m"
"#;

/// A signed-in account, and how long ago it signed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Who {
    id: &'static str,
    tenant: &'static str,
    email: Option<&'static str>,
    phone: Option<&'static str>,
    signed_in_secs_ago: u64,
}

const fn by_email(id: &'static str, tenant: &'static str, email: &'static str) -> Who {
    Who {
        id,
        tenant,
        email: Some(email),
        phone: None,
        signed_in_secs_ago: 0,
    }
}

const fn by_phone(id: &'static str, phone: &'static str) -> Who {
    Who {
        id,
        tenant: "default",
        email: None,
        phone: Some(phone),
        signed_in_secs_ago: 0,
    }
}

const fn ago(who: Who, id: &'static str, secs: u64) -> Who {
    Who {
        id,
        signed_in_secs_ago: secs,
        ..who
    }
}

const ANN: Who = by_email("ann", "default", "ann@example.com");
const ZOE: Who = by_email("zoe", "acme", "zoe@acme.test");
const BOSS: Who = by_email("boss", "default", "boss@other.org");
const EVE: Who = by_email("eve", "default", "eve@other.org");
const SAM: Who = by_email("sam", "default", "sam@mail.example.com");
const UK: Who = by_phone("uk", "+447700900123");
const US: Who = by_phone("us", "+14155550100");
/// Exactly `max_session_age` (5 minutes) ago: still fresh enough.
const ANN_300S: Who = ago(ANN, "ann-300s", 300);
const ANN_301S: Who = ago(ANN, "ann-301s", 301);
const ANN_10M: Who = ago(ANN, "ann-10m", 600);
/// Past the token's own lifetime (1 hour).
const ANN_2H: Who = ago(ANN, "ann-2h", 7200);

/// Who makes the request.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Anonymous,
    /// A bearer token that is not a token of this gate.
    Garbage,
    /// The account's access token as `Authorization: Bearer`.
    Bearer(Who),
    /// The account's access token as the session cookie.
    Cookie(Who),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("no token"),
            Caller::Garbage => f.write_str("a garbage token"),
            Caller::Bearer(who) => write!(f, "the bearer token of {}", who.id),
            Caller::Cookie(who) => write!(f, "the session cookie of {}", who.id),
        }
    }
}

impl Caller {
    fn who(self) -> Option<Who> {
        match self {
            Caller::Bearer(who) | Caller::Cookie(who) => Some(who),
            Caller::Anonymous | Caller::Garbage => None,
        }
    }
}

use Caller::{Anonymous, Bearer, Cookie, Garbage};

/// What kind of client asks.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// An API client: `Accept: application/json`.
    Api,
    /// An older browser navigating: `Accept: text/html`, no fetch metadata.
    Page,
    /// A browser navigating: `Sec-Fetch-Mode: navigate`, `Sec-Fetch-Dest: document`.
    Navigate,
    /// A script's fetch that accepts HTML: `Sec-Fetch-Mode: cors`.
    Fetch,
}

use Client::{Api, Fetch, Navigate, Page};

impl Client {
    fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Client::Api => &[("Accept", "application/json")],
            Client::Page => &[("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")],
            Client::Navigate => &[
                ("Sec-Fetch-Mode", "navigate"),
                ("Sec-Fetch-Dest", "document"),
            ],
            Client::Fetch => &[
                ("Accept", "text/html"),
                ("Sec-Fetch-Mode", "cors"),
                ("Sec-Fetch-Dest", "empty"),
            ],
        }
    }
}

/// What the case must come to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The app is reached with this `X-Auth-Subject` (none: no identity at all);
    /// forward-auth answers 200 with the same identity headers.
    App(Option<&'static str>),
    /// The JSON refusal: status and error code.
    Refused(u16, &'static str),
    /// A 303 to this sign-in address.
    SignIn(&'static str),
    /// A target that cannot be read one way only: 400 `invalid_path` in front of the app;
    /// forward-auth, which may answer only 2xx, 401 and 403, says 403 `invalid_path`.
    BadTarget,
}

use Expect::{App, BadTarget, Refused, SignIn};

struct Case {
    name: &'static str,
    caller: Caller,
    method: &'static str,
    target: &'static str,
    client: Client,
    expect: Expect,
}

const fn case(
    name: &'static str,
    caller: Caller,
    method: &'static str,
    target: &'static str,
    client: Client,
    expect: Expect,
) -> Case {
    Case {
        name,
        caller,
        method,
        target,
        client,
        expect,
    }
}

const UNAUTHORIZED: Expect = Refused(401, "unauthorized");
const REAUTHENTICATE: Expect = Refused(401, "reauthentication_required");
const FORBIDDEN: Expect = Refused(403, "forbidden");

/// The table: every case is run, and asserted, in all three forms. One row a case.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // `/api/`: any valid session.
    case("api, no token", Anonymous, "GET", "/api/me", Api, UNAUTHORIZED),
    case("api, garbage token", Garbage, "GET", "/api/me", Api, UNAUTHORIZED),
    case("api, default tenant", Bearer(ANN), "GET", "/api/me", Api, App(Some("ann"))),
    case("api, acme tenant", Bearer(ZOE), "GET", "/api/me", Api, App(Some("zoe"))),
    case("api, session cookie", Cookie(ANN), "GET", "/api/me", Page, App(Some("ann"))),
    case("api, expired token", Bearer(ANN_2H), "GET", "/api/me", Api, UNAUTHORIZED),
    case("api, old session, no max age", Bearer(ANN_10M), "GET", "/api/me", Api, App(Some("ann-10m"))),
    case("api, page, no token", Anonymous, "GET", "/api/me", Page, SignIn("/auth/sign-in?return=%2Fapi%2Fme")),
    case("api, navigate, no token", Anonymous, "GET", "/api/me", Navigate, SignIn("/auth/sign-in?return=%2Fapi%2Fme")),
    case("api, navigate, garbage token", Garbage, "GET", "/api/me?tab=2", Navigate, SignIn("/auth/sign-in?return=%2Fapi%2Fme%3Ftab%3D2")),
    case("api, navigate, expired cookie", Cookie(ANN_2H), "GET", "/api/me", Navigate, SignIn("/auth/sign-in?return=%2Fapi%2Fme")),
    case("api, fetch accepting html, no token", Anonymous, "GET", "/api/me", Fetch, UNAUTHORIZED),
    case("api, POST accepting html, no token", Anonymous, "POST", "/api/me", Page, UNAUTHORIZED),
    case("api, upper case, no token", Anonymous, "GET", "/API/me", Api, UNAUTHORIZED),
    case("api, dot segments, no token", Anonymous, "GET", "/public/../api/me", Api, UNAUTHORIZED),
    case("apix is not under /api/", Anonymous, "GET", "/apix", Api, App(None)),
    // `/api/keys/`: POST only, fresh sessions only; other methods fall back to `/api/`.
    case("keys, POST, fresh", Bearer(ANN), "POST", "/api/keys/new", Api, App(Some("ann"))),
    case("keys, POST, 10 minutes old", Bearer(ANN_10M), "POST", "/api/keys/new", Api, REAUTHENTICATE),
    case("keys, GET, 10 minutes old", Bearer(ANN_10M), "GET", "/api/keys/list", Api, App(Some("ann-10m"))),
    case("keys, GET, no token", Anonymous, "GET", "/api/keys/list", Api, UNAUTHORIZED),
    // `/acme/`: acme's sessions only.
    case("acme, acme tenant", Bearer(ZOE), "GET", "/acme/x", Api, App(Some("zoe"))),
    case("acme, default tenant", Bearer(ANN), "GET", "/acme/x", Api, FORBIDDEN),
    case("acme, default tenant navigating", Cookie(ANN), "GET", "/acme/x", Navigate, FORBIDDEN),
    case("acme, no token", Anonymous, "GET", "/acme/x", Api, UNAUTHORIZED),
    case("acme, navigate, no token", Anonymous, "GET", "/acme/x", Navigate, SignIn("/auth/sign-in?return=%2Facme%2Fx&tenant=acme")),
    case("acme, page with query, no token", Anonymous, "GET", "/acme/x?next=1", Page, SignIn("/auth/sign-in?return=%2Facme%2Fx%3Fnext%3D1&tenant=acme")),
    case("acme upper case, default tenant", Bearer(ANN), "GET", "/ACME/x", Api, FORBIDDEN),
    case("acme upper case, acme tenant", Bearer(ZOE), "GET", "/ACME/x", Api, App(Some("zoe"))),
    case("acme via dot segments, default tenant", Bearer(ANN), "GET", "/public/../acme/x", Api, FORBIDDEN),
    case("acme via dot segments, navigate, no token", Anonymous, "GET", "/public/../acme/x", Navigate, SignIn("/auth/sign-in?return=%2Facme%2Fx&tenant=acme")),
    case("acme via encoded dot segments, default tenant", Bearer(ANN), "GET", "/x/%2e%2e/acme/x", Api, FORBIDDEN),
    case("acme via doubled slashes, default tenant", Bearer(ANN), "GET", "//acme//x", Api, FORBIDDEN),
    case("acme via an encoded letter, default tenant", Bearer(ANN), "GET", "/%61cme/x", Api, FORBIDDEN),
    case("acme exact, default tenant", Bearer(ANN), "GET", "/acme", Api, FORBIDDEN),
    case("acme exact, acme tenant", Bearer(ZOE), "GET", "/acme", Api, App(Some("zoe"))),
    case("acmeish is not under /acme/", Bearer(ANN), "GET", "/acmeish", Api, App(Some("ann"))),
    case("acme above the root", Bearer(ANN), "GET", "/../acme/x", Api, BadTarget),
    // `/staff/`: example.com addresses, and one named outsider.
    case("staff, example.com", Bearer(ANN), "GET", "/staff/x", Api, App(Some("ann"))),
    case("staff, the named outsider", Bearer(BOSS), "GET", "/staff/x", Api, App(Some("boss"))),
    case("staff, another outsider", Bearer(EVE), "GET", "/staff/x", Api, FORBIDDEN),
    case("staff, a subdomain", Bearer(SAM), "GET", "/staff/x", Api, FORBIDDEN),
    case("staff, a phone", Bearer(UK), "GET", "/staff/x", Api, FORBIDDEN),
    case("staff, acme tenant, other domain", Bearer(ZOE), "GET", "/staff/x", Api, FORBIDDEN),
    case("staff, no token", Anonymous, "GET", "/staff/x", Api, UNAUTHORIZED),
    // `/uk/`: UK phones only.
    case("uk, UK phone", Bearer(UK), "GET", "/uk/x", Api, App(Some("uk"))),
    case("uk, US phone", Bearer(US), "GET", "/uk/x", Api, FORBIDDEN),
    case("uk, an email", Bearer(ANN), "GET", "/uk/x", Api, FORBIDDEN),
    case("uk, navigate, US phone", Cookie(US), "GET", "/uk/x", Navigate, FORBIDDEN),
    // `/admin/`: POST and DELETE, signed in at most 5 minutes ago; GET is public.
    case("admin, GET, no token", Anonymous, "GET", "/admin/x", Api, App(None)),
    case("admin, GET, 10 minutes old", Bearer(ANN_10M), "GET", "/admin/x", Api, App(Some("ann-10m"))),
    case("admin, POST, no token", Anonymous, "POST", "/admin/x", Api, UNAUTHORIZED),
    case("admin, POST, fresh", Bearer(ANN), "POST", "/admin/x", Api, App(Some("ann"))),
    case("admin, POST, 10 minutes old", Bearer(ANN_10M), "POST", "/admin/x", Api, REAUTHENTICATE),
    case("admin, POST accepting html, 10 minutes old", Cookie(ANN_10M), "POST", "/admin/x", Page, REAUTHENTICATE),
    case("admin, DELETE, 301 seconds old", Bearer(ANN_301S), "DELETE", "/admin/x", Api, REAUTHENTICATE),
    case("admin, DELETE, 300 seconds old", Bearer(ANN_300S), "DELETE", "/admin/x", Api, App(Some("ann-300s"))),
    case("admin upper case, POST, 10 minutes old", Bearer(ANN_10M), "POST", "/ADMIN/x", Api, REAUTHENTICATE),
    // `/reports/`: GET only, and so HEAD, which apps answer with their GET handlers.
    case("reports, GET, no token", Anonymous, "GET", "/reports/q1", Api, UNAUTHORIZED),
    case("reports, HEAD, no token", Anonymous, "HEAD", "/reports/q1", Api, UNAUTHORIZED),
    case("reports, HEAD, navigate, no token", Anonymous, "HEAD", "/reports/q1", Navigate, SignIn("/auth/sign-in?return=%2Freports%2Fq1")),
    case("reports, POST, no token", Anonymous, "POST", "/reports/q1", Api, App(None)),
    // `/vault/`: every method, signed in at most 5 minutes ago.
    case("vault, fresh", Bearer(ANN), "GET", "/vault/x", Api, App(Some("ann"))),
    case("vault, 10 minutes old", Bearer(ANN_10M), "GET", "/vault/x", Api, REAUTHENTICATE),
    case("vault, navigate, 10 minutes old", Cookie(ANN_10M), "GET", "/vault/x", Navigate, SignIn("/auth/sign-in?return=%2Fvault%2Fx")),
    case("vault, page, 10 minutes old", Bearer(ANN_10M), "GET", "/vault/x", Page, SignIn("/auth/sign-in?return=%2Fvault%2Fx")),
    case("vault, fetch, 10 minutes old", Bearer(ANN_10M), "GET", "/vault/x", Fetch, REAUTHENTICATE),
    // Everything else is public: the identity, when there is one, still reaches the app.
    case("public, no token", Anonymous, "GET", "/public/x", Api, App(None)),
    case("public, garbage token", Garbage, "GET", "/public/x", Api, App(None)),
    case("public, navigate, no token", Anonymous, "GET", "/public/x", Navigate, App(None)),
    case("public, signed in", Bearer(ZOE), "GET", "/public/x", Api, App(Some("zoe"))),
    case("public, expired token", Bearer(ANN_2H), "GET", "/public/x", Api, App(None)),
];

/// The three forms of the gate the table runs through.
#[derive(Clone, Copy, Debug)]
enum Form {
    Layer,
    Proxy,
    ForwardAuth,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Form::Layer => "the tower layer",
            Form::Proxy => "the pingora proxy",
            Form::ForwardAuth => "forward-auth",
        })
    }
}

/// The gate of [`CONFIG`], and a token for every account the table names, each minted
/// its `signed_in_secs_ago` before the clock's final time.
struct Fixture {
    front: Front,
    tokens: Vec<(Who, String)>,
}

impl Fixture {
    fn new() -> Fixture {
        let clock = ManualClock::starting_now();
        let config = Config::parse(CONFIG, "route_policy.toml", Path::new("."))
            .unwrap_or_else(|error| panic!("the table's config does not load: {error}"));
        let (builder, http) = config.into_parts();
        let gate = builder
            .clock(Arc::new(clock.clone()))
            .build()
            .expect("the table's gate builds");
        let front = Front::new(gate, http);
        let mut accounts: Vec<Who> = Vec::new();
        for who in CASES.iter().filter_map(|case| case.caller.who()) {
            if !accounts.contains(&who) {
                accounts.push(who);
            }
        }
        // Oldest first: the clock only moves forward.
        accounts.sort_by_key(|who| std::cmp::Reverse(who.signed_in_secs_ago));
        let oldest = accounts.first().map_or(0, |who| who.signed_in_secs_ago);
        let mut elapsed = 0;
        let mut tokens = Vec::new();
        for who in accounts {
            let due = oldest - who.signed_in_secs_ago;
            clock.advance(Duration::from_secs(due - elapsed));
            elapsed = due;
            let subject = Subject {
                id: who.id.into(),
                email: who.email.map(str::to_owned),
                phone: who.phone.map(str::to_owned),
                tenant: who.tenant.into(),
            };
            let session = front
                .gate()
                .start_session(&subject)
                .expect("a session starts");
            tokens.push((who, session.access.token));
        }
        clock.advance(Duration::from_secs(oldest - elapsed));
        Fixture { front, tokens }
    }

    fn token(&self, who: Who) -> &str {
        self.tokens
            .iter()
            .find(|(minted, _)| *minted == who)
            .map(|(_, token)| token.as_str())
            .expect("every account of the table has a token")
    }

    /// The credential header `caller` sends, if any.
    fn credential(&self, caller: Caller) -> Option<(&'static str, String)> {
        match caller {
            Caller::Anonymous => None,
            Caller::Garbage => Some(("Authorization", "Bearer not.a.token".to_owned())),
            Caller::Bearer(who) => Some(("Authorization", format!("Bearer {}", self.token(who)))),
            Caller::Cookie(who) => Some(("Cookie", format!("otpgate_session={}", self.token(who)))),
        }
    }
}

/// Runs every case of the table through `form`; fails naming each case that went
/// otherwise, and the form.
async fn run_table(form: Form) {
    let fixture = Fixture::new();
    let calls = AppCalls::default();
    let addr: SocketAddr = match form {
        Form::Layer | Form::ForwardAuth => {
            let layer = OtpLayer::new(fixture.front.clone());
            serve(echo_app(calls.clone()).layer(layer)).await
        }
        Form::Proxy => {
            let upstream = serve(echo_app(calls.clone())).await;
            let base = start_proxy(fixture.front.clone(), upstream).await;
            base.trim_start_matches("http://")
                .parse()
                .expect("the proxy's base URL names an address")
        }
    };
    let mut mismatches = Vec::new();
    for case in CASES {
        let mut headers: Vec<(&str, String)> = case
            .client
            .headers()
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        headers.extend(fixture.credential(case.caller));
        let (method, target) = match form {
            Form::Layer | Form::Proxy => (case.method, case.target),
            Form::ForwardAuth => {
                // What Caddy or Traefik send: the request's own headers, and where it went.
                headers.push(("X-Forwarded-Method", case.method.to_owned()));
                headers.push(("X-Forwarded-Uri", case.target.to_owned()));
                ("GET", "/auth/check")
            }
        };
        let before = calls.count();
        let outcome = match roundtrip(addr, method, target, &headers).await {
            Ok(reply) => check(form, case, &fixture, &reply, calls.count() - before),
            Err(error) => Err(error),
        };
        if let Err(got) = outcome {
            mismatches.push(format!(
                "case `{}` ({} {} from {:?} with {}) via {form}: expected {:?}, got {got}",
                case.name, case.method, case.target, case.client, case.caller, case.expect
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases went otherwise via {form}:\n{}",
        mismatches.len(),
        CASES.len(),
        mismatches.join("\n")
    );
}

/// Whether `reply` is what `case` expects in `form`; `app_calls`: how many requests the
/// app saw meanwhile.
fn check(
    form: Form,
    case: &Case,
    fixture: &Fixture,
    reply: &Reply,
    app_calls: usize,
) -> Result<(), String> {
    let got = || reply.describe();
    // Forward-auth only answers; the proxy in front of it forwards, never the gate.
    let expected_calls = match (form, case.expect) {
        (Form::Layer | Form::Proxy, App(_)) => 1,
        _ => 0,
    };
    if app_calls != expected_calls {
        return Err(format!(
            "the app reached {app_calls} times, not {expected_calls}; {}",
            got()
        ));
    }
    match case.expect {
        App(subject) => {
            if reply.status != 200 {
                return Err(got());
            }
            // What the app received, or what forward-auth tells the proxy to send it.
            let seen = |name: &str| -> Option<String> {
                match form {
                    Form::Layer | Form::Proxy => {
                        reply.json()?["headers"][name].as_str().map(str::to_owned)
                    }
                    Form::ForwardAuth => reply.header(name).map(str::to_owned),
                }
            };
            let who = case.caller.who().filter(|_| subject.is_some());
            let wanted = [
                ("x-auth-subject", subject.map(str::to_owned)),
                ("x-auth-tenant", who.map(|who| who.tenant.to_owned())),
                (
                    "x-auth-email",
                    who.and_then(|who| who.email).map(str::to_owned),
                ),
                (
                    "x-auth-phone",
                    who.and_then(|who| who.phone).map(str::to_owned),
                ),
                (
                    "x-otpgate-jwt",
                    who.map(|who| fixture.token(who).to_owned()),
                ),
            ];
            for (name, value) in wanted {
                let actual = seen(name);
                if actual != value {
                    return Err(format!("{name} {actual:?}, not {value:?}; {}", got()));
                }
            }
            Ok(())
        }
        Refused(status, code) => {
            // An answer to a HEAD has no body to read the code from.
            let bodiless = case.method == "HEAD" && !matches!(form, Form::ForwardAuth);
            match reply.status == status && (bodiless || reply.error().as_deref() == Some(code)) {
                true => Ok(()),
                false => Err(got()),
            }
        }
        SignIn(location) => match reply.status == 303 && reply.header("location") == Some(location)
        {
            true => Ok(()),
            false => Err(got()),
        },
        BadTarget => {
            let status = match form {
                Form::ForwardAuth => 403,
                Form::Layer | Form::Proxy => 400,
            };
            match reply.status == status && reply.error().as_deref() == Some("invalid_path") {
                true => Ok(()),
                false => Err(got()),
            }
        }
    }
}

impl Reply {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `error` code of a JSON refusal.
    fn error(&self) -> Option<String> {
        self.json()?["error"].as_str().map(str::to_owned)
    }

    fn describe(&self) -> String {
        let mut body = String::from_utf8_lossy(&self.body).into_owned();
        // The app's echo, without the token it was given: the subject and tenant tell more.
        if let Some(mut echo) = self.json()
            && let Some(headers) = echo["headers"].as_object_mut()
        {
            headers.remove("x-otpgate-jwt");
            body = echo.to_string();
        }
        let mut text = format!("status {}", self.status);
        for name in ["location", "x-auth-subject"] {
            if let Some(value) = self.header(name) {
                text.push_str(&format!(", {name}: {value}"));
            }
        }
        text.push_str(&format!(
            ", body {:?}",
            body.chars().take(300).collect::<String>()
        ));
        text
    }
}

/// Sends one request exactly as written (the target is not normalized on the way, as
/// an HTTP client library would) and reads the answer.
async fn roundtrip(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
) -> Result<Reply, String> {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(reply) = parse_reply(&raw, false, method == "HEAD") {
            return Ok(reply);
        }
        // A guard against a hang, not a timed assertion: every answer here is immediate.
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .map_err(|_| "no complete answer within 30 s".to_owned())?
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if read == 0 {
            return parse_reply(&raw, true, method == "HEAD").ok_or_else(|| {
                format!(
                    "the connection closed on an incomplete answer: {:?}",
                    String::from_utf8_lossy(&raw)
                )
            });
        }
        raw.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_through_the_tower_layer() {
    run_table(Form::Layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_through_the_pingora_proxy() {
    run_table(Form::Proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_through_forward_auth() {
    run_table(Form::ForwardAuth).await;
}

/// Forward-auth answers only the proxies in `trusted_proxies`: anyone else could learn
/// the policy, or pass a verdict off as the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_refuses_a_peer_it_does_not_trust() {
    let text = CONFIG.replace("127.0.0.1/32", "10.0.0.0/8");
    let front = Config::parse(&text, "route_policy.toml", Path::new("."))
        .expect("loads")
        .build()
        .expect("builds");
    let session = front
        .gate()
        .start_session(&Subject {
            id: "ann".into(),
            email: Some("ann@example.com".into()),
            phone: None,
            tenant: "default".into(),
        })
        .expect("a session starts");
    let calls = AppCalls::default();
    let addr = serve(echo_app(calls.clone()).layer(OtpLayer::new(front))).await;
    for (method, uri) in [
        ("GET", "/public/x"),
        ("GET", "/api/me"),
        ("POST", "/admin/x"),
    ] {
        let headers = [
            ("Authorization", format!("Bearer {}", session.access.token)),
            ("X-Forwarded-Method", method.to_owned()),
            ("X-Forwarded-Uri", uri.to_owned()),
        ];
        let reply = roundtrip(addr, "GET", "/auth/check", &headers)
            .await
            .expect("an answer");
        assert_eq!(reply.status, 403, "{method} {uri}: {}", reply.describe());
        assert_eq!(
            reply.error().as_deref(),
            Some("forbidden"),
            "{method} {uri}"
        );
        assert_eq!(reply.header("x-auth-subject"), None, "{method} {uri}");
    }
    assert_eq!(calls.count(), 0, "forward-auth never reaches the app");
}

#[test]
fn the_table_names_each_case_once_and_tries_every_rule() {
    let mut names: Vec<&str> = CASES.iter().map(|case| case.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "two cases share a name");
    let config = Config::parse(CONFIG, "route_policy.toml", Path::new(".")).expect("loads");
    for rule in &config.http.protect {
        assert!(
            CASES
                .iter()
                .any(|case| case.target.to_ascii_lowercase().starts_with(&rule.prefix)),
            "no case tries the rule for {}",
            rule.prefix
        );
    }
}

#[test]
fn protect_rules_load_as_written() {
    let config = Config::parse(CONFIG, "route_policy.toml", Path::new(".")).expect("loads");
    let rules = &config.http.protect;
    let rule = |prefix: &str| {
        rules
            .iter()
            .find(|rule| rule.prefix == prefix)
            .unwrap_or_else(|| panic!("no rule for {prefix}"))
    };
    assert_eq!(rule("/acme/").tenants, vec!["acme".to_owned()]);
    // Emails are canonical (lower case), calling codes digits only.
    assert_eq!(rule("/staff/").emails, vec!["boss@other.org".to_owned()]);
    assert_eq!(
        rule("/staff/").email_domains,
        vec!["example.com".to_owned()]
    );
    assert_eq!(rule("/uk/").phone_countries, vec!["44".to_owned()]);
    let admin = rule("/admin/");
    assert_eq!(
        admin.methods,
        vec![http::Method::POST, http::Method::DELETE]
    );
    assert_eq!(admin.max_session_age, Some(Duration::from_secs(300)));
    assert_eq!(rule("/api/").max_session_age, None);
    assert!(rule("/api/").methods.is_empty());
}

/// The error of loading [`CONFIG`] with `protect` added: it must name the file, the line
/// that holds `needle` and `key`, and quote `needle`.
fn assert_refused(protect: &str, needle: &str, key: &str) {
    let text = format!("{CONFIG}\n{protect}");
    let line = text
        .lines()
        .position(|line| line.contains(needle))
        .expect("the needle is in the text")
        + 1;
    let error = match Config::parse(&text, "policy.toml", Path::new(".")) {
        Ok(_) => panic!("`{protect}` loaded"),
        Err(error) => error.to_string(),
    };
    let place = format!("policy.toml:{line}: `{key}`");
    assert!(error.contains(&place), "{place} not in: {error}");
    assert!(error.contains(needle), "{needle} not in: {error}");
}

#[test]
fn an_unknown_tenant_is_refused_at_its_line() {
    assert_refused(
        "[[protect]]\nprefix = \"/g/\"\ntenants = [\"acme\", \"globex\"]\n",
        "globex",
        "protect.tenants",
    );
}

#[test]
fn a_lower_case_method_is_refused_at_its_line() {
    assert_refused(
        "[[protect]]\nprefix = \"/m/\"\nmethods = [\n  \"POST\",\n  \"delete\",\n]\n",
        "delete",
        "protect.methods",
    );
}

#[test]
fn a_calling_code_with_an_international_prefix_is_refused_at_its_line() {
    assert_refused(
        "[[protect]]\nprefix = \"/p/\"\nphone_countries = [\"0044\"]\n",
        "0044",
        "protect.phone_countries",
    );
}

#[test]
fn a_bad_email_is_refused_at_its_line() {
    assert_refused(
        "[[protect]]\nprefix = \"/e/\"\nemails = [\"boss@other.org\", \"not-an-email\"]\n",
        "not-an-email",
        "protect.emails",
    );
}
