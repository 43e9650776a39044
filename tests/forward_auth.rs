//! Forward-auth with real proxies. `otpgate run` reads deploy/forward-auth/otpgate.toml,
//! and nginx (deploy/forward-auth/nginx.conf) or Caddy (deploy/forward-auth/Caddyfile)
//! asks it about every request before forwarding it to a Python WSGI app; every file runs
//! as written, only its addresses changed. The app (tests/support/forward_auth_app.py, on
//! wsgiref, which folds `X_Auth_Subject` onto `X-Auth-Subject` as WSGI servers do) reports
//! the header lines it received, so each case checks what the app saw, not only what the
//! client got.
//!
//! The promise: without a session no spelling of a protected path reaches the app (a
//! browser is sent to sign in, anything else gets 401); with one, the app receives the
//! gate's identity headers; a client's own identity headers never reach it, in any
//! spelling the app folds onto the real one.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{Process, ready_port, start_listening};
use common::raw;
use common::{WebhookReceiver, free_port, gate_command, sign_in};
use serde_json::Value;

/// Who signs in.
const SUBJECT: &str = "alice@example.com";
/// Who signs in by phone.
const PHONE: &str = "+14155550123";
/// In every forged identity header value; never in a token (base64url has no `!`).
const FORGED: &str = "forged!";
/// The text Caddy 2.6 puts in a copied header the gate's answer lacks.
const PLACEHOLDER: &str = "{http.reverse_proxy.header.";
/// Where the sign-in page sends a browser that asked for `/api/x`.
const SIGN_IN_FOR_API_X: &str = "/auth/sign-in?return=%2Fapi%2Fx";

/// Forged identity headers, in the spellings apps fold onto the real ones.
const FORGED_HEADERS: &[(&str, &str)] = &[
    ("X-Auth-Subject", "admin-forged!"),
    ("X_Auth_Subject", "admin-forged!"),
    ("x-auth-subject", "admin-forged!"),
    ("X-Auth_Subject", "admin-forged!"),
    ("X.Auth.Subject", "admin-forged!"),
    ("X-Auth-Email", "admin-forged!@example.com"),
    ("X_Auth_Email", "admin-forged!@example.com"),
    ("X-Auth-Phone", "+1555forged!"),
    ("X_Auth_Phone", "+1555forged!"),
    ("X-Auth-Tenant", "forged!"),
    ("X_Auth_Tenant", "forged!"),
    ("X-Otpgate-Jwt", "forged!"),
    ("X_Otpgate_Jwt", "forged!"),
    // Method overrides: apps that honour them would run another method than the one judged.
    ("X-HTTP-Method-Override", "DELETE-forged!"),
    ("X-HTTP-Method", "DELETE-forged!"),
    ("X-Method-Override", "DELETE-forged!"),
];

/// Spellings of `/api/x` a proxy may route one way and the gate must judge as `/api/x`.
const PROTECTED_SPELLINGS: &[&str] = &[
    "/api/x",
    "/public/../api/x",
    "/API/x",
    "/Api/x",
    "/%61pi/x",
    "/%61%70%69/x",
    "//api/x",
    "/./api/x",
    "/public/%2e%2e/api/x",
];

/// Spellings of a path under `/api/` that servers read differently: never passed on.
const AMBIGUOUS_SPELLINGS: &[&str] = &[
    "/api%2Fx",
    "/public/..%2Fapi/x",
    "/public%2F..%2Fapi/x",
    "/api%5Cx",
    "/api/x%00",
    "/api;x/me",
    "/../api/x",
    "/public/%252e%252e/api/x",
];

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    let path = repo_file(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with each `from` replaced by `to`, which must occur exactly `times` times: a
/// changed deploy file fails here, by name, instead of running with its own addresses.
fn replaced(text: String, from: &str, to: &str, times: usize) -> String {
    let found = text.matches(from).count();
    assert_eq!(found, times, "`{from}` occurs {found} times, not {times}");
    text.replace(from, to)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `name` from the PATH, else where Debian puts it (/usr/sbin is not on every PATH).
fn binary(name: &str, fallback_dir: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| Path::new(fallback_dir).join(name))
}

// --- Processes ----------------------------------------------------------------------

/// The Python app: its port and process.
async fn start_app(dir: &Path) -> (u16, Process) {
    let stderr_path = dir.join("app.err");
    let mut child = Command::new("python3")
        .arg(repo_file("tests/support/forward_auth_app.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("python3 is missing: `make test-deps` installs it (apt-get install python3)");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().unwrap();
    let process = Process { child, stdin };
    let port = ready_port(stdout).await.unwrap_or_else(|| {
        panic!(
            "the app did not start:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    });
    (port, process)
}

/// `otpgate run` with deploy/forward-auth/otpgate.toml, listening on `port`, guarding
/// the app on `app`, delivering codes to `hook`.
async fn start_gate(dir: &Path, port: u16, app: u16, hook: &str) -> Process {
    let config = read("deploy/forward-auth/otpgate.toml");
    let config = replaced(
        config,
        "listen = \"127.0.0.1:8080\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let config = replaced(
        config,
        "\"http://127.0.0.1:3000\"",
        &format!("\"http://127.0.0.1:{app}\""),
        1,
    );
    let config = replaced(
        config,
        "\"http://127.0.0.1:9000/otp\"",
        &format!("\"{hook}\""),
        2,
    );
    let path = dir.join("otpgate.toml");
    std::fs::write(&path, config).unwrap();
    let command = gate_command(&path, "info");
    start_listening(
        command,
        port,
        &dir.join("gate.log"),
        "otpgate did not start",
    )
    .await
}

/// The two proxies the snippets are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Nginx,
    Caddy,
}

impl Proxy {
    /// The proxy's config from its deploy file, with the addresses changed and `edit`
    /// applied to the deploy file's text first.
    fn config(self, gate: u16, app: u16, port: u16, edit: &dyn Fn(String) -> String) -> String {
        match self {
            Proxy::Nginx => {
                let site = edit(read("deploy/forward-auth/nginx.conf"));
                let site = replaced(
                    site,
                    "server 127.0.0.1:8080;",
                    &format!("server 127.0.0.1:{gate};"),
                    1,
                );
                let site = replaced(
                    site,
                    "server 127.0.0.1:3000;",
                    &format!("server 127.0.0.1:{app};"),
                    1,
                );
                replaced(site, "listen 80;", &format!("listen 127.0.0.1:{port};"), 1)
            }
            Proxy::Caddy => {
                let site = edit(read("deploy/forward-auth/Caddyfile"));
                let site = replaced(site, "127.0.0.1:8080", &format!("127.0.0.1:{gate}"), 2);
                let site = replaced(site, "127.0.0.1:3000", &format!("127.0.0.1:{app}"), 1);
                // Loopback only, and no admin endpoint: nothing but the site listens.
                let site = replaced(
                    site,
                    "\napp.example.com {\n",
                    &format!("\nhttp://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n"),
                    1,
                );
                format!("{{\n\tadmin off\n}}\n\n{site}")
            }
        }
    }

    async fn start(self, dir: &Path, config: &str, port: u16) -> Process {
        match self {
            Proxy::Nginx => {
                let site = dir.join("site.conf");
                std::fs::write(&site, config).unwrap();
                let main = read("tests/support/forward_auth_nginx.conf.template")
                    .replace("@USER@", if running_as_root() { "user root;" } else { "" })
                    .replace("@DIR@", dir.to_str().unwrap())
                    .replace("@SITE@", site.to_str().unwrap());
                let main_path = dir.join("nginx.conf");
                std::fs::write(&main_path, main).unwrap();
                let mut nginx = Command::new(binary("nginx", "/usr/sbin"));
                nginx
                    .arg("-p")
                    .arg(dir)
                    .arg("-e")
                    .arg(dir.join("error.log"));
                nginx.arg("-c").arg(&main_path);
                let missing =
                    "nginx is missing: `make test-deps` installs it (apt-get install nginx)";
                start_listening(nginx, port, &dir.join("nginx.out"), missing).await
            }
            Proxy::Caddy => {
                let path = dir.join("Caddyfile");
                std::fs::write(&path, config).unwrap();
                let mut caddy = Command::new(binary("caddy", "/usr/bin"));
                caddy
                    .arg("run")
                    .arg("--config")
                    .arg(&path)
                    .args(["--adapter", "caddyfile"]);
                // Caddy's storage and autosaved config go to the test's directory.
                for var in ["HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"] {
                    caddy.env(var, dir);
                }
                let missing =
                    "caddy is missing: `make test-deps` installs it (apt-get install caddy)";
                start_listening(caddy, port, &dir.join("caddy.out"), missing).await
            }
        }
    }
}

/// The gate, the app and a proxy in front of them, all on loopback. Everything stops
/// when it is dropped.
struct Stack {
    proxy: Process,
    gate: Process,
    app: Process,
    hook: WebhookReceiver,
    proxy_port: u16,
    gate_port: u16,
    app_port: u16,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(proxy: Proxy) -> Stack {
        Stack::start_edited(proxy, &|text| text).await
    }

    /// With `edit` applied to the proxy's deploy file.
    async fn start_edited(proxy: Proxy, edit: &dyn Fn(String) -> String) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let hook = WebhookReceiver::start().await;
        let (app_port, app) = start_app(dir.path()).await;
        let gate_port = free_port();
        let gate = start_gate(dir.path(), gate_port, app_port, &hook.url).await;
        let proxy_port = free_port();
        let config = proxy.config(gate_port, app_port, proxy_port, edit);
        let proxy = proxy.start(dir.path(), &config, proxy_port).await;
        Stack {
            proxy,
            gate,
            app,
            hook,
            proxy_port,
            gate_port,
            app_port,
            _dir: dir,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// A sign-in of [`SUBJECT`] through the proxy: the access token.
    async fn sign_in(&self) -> String {
        self.sign_in_as(SUBJECT).await
    }

    /// A sign-in of `address` (an email or a phone number) through the proxy: the access
    /// token.
    async fn sign_in_as(&self, address: &str) -> String {
        let client = reqwest::Client::new();
        sign_in(&client, &self.base(), &self.hook, address)
            .await
            .access_token
    }

    /// `method target` sent to the proxy exactly as written, with `headers`.
    async fn send(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        send_from(
            Ipv4Addr::LOCALHOST,
            self.proxy_port,
            method,
            target,
            headers,
        )
        .await
    }

    /// [`send`](Self::send) with `body`.
    async fn send_body(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let request = Request {
            method,
            target,
            headers,
            body,
        };
        exchange(Ipv4Addr::LOCALHOST, self.proxy_port, &request).await
    }

    /// The requests the app received since the last call, oldest first.
    async fn app_saw(&self) -> Vec<Seen> {
        let reply = send_from(Ipv4Addr::LOCALHOST, self.app_port, "GET", "/__seen", &[]).await;
        assert_eq!(reply.status, 200, "the app's record: {}", reply.body);
        let seen: Vec<Value> = serde_json::from_str(&reply.body).unwrap();
        seen.into_iter().map(Seen).collect()
    }

    /// The one request the app received since the last call.
    async fn app_saw_one(&self) -> Seen {
        let mut seen = self.app_saw().await;
        assert_eq!(seen.len(), 1, "the app saw {seen:?}");
        seen.remove(0)
    }

    /// Nothing reached the app since the last call.
    async fn app_saw_nothing(&self, what: &str) {
        let seen = self.app_saw().await;
        assert!(seen.is_empty(), "{what} reached the app: {seen:?}");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The proxy first, so that nothing reaches a stopped gate or app meanwhile.
        let _ = self.proxy.child.kill();
        let _ = self.gate.child.kill();
        let _ = self.app.child.kill();
    }
}

/// One request as the app received it.
#[derive(Debug)]
struct Seen(Value);

impl Seen {
    /// The header lines as received.
    fn raw(&self) -> Vec<(String, String)> {
        self.0["raw"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|pair| {
                let text = |i: usize| pair[i].as_str().unwrap_or_default().to_owned();
                (text(0), text(1))
            })
            .collect()
    }

    /// What a WSGI app reads for `key` (`HTTP_X_AUTH_SUBJECT`).
    fn environ(&self, key: &str) -> Option<&str> {
        self.0["environ"][key].as_str()
    }

    fn target(&self) -> &str {
        self.0["target"].as_str().unwrap_or_default()
    }

    /// The header lines whose names fold (lower case, `_` and `.` for `-`) onto an
    /// identity header of the gate's.
    fn identity_lines(&self) -> Vec<(String, String)> {
        self.raw()
            .into_iter()
            .filter(|(name, _)| {
                let folded = name.to_ascii_lowercase().replace(['_', '.'], "-");
                folded.starts_with("x-auth-") || folded.starts_with("x-otpgate-")
            })
            .collect()
    }

    /// No header line carries a forged value or Caddy's placeholder text.
    fn assert_nothing_forged(&self, case: &str) {
        for (name, value) in self.raw() {
            assert!(
                !value.contains(FORGED) && !value.contains(PLACEHOLDER),
                "{case}: the app received {name}: {value}"
            );
        }
    }
}

// --- Raw HTTP/1.1 -------------------------------------------------------------------

/// What a client got back.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        body["error"].as_str().map(str::to_owned)
    }
}

/// A request, written exactly as given.
struct Request<'r> {
    method: &'r str,
    target: &'r str,
    headers: &'r [(&'r str, &'r str)],
    body: &'r str,
}

/// `method target` to `port` from the loopback address `source`, without a body.
async fn send_from(
    source: Ipv4Addr,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let request = Request {
        method,
        target,
        headers,
        body: "",
    };
    exchange(source, port, &request).await
}

/// Writes `request` to `port` from the loopback address `source` and reads until the
/// server closes (10 s at most).
async fn exchange(source: Ipv4Addr, port: u16, request: &Request<'_>) -> Reply {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n",
        request.method, request.target
    );
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !request.body.is_empty() || request.method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    head.push_str(request.body);
    let raw = raw::exchange(source, port, head.as_bytes(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("connecting to port {port}: {e}"));
    let reply = raw::parse_reply(&raw, true, false)
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(&raw)));
    Reply {
        status: reply.status,
        body: reply.text(),
        headers: reply.headers,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A browser's top-level navigation.
const NAVIGATION: &[(&str, &str)] = &[
    ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Dest", "document"),
];

// --- The cases, for each proxy ------------------------------------------------------

/// Runs each case once behind nginx (`nginx::name`) and once behind Caddy
/// (`caddy::name`).
macro_rules! for_both_proxies {
    ($($case:ident),+ $(,)?) => {
        mod nginx {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Proxy::Nginx).await;
                }
            )+
        }

        mod caddy {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Proxy::Caddy).await;
                }
            )+
        }
    };
}

for_both_proxies!(
    without_a_session_an_api_request_gets_401_and_the_app_nothing,
    a_browser_without_a_session_is_sent_to_sign_in,
    a_session_reaches_the_app_as_the_gates_identity_headers,
    forged_identity_headers_never_reach_the_app,
    a_public_path_passes_without_a_session_or_an_identity,
    every_spelling_of_a_protected_path_is_judged_as_it,
    the_method_judged_is_the_one_the_app_gets,
    clients_cannot_ask_the_check_through_the_proxy,
    the_checks_catch_a_proxy_that_lets_a_forged_header_through,
);

async fn without_a_session_an_api_request_gets_401_and_the_app_nothing(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let requests: &[(&str, &[(&str, &str)])] = &[
        ("GET", &[]),
        ("GET", &[("Accept", "application/json")]),
        ("GET", &[("X-Auth-Subject", "admin-forged!")]),
        ("GET", &[("Authorization", "Bearer not-a-token")]),
        // A script's fetch from a page accepts HTML too, but is not a navigation.
        (
            "GET",
            &[("Accept", "text/html"), ("Sec-Fetch-Mode", "cors")],
        ),
        ("POST", &[("Accept", "text/html")]),
        ("DELETE", &[]),
    ];
    for (method, headers) in requests {
        let case = format!("{proxy:?}: {method} /api/x {headers:?}");
        let reply = stack.send(method, "/api/x", headers).await;
        assert_eq!(reply.status, 401, "{case}: {reply:?}");
        assert_eq!(
            reply.error().as_deref(),
            Some("unauthorized"),
            "{case}: {reply:?}"
        );
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
        assert_eq!(reply.header("location"), None, "{case}");
    }
    stack.app_saw_nothing("a request without a session").await;
}

async fn a_browser_without_a_session_is_sent_to_sign_in(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let reply = stack.send("GET", "/api/x", NAVIGATION).await;
    assert_eq!(reply.status, 303, "{proxy:?}: {reply:?}");
    assert_eq!(
        reply.header("location"),
        Some(SIGN_IN_FOR_API_X),
        "{proxy:?}"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{proxy:?}");
    // An older browser says only what it accepts; the return address is the path the
    // gate judged, query included.
    let reply = stack
        .send("GET", "/public/../api/x?page=2", &[("Accept", "text/html")])
        .await;
    assert_eq!(reply.status, 303, "{proxy:?}: {reply:?}");
    assert_eq!(
        reply.header("location"),
        Some("/auth/sign-in?return=%2Fapi%2Fx%3Fpage%3D2"),
        "{proxy:?}"
    );
    stack
        .app_saw_nothing("a navigation without a session")
        .await;
}

async fn a_session_reaches_the_app_as_the_gates_identity_headers(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let token = stack.sign_in().await;
    let cookie = format!("otpgate_session={token}");
    let credentials = [("Authorization", bearer(&token)), ("Cookie", cookie)];
    for (name, value) in &credentials {
        let case = format!("{proxy:?} with {name}");
        let reply = stack.send("GET", "/api/x", &[(name, value)]).await;
        assert_eq!(reply.status, 200, "{case}: {reply:?}");
        let seen = stack.app_saw_one().await;
        assert_eq!(seen.target(), "/api/x", "{case}");
        let mut identity: Vec<(String, String)> = seen
            .identity_lines()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        identity.sort();
        let expected = [
            ("x-auth-email", SUBJECT),
            ("x-auth-subject", SUBJECT),
            ("x-auth-tenant", "default"),
            ("x-otpgate-jwt", token.as_str()),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        assert_eq!(identity, expected, "{case}");
        assert_eq!(seen.environ("HTTP_X_AUTH_SUBJECT"), Some(SUBJECT), "{case}");
        // An email sign-in has no phone: no header for it at all.
        assert_eq!(seen.environ("HTTP_X_AUTH_PHONE"), None, "{case}");
    }
    // A phone sign-in has no email: the app gets no X-Auth-Email at all, not an empty one
    // nor Caddy's placeholder.
    let phone_token = stack.sign_in_as(PHONE).await;
    let reply = stack
        .send("GET", "/api/x", &[("Authorization", &bearer(&phone_token))])
        .await;
    assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
    let seen = stack.app_saw_one().await;
    let mut identity: Vec<String> = seen
        .identity_lines()
        .into_iter()
        .map(|(name, value)| format!("{}: {value}", name.to_ascii_lowercase()))
        .collect();
    identity.sort();
    assert_eq!(
        identity,
        [
            format!("x-auth-phone: {PHONE}"),
            format!("x-auth-subject: {PHONE}"),
            "x-auth-tenant: default".to_owned(),
            format!("x-otpgate-jwt: {phone_token}"),
        ],
        "{proxy:?}"
    );
    // The app checks the token with the keys the gate publishes on its own address.
    let client = reqwest::Client::new();
    let gate = format!("http://127.0.0.1:{}", stack.gate_port);
    let claims = common::claims_from_jwks(&client, &gate, &token).await;
    assert_eq!(claims["sub"], SUBJECT);
    assert_eq!(claims["email"], SUBJECT);
}

async fn forged_identity_headers_never_reach_the_app(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let auth = bearer(&stack.sign_in().await);
    for (session, target) in [(false, "/public/x"), (true, "/public/x"), (true, "/api/x")] {
        let case = format!("{proxy:?}: GET {target}, signed in: {session}");
        let mut headers = FORGED_HEADERS.to_vec();
        if session {
            headers.push(("Authorization", &auth));
        }
        let reply = stack.send("GET", target, &headers).await;
        assert_eq!(reply.status, 200, "{case}: {reply:?}");
        let seen = stack.app_saw_one().await;
        seen.assert_nothing_forged(&case);
        let expected_subject = session.then_some(SUBJECT);
        assert_eq!(
            seen.environ("HTTP_X_AUTH_SUBJECT"),
            expected_subject,
            "{case}"
        );
        assert_eq!(seen.environ("HTTP_X_AUTH_PHONE"), None, "{case}");
        if !session {
            assert_eq!(seen.identity_lines(), Vec::new(), "{case}");
        }
    }
    // Without a session, forged headers do not open a protected path either.
    let reply = stack.send("GET", "/api/x", FORGED_HEADERS).await;
    assert_eq!(reply.status, 401, "{proxy:?}: {reply:?}");
    stack.app_saw_nothing("a forged identity").await;
}

async fn a_public_path_passes_without_a_session_or_an_identity(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    for headers in [&[][..], NAVIGATION] {
        let reply = stack.send("GET", "/public/x?q=1", headers).await;
        assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
        let seen = stack.app_saw_one().await;
        assert_eq!(seen.target(), "/public/x?q=1", "{proxy:?}");
        // Not even an empty or placeholder identity header: an app may take the
        // presence of X-Auth-Subject for a sign-in.
        assert_eq!(seen.identity_lines(), Vec::new(), "{proxy:?}: {seen:?}");
        seen.assert_nothing_forged(&format!("{proxy:?}"));
    }
}

async fn every_spelling_of_a_protected_path_is_judged_as_it(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    for target in PROTECTED_SPELLINGS {
        let reply = stack.send("GET", target, &[]).await;
        assert_eq!(reply.status, 401, "{proxy:?}: GET {target}: {reply:?}");
        let reply = stack.send("GET", target, NAVIGATION).await;
        assert_eq!(reply.status, 303, "{proxy:?}: GET {target}: {reply:?}");
    }
    stack
        .app_saw_nothing("a protected path without a session")
        .await;
    let auth = bearer(&stack.sign_in().await);
    // Targets that cannot be read one way only are refused even with a session: by the
    // gate (403 through forward-auth: nginx passes on no 400), or by the proxy first.
    for target in AMBIGUOUS_SPELLINGS {
        let reply = stack.send("GET", target, &[("Authorization", &auth)]).await;
        assert!(
            [400, 403].contains(&reply.status),
            "{proxy:?}: GET {target}: {reply:?}"
        );
    }
    stack.app_saw_nothing("an ambiguous target").await;
    for target in PROTECTED_SPELLINGS {
        let reply = stack.send("GET", target, &[("Authorization", &auth)]).await;
        assert_eq!(reply.status, 200, "{proxy:?}: GET {target}: {reply:?}");
        let seen = stack.app_saw_one().await;
        assert_eq!(
            seen.environ("HTTP_X_AUTH_SUBJECT"),
            Some(SUBJECT),
            "{proxy:?}: GET {target}"
        );
    }
}

async fn the_method_judged_is_the_one_the_app_gets(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    // Writes anywhere need a session (deploy/forward-auth/otpgate.toml); a client
    // describing its POST as a GET of a public path, the nginx way or the Caddy way, is
    // judged by what the proxy forwards.
    let lies: &[(&str, &str)] = &[
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/public/x"),
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/public/x"),
    ];
    for (name, value) in lies {
        let reply = stack.send("POST", "/public/x", &[(name, value)]).await;
        assert_eq!(reply.status, 401, "{proxy:?}: POST with {name}: {reply:?}");
        let reply = stack.send("GET", "/api/x", &[(name, value)]).await;
        assert_eq!(
            reply.status, 401,
            "{proxy:?}: GET /api/x with {name}: {reply:?}"
        );
    }
    let reply = stack.send("POST", "/public/x", lies).await;
    assert_eq!(reply.status, 401, "{proxy:?}: POST with all: {reply:?}");
    stack.app_saw_nothing("a write without a session").await;
    // Reading the same path is public; writing with a session passes.
    let reply = stack.send("GET", "/public/x", lies).await;
    assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
    assert_eq!(stack.app_saw_one().await.0["method"], "GET");
    let auth = bearer(&stack.sign_in().await);
    // The body goes to the app, not to the gate's check.
    let body = r#"{"note":"written"}"#;
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let reply = stack.send_body("POST", "/public/x", &headers, body).await;
    assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
    let seen = stack.app_saw_one().await;
    assert_eq!(seen.0["method"], "POST");
    assert_eq!(seen.0["body"], body, "{proxy:?}");
    assert_eq!(seen.environ("HTTP_X_AUTH_SUBJECT"), Some(SUBJECT));
}

async fn clients_cannot_ask_the_check_through_the_proxy(proxy: Proxy) {
    let stack = Stack::start(proxy).await;
    let auth = bearer(&stack.sign_in().await);
    let question: &[(&str, &str)] = &[
        ("Authorization", &auth),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/api/x"),
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/api/x"),
    ];
    for target in [
        "/auth/check",
        "//auth/check",
        "/auth/./check",
        "/x/../auth/check",
        "/auth/%63heck",
        "/auth/check?x=1",
        "/AUTH/check",
    ] {
        let case = format!("{proxy:?}: GET {target}");
        for headers in [question, &question[1..3], &question[3..]] {
            let reply = stack.send("GET", target, headers).await;
            // Never the gate's verdict: the proxy answers 404, or (nginx matches
            // locations case-sensitively) the app gets the request as any other.
            assert!(
                !reply.body.contains("\"status\":\"ok\""),
                "{case}: {reply:?}"
            );
            assert_eq!(reply.header("x-auth-subject"), None, "{case}");
            match reply.status {
                404 => {}
                200 => assert_eq!(stack.app_saw_one().await.target(), target, "{case}"),
                _ => panic!("{case}: {reply:?}"),
            }
        }
    }
    stack.app_saw_nothing("a check").await;

    // Asked directly, the gate answers only the proxies it trusts (127.0.0.1 and ::1).
    let direct = |source: [u8; 4], headers: &'static [(&'static str, &'static str)]| {
        let port = stack.gate_port;
        async move { send_from(source.into(), port, "GET", "/auth/check", headers).await }
    };
    let describe: &'static [(&str, &str)] =
        &[("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", "/api/x")];
    let reply = direct([127, 0, 0, 2], describe).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.error().as_deref(), Some("forbidden"), "{reply:?}");
    // The same question from a trusted peer gets its verdict: the refusal was the peer's.
    let reply = direct([127, 0, 0, 1], describe).await;
    assert_eq!(reply.status, 401, "{reply:?}");
}

async fn the_checks_catch_a_proxy_that_lets_a_forged_header_through(proxy: Proxy) {
    // The cases above mean something only if a snippet without its defences fails them
    // here: the forged `X_Auth_Subject` then reaches the app, which folds it onto
    // X-Auth-Subject.
    let weakened = match proxy {
        Proxy::Nginx => |text: String| {
            replaced(
                text,
                "underscores_in_headers off;",
                "underscores_in_headers on;",
                1,
            )
        },
        Proxy::Caddy => |text: String| {
            text.lines()
                .filter(|line| !line.contains("request_header"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    };
    let stack = Stack::start_edited(proxy, &weakened).await;
    let reply = stack
        .send("GET", "/public/x", &[("X_Auth_Subject", "admin-forged!")])
        .await;
    assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
    let seen = stack.app_saw_one().await;
    let subject = seen.environ("HTTP_X_AUTH_SUBJECT").unwrap_or_default();
    assert!(subject.contains("admin-forged!"), "{proxy:?}: {seen:?}");
    if proxy == Proxy::Caddy {
        // And copy_headers (Caddy 2.6) writes its placeholder where the gate sent nothing.
        let subject_lines: Vec<_> = seen
            .raw()
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("x-auth-subject"))
            .collect();
        assert!(
            subject_lines
                .iter()
                .any(|(_, value)| value.starts_with(PLACEHOLDER)),
            "{seen:?}"
        );
    }
}
