//! The boundary between the gate and real app servers. Request targets and headers
//! that servers read differently from a naive gate are sent, byte for byte over raw TCP,
//! to each server (nginx, Python's http.server, wsgiref, Werkzeug, lighttpd running a CGI
//! program, PHP's built-in server) behind each form of the gate: the `otpgate run` proxy,
//! and the `OtpLayer` around a service that forwards the request it receives verbatim.
//! Every server logs what it received, so each case checks what the app saw, not only
//! what the gate answered.
//!
//! The promise (shared/DESIGN.md, "The boundary"): without a token no spelling of a
//! protected path reaches the app; with one, the app receives the canonical path and the
//! query untouched; no client-sent identity or forwarding header reaches the app in any
//! spelling a server folds onto the real one, not even from a trusted proxy.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::process::{Process, ready_port, start_listening};
use common::raw::{self, RawReply};
use common::{
    Form, WebhookReceiver, both_forms, free_port, gate_command, sign_in, webhook_delivery_toml,
    with_listen,
};
use http_body_util::BodyExt;
use otpgate::tower::OtpLayer;
use serde_json::{Map, Value};

/// Who signs in.
const SUBJECT: &str = "alice@example.com";
/// In every forged identity or URL header value; never in a token (base64url has no `!`).
const FORGED: &str = "forged!";
/// The address a client claims to forward for.
const FORGED_IP: &str = "6.6.6.6";
/// The one address the gate trusts as a proxy: the test connects from it to send what a
/// proxy in front of the gate would. Every other request comes from 127.0.0.1.
const TRUSTED_PROXY: &str = "127.0.0.2";
/// The client a trusted proxy forwards for.
const PROXIED_CLIENT: &str = "203.0.113.9";
/// In the body of every answer that comes from under `/api/` at an app.
const SECRET: &str = "-secret";

/// Without a token, each of these is answered by the gate, 400 `invalid_path` or 401
/// `unauthorized`, and never reaches the app. Absolute-form targets are added per gate.
const REFUSED_WITHOUT_TOKEN: &[&str] = &[
    "/api/me",
    // Case.
    "/API/me",
    "/Api/me",
    "/aPI/ME",
    "/%41PI/me",
    "/%41%50%49/me",
    // Slashes and dot segments.
    "//api/me",
    "///api/me",
    "/./api/me",
    "/%2e/api/me",
    "/%2E/api/me",
    "/api/./me",
    "/api//me",
    "/api/x/../me",
    "/api/me/..",
    "/public/../api/me",
    "/public//../api/me",
    "/public/./../api/me",
    "/public/%2e%2e/api/me",
    "/public/%2E%2E/api/me",
    "/public/.%2e/api/me",
    "/x/%2e%2e/api/me",
    // Above the root.
    "/../api/me",
    "/%2e%2e/api/me",
    "/.%2e/api/me",
    "/public/../../api/me",
    // Encoded unreserved characters.
    "/%61pi/me",
    "/%61%70%69/me",
    "/a%70i/me",
    // Encoded `/` and `\`, raw `\`.
    "/api%2Fme",
    "/api%2fme",
    "/%2Fapi/me",
    "/%2fapi/me",
    "/public/..%2Fapi/me",
    "/public%2F..%2Fapi/me",
    "/api%5cme",
    "/api%5Cme",
    "/api\\me",
    "/public\\..\\api/me",
    "/public/..\\api/me",
    // Path parameters.
    "/api;x/me",
    "/api;/me",
    "/api/me;",
    "/api/me;x",
    "/;x/api/me",
    // `%3B`: nginx decodes it to `;` when it proxies, and Java servers cut parameters.
    "/api%3B/me",
    "/api%3bx/me",
    "/public/..%3B/api/me",
    // Control characters.
    "/api/me%00",
    "/api%00/me",
    "/api/me%0a",
    "/api/me%0d%0a",
    // Double encoding, invalid encoding.
    "/%252e/api/me",
    "/public/%252e%252e/api/me",
    "/%2561pi/me",
    "/%u0061pi/me",
    // Not origin-form.
    "api/me",
];

/// With a token: the target sent, and the target the app must receive.
const CANONICAL_WITH_TOKEN: &[(&str, &str)] = &[
    ("/api/me", "/api/me"),
    ("//api/me", "/api/me"),
    ("///api//me", "/api/me"),
    ("/./api/me", "/api/me"),
    ("/%2e/api/me", "/api/me"),
    ("/public/../api/me", "/api/me"),
    ("/public//../api/me", "/api/me"),
    ("/public/%2e%2e/api/me", "/api/me"),
    ("/x/%2E%2E/api/me", "/api/me"),
    ("/%61pi/me", "/api/me"),
    ("/%61%70%69/%6De", "/api/me"),
    ("/api/./me", "/api/me"),
    ("/api/x/../me", "/api/me"),
    ("/api//me?x=%2F..", "/api/me?x=%2F.."),
    (
        "/./api/me?next=/../admin&y=%2e%2e",
        "/api/me?next=/../admin&y=%2e%2e",
    ),
    ("/API/me", "/API/me"),
    ("/Api/me", "/Api/me"),
    ("/%41PI/me", "/API/me"),
    ("/api/%7Euser", "/api/~user"),
    ("/api/a%20b", "/api/a%20b"),
    ("/api/me/", "/api/me/"),
];

/// Ambiguous even with a token: 400 `invalid_path`, and the app never sees them.
const AMBIGUOUS_WITH_TOKEN: &[&str] = &[
    "/api%2Fme",
    "/api%2fme",
    "/%2Fapi/me",
    "/public/..%2Fapi/me",
    "/api%5Cme",
    "/api%5cme",
    "/api\\me",
    "/public\\..\\api/me",
    "/api/me%00",
    "/api%00/me",
    "/api/me%0A",
    "/api/me%0d%0a",
    "/../api/me",
    "/%2e%2e/api/me",
    "/.%2E/api/me",
    "/public/../../api/me",
    "/api%3B/me",
    "/api%3bx/me",
    "/public/..%3B/api/me",
    "api/me",
];

/// Headers a client forges: none may reach the app, in any spelling.
const FORGED_HEADERS: &[(&str, &str)] = &[
    ("X-Auth-Subject", "admin-forged!"),
    ("X_Auth_Subject", "admin-forged!"),
    ("X-Auth_Subject", "admin-forged!"),
    ("X_AUTH_SUBJECT", "admin-forged!"),
    ("x_auth_subject", "admin-forged!"),
    ("X-AUTH-SUBJECT", "admin-forged!"),
    ("X_Auth_Email", "admin-forged!@example.com"),
    ("X_Auth-Phone", "+1forged!"),
    ("X_Auth_Tenant", "forged!"),
    ("X-Auth-Role", "root-forged!"),
    ("X_Auth_Role", "root-forged!"),
    ("X-Otpgate-Jwt", "forged!"),
    ("X_Otpgate_Jwt", "forged!"),
    ("X-Otpgate_Jwt", "forged!"),
    ("x_otpgate_jwt", "forged!"),
    ("X-Forwarded-For", FORGED_IP),
    ("X_Forwarded_For", FORGED_IP),
    ("x-forwarded-for", "6.6.6.6, 10.0.0.1"),
    ("Forwarded", "for=6.6.6.6"),
    ("X-Real-IP", FORGED_IP),
    ("X_Real_IP", FORGED_IP),
    ("X-Original-URL", "/api/forged!"),
    ("X-Rewrite-URL", "/api/forged!"),
    ("X_Original_URL", "/api/forged!"),
    ("x-original-url", "/api/forged!"),
    // Other punctuation: lighttpd folds every character other than a letter or digit
    // onto `_`, PHP turns `.` into `_`.
    ("X.Auth.Subject", "admin-forged!"),
    ("X~Auth~Subject", "admin-forged!"),
    ("X!Auth+Subject", "admin-forged!"),
    ("X'Auth'Subject", "admin-forged!"),
    ("X-Auth.Subject", "admin-forged!"),
    ("X.Otpgate.Jwt", "forged!"),
    ("X.Forwarded.For", FORGED_IP),
    ("X.Real.IP", FORGED_IP),
    ("X.Original.URL", "/api/forged!"),
];

// --- Raw HTTP/1.1 -------------------------------------------------------------------

/// Writes `request` to `port` and reads until the server closes (10 s at most). A reset
/// after some bytes keeps those bytes; no connection, nothing.
async fn roundtrip(port: u16, request: &[u8]) -> Vec<u8> {
    roundtrip_from(Ipv4Addr::LOCALHOST, port, request).await
}

/// [`roundtrip`] from the loopback address `source`.
async fn roundtrip_from(source: Ipv4Addr, port: u16, request: &[u8]) -> Vec<u8> {
    raw::exchange(source, port, request, Duration::from_secs(10))
        .await
        .unwrap_or_default()
}

/// The answer `raw` read to the close, whatever its framing.
fn parse_response(raw: &[u8]) -> Option<RawReply> {
    raw::parse_reply(raw, true, false)
}

/// What a client got back. Status 0: no parsable response.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn error(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        body.get("error")?.as_str().map(str::to_owned)
    }

    fn short(&self) -> String {
        let body: String = self.body.chars().take(160).collect();
        format!("{} {:?}", self.status, body.trim_end())
    }
}

/// `GET target` on `port`, the request line and headers written exactly as given.
async fn get(port: u16, target: &str, headers: &[(&str, &str)]) -> Reply {
    get_from(Ipv4Addr::LOCALHOST, port, target, headers).await
}

/// [`get`] from the loopback address `source`.
async fn get_from(source: Ipv4Addr, port: u16, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let raw = roundtrip_from(source, port, request.as_bytes()).await;
    match parse_response(&raw) {
        Some(reply) => Reply {
            status: reply.status,
            body: reply.text(),
        },
        None => Reply {
            status: 0,
            body: String::from_utf8_lossy(&raw).into_owned(),
        },
    }
}

// --- The app servers ----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// nginx with `merge_slashes on`, `underscores_in_headers on`, `/api/` matched
    /// without regard to case.
    Nginx,
    /// Python's `http.server`: SimpleHTTPRequestHandler over a directory holding `api/me`.
    SimpleHttp,
    /// `wsgiref.simple_server` with a WSGI app that echoes its environ.
    Wsgiref,
    /// Werkzeug's server with the same app.
    Werkzeug,
    /// lighttpd handing every request to the same app run as a CGI program: each header
    /// reaches it as `HTTP_<name>`, every character other than a letter or digit folded
    /// onto `_`.
    Lighttpd,
    /// PHP's built-in server with a router script that echoes `$_SERVER`: PHP turns `.`
    /// in a header name into `_`.
    Php,
}

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// One request as the app logged it: `target` as received, `seen` what the app reads
/// (folded header names, `_` for `-`, lowercase; empty values dropped).
#[derive(Debug)]
struct Seen {
    target: String,
    seen: Map<String, Value>,
}

impl Seen {
    fn get(&self, key: &str) -> Option<&str> {
        self.seen.get(key).and_then(Value::as_str)
    }
}

/// A real app server on a free loopback port, logging every request it receives to a
/// file. Killed when dropped.
struct App {
    server: Server,
    port: u16,
    _process: Process,
    _dir: tempfile::TempDir,
    log: PathBuf,
    lines_read: usize,
    syncs: u32,
}

impl App {
    async fn start(server: Server) -> App {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        std::fs::write(&log, "").unwrap();
        let (process, port) = match server {
            Server::Nginx => start_nginx(dir.path()).await,
            Server::Lighttpd => start_lighttpd(dir.path()).await,
            Server::Php => start_php(dir.path(), &log).await,
            Server::SimpleHttp | Server::Wsgiref | Server::Werkzeug => {
                start_python(server, dir.path(), &log).await
            }
        };
        App {
            server,
            port,
            _process: process,
            _dir: dir,
            log,
            lines_read: 0,
            syncs: 0,
        }
    }

    /// The requests the app received since the last call: a marker request is sent
    /// straight to the app, and what it logged before the marker is returned.
    async fn take_seen(&mut self) -> Vec<Seen> {
        self.syncs += 1;
        let marker = format!("/__sync/{}", self.syncs);
        get(self.port, &marker, &[]).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap();
            let lines: Vec<&str> = text
                .split_inclusive('\n')
                .filter(|line| line.ends_with('\n'))
                .skip(self.lines_read)
                .collect();
            let entries: Vec<Seen> = lines.iter().map(|line| self.parse(line)).collect();
            if let Some(at) = entries.iter().position(|e| e.target == marker) {
                self.lines_read += at + 1;
                return entries.into_iter().take(at).collect();
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not log {marker} within 5 s",
                self.server
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn parse(&self, line: &str) -> Seen {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{:?} logged {line:?}: {e}", self.server));
        let mut seen = entry["seen"].as_object().cloned().unwrap_or_default();
        seen.retain(|_, v| v.as_str() != Some(""));
        Seen {
            target: entry["target"].as_str().unwrap_or_default().to_owned(),
            seen,
        }
    }
}

/// `name` from the PATH, else where Debian puts it (/usr/sbin is not on every PATH).
fn sbin_binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| Path::new("/usr/sbin").join(name))
}

async fn start_nginx(dir: &Path) -> (Process, u16) {
    let port = free_port();
    let template = std::fs::read_to_string(support("nginx.conf.template")).unwrap();
    let config = template
        .replace("@USER@", if running_as_root() { "user root;" } else { "" })
        .replace("@DIR@", dir.to_str().unwrap())
        .replace("@PORT@", &port.to_string());
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).unwrap();
    let mut nginx = Command::new(sbin_binary("nginx"));
    nginx
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"));
    nginx.arg("-c").arg(&config_path);
    let missing = "nginx is missing: `make test-deps` installs it (apt-get install nginx)";
    let process = start_listening(nginx, port, &dir.join("nginx.out"), missing).await;
    (process, port)
}

/// The interpreter `python3` runs, not a shim in front of it: lighttpd starts it once per
/// request.
fn python_executable() -> &'static Path {
    static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();
    EXECUTABLE.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .stdin(Stdio::null())
            .output()
            .expect("python3 is missing");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!path.is_empty(), "python3 did not name its executable");
        PathBuf::from(path)
    })
}

async fn start_lighttpd(dir: &Path) -> (Process, u16) {
    let port = free_port();
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::copy(support("boundary_cgi.sh"), dir.join("root/app.sh")).unwrap();
    let template = std::fs::read_to_string(support("lighttpd.conf.template")).unwrap();
    let config = template
        .replace("@DIR@", dir.to_str().unwrap())
        .replace("@PORT@", &port.to_string())
        .replace("@PYTHON@", python_executable().to_str().unwrap())
        .replace("@APPS@", support("boundary_apps.py").to_str().unwrap());
    let config_path = dir.join("lighttpd.conf");
    std::fs::write(&config_path, config).unwrap();
    let mut lighttpd = Command::new(sbin_binary("lighttpd"));
    lighttpd.arg("-D").arg("-f").arg(&config_path);
    let missing = "lighttpd is missing: `make test-deps` installs it (apt-get install lighttpd)";
    let process = start_listening(lighttpd, port, &dir.join("lighttpd.out"), missing).await;
    (process, port)
}

async fn start_php(dir: &Path, log: &Path) -> (Process, u16) {
    let port = free_port();
    let mut php = Command::new("php");
    php.arg("-S")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-t")
        .arg(dir);
    php.arg(support("boundary_router.php"))
        .env("BOUNDARY_LOG", log);
    let missing = "php is missing: `make test-deps` installs it (apt-get install php-cli)";
    let process = start_listening(php, port, &dir.join("php.out"), missing).await;
    (process, port)
}

async fn start_python(server: Server, dir: &Path, log: &Path) -> (Process, u16) {
    let kind = match server {
        Server::SimpleHttp => "files",
        Server::Wsgiref => "wsgiref",
        _ => "werkzeug",
    };
    let stderr_path = dir.join("stderr.log");
    let mut command = Command::new("python3");
    command.arg(support("boundary_apps.py")).arg(kind).arg(log);
    if server == Server::SimpleHttp {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("api")).unwrap();
        std::fs::write(root.join("api/me"), "files-secret\n").unwrap();
        std::fs::write(root.join("public"), "files-public\n").unwrap();
        command.arg(root);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("python3 is missing");
    let stdout = child.stdout.take().unwrap();
    // Its standard input stays open in `child`: the app exits when it closes.
    let process = Process::new(child);
    let Some(port) = ready_port(stdout).await else {
        panic!(
            "{server:?} did not start (`make test-deps` installs werkzeug):\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
    };
    (process, port)
}

// --- The two forms of the gate ------------------------------------------------------

/// The config both forms read: `/api/` protected, codes to a webhook, `TRUSTED_PROXY`
/// trusted to say who the client is.
fn config(upstream: u16, hook: &str) -> String {
    format!(
        r#"[server]
upstream = "http://127.0.0.1:{upstream}"
threads = 1
trusted_proxies = ["{TRUSTED_PROXY}/32"]

[[protect]]
prefix = "/api/"

{delivery}"#,
        delivery = webhook_delivery_toml(hook)
    )
}

/// An inner tower service that sends the request it receives to the app exactly as it
/// received it: the request line from `path_and_query`, every header, over raw TCP.
#[derive(Clone)]
struct Forward {
    port: u16,
}

impl<B> tower::Service<http::Request<B>> for Forward
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let port = self.port;
        Box::pin(async move {
            let bad_gateway = || {
                let mut response = http::Response::new(axum::body::Body::empty());
                *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                response
            };
            let (parts, body) = request.into_parts();
            let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
                return Ok(bad_gateway());
            };
            let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
            let mut raw = format!("{} {target} HTTP/1.1\r\n", parts.method).into_bytes();
            for (name, value) in &parts.headers {
                use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
                if [CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING].contains(name) {
                    continue;
                }
                raw.extend_from_slice(name.as_str().as_bytes());
                raw.extend_from_slice(b": ");
                raw.extend_from_slice(value.as_bytes());
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(
                format!(
                    "Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            raw.extend_from_slice(&body);
            let Some(reply) = parse_response(&roundtrip(port, &raw).await) else {
                return Ok(bad_gateway());
            };
            let mut response = http::Response::builder().status(reply.status);
            for (name, value) in reply.headers {
                if !["connection", "content-length", "transfer-encoding"].contains(&name.as_str()) {
                    response = response.header(name, value);
                }
            }
            Ok(response
                .body(axum::body::Body::from(reply.body))
                .unwrap_or_else(|_| bad_gateway()))
        })
    }
}

/// `otpgate run` with its output in a file. Killed when dropped.
struct GateProcess {
    _process: Process,
    _dir: tempfile::TempDir,
}

/// A gate in front of an app, with a token for `SUBJECT`.
struct Gate {
    port: u16,
    bearer: String,
    _process: Option<GateProcess>,
    _hook: WebhookReceiver,
}

impl Gate {
    /// The tower form is `OtpLayer` around a service that forwards the request verbatim,
    /// served by axum; the pingora form is `otpgate run`.
    async fn start(form: Form, app_port: u16) -> Gate {
        let hook = WebhookReceiver::start().await;
        let text = config(app_port, &hook.url);
        let (port, process) = match form {
            Form::Tower => {
                let dir = tempfile::tempdir().unwrap();
                let gate = otpgate::config::Config::parse(&text, "boundary.toml", dir.path())
                    .unwrap()
                    .build()
                    .unwrap();
                let service = tower::Layer::layer(&OtpLayer::new(gate), Forward { port: app_port });
                let addr = common::serve(axum::Router::new().fallback_service(service)).await;
                (addr.port(), None)
            }
            Form::Pingora => {
                let dir = tempfile::tempdir().unwrap();
                let port = free_port();
                let path = dir.path().join("gate.toml");
                std::fs::write(&path, with_listen(&text, port)).unwrap();
                let command = gate_command(&path, "warn");
                let log = dir.path().join("gate.log");
                let process = start_listening(command, port, &log, "otpgate did not start").await;
                (
                    port,
                    Some(GateProcess {
                        _process: process,
                        _dir: dir,
                    }),
                )
            }
        };
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let token = sign_in(&client, &base, &hook, SUBJECT).await.access_token;
        Gate {
            port,
            bearer: format!("Bearer {token}"),
            _process: process,
            _hook: hook,
        }
    }
}

// --- The checks ---------------------------------------------------------------------

/// Refused by the gate: 400 `invalid_path` or 401 `unauthorized`. The HTTP server under
/// each form answers a bare 400 to some requests before the gate runs (hyper to targets
/// `http::Uri` cannot hold, pingora to an absolute-form target whose authority differs
/// from Host); those never reach the app either.
fn refused(reply: &Reply, allow_401: bool) -> bool {
    match reply.status {
        400 => reply.error().as_deref() == Some("invalid_path") || reply.body.is_empty(),
        401 => allow_401 && reply.error().as_deref() == Some("unauthorized"),
        _ => false,
    }
}

fn describe(seen: &[Seen]) -> String {
    if seen.is_empty() {
        return "the app saw nothing".into();
    }
    // Tokens are long and say nothing here: values are cut short.
    let short = |value: &Value| {
        let value = value.as_str().unwrap_or_default();
        match value.char_indices().nth(48) {
            Some((at, _)) => Value::from(format!("{}…", &value[..at])),
            None => Value::from(value),
        }
    };
    let seen: Vec<String> = seen
        .iter()
        .map(|s| {
            let headers: Map<String, Value> =
                s.seen.iter().map(|(k, v)| (k.clone(), short(v))).collect();
            format!("{:?} {}", s.target, Value::Object(headers))
        })
        .collect();
    format!("the app saw {}", seen.join(" then "))
}

/// What is wrong with the headers the app saw for one request, if anything. `forwarded`:
/// the `X-Forwarded-For` the gate sends for this client.
fn header_problems(seen: &Seen, protected: bool, forwarded: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in &seen.seen {
        let value = value.as_str().unwrap_or_default();
        if value.contains(FORGED) || value.contains(FORGED_IP) {
            problems.push(format!("{key}={value:?}"));
        }
    }
    for key in ["x_original_url", "x_rewrite_url"] {
        if let Some(value) = seen.get(key) {
            problems.push(format!("{key}={value:?}"));
        }
    }
    for key in ["x_forwarded_for", "x_real_ip"] {
        if let Some(value) = seen.get(key).filter(|v| *v != forwarded) {
            problems.push(format!("{key}={value:?} (want {forwarded:?} or nothing)"));
        }
    }
    let subject = seen.get("x_auth_subject");
    if protected && subject != Some(SUBJECT) {
        problems.push(format!("x_auth_subject={subject:?} (want {SUBJECT:?})"));
    }
    if !protected && subject.is_some() {
        problems.push(format!("x_auth_subject={subject:?} on a public path"));
    }
    problems
}

/// Where a request with headers comes from, and which `X-Forwarded-For` the gate sends for
/// it.
struct Origin<'a> {
    /// The loopback address the request is sent from.
    source: Ipv4Addr,
    /// The `X-Forwarded-For` the gate sends for this client.
    forwarded: &'a str,
    /// Whether the app must see `forwarded` (else it may see nothing).
    must_forward: bool,
    /// Where the request came from, for failure messages.
    label: &'a str,
}

/// Sends `headers` from `origin` to `/public` without a token and to `/api/me` with one,
/// and checks what the app saw of them: a failure line for each request the app saw amiss.
async fn check_headers(
    app: &mut App,
    gate: &Gate,
    origin: &Origin<'_>,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (path, protected) in [("/public", false), ("/api/me", true)] {
        let mut sent = headers.to_vec();
        if protected {
            sent.push(("Authorization", gate.bearer.as_str()));
        }
        let reply = get_from(origin.source, gate.port, path, &sent).await;
        let seen = app.take_seen().await;
        let mut problems = match seen.as_slice() {
            [one] if reply.status == 200 => header_problems(one, protected, origin.forwarded),
            _ => vec![format!("gate answered {}", reply.short())],
        };
        if let [one] = seen.as_slice()
            && origin.must_forward
            && one.get("x_forwarded_for") != Some(origin.forwarded)
        {
            problems.push(format!("no x_forwarded_for={:?}", origin.forwarded));
        }
        if !problems.is_empty() {
            let names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
            failures.push(format!(
                "{path} {}{} {names:?}: {}; {}",
                if protected { "with token" } else { "no token" },
                origin.label,
                problems.join(", "),
                describe(&seen)
            ));
        }
    }
    failures
}

async fn boundary(server: Server, form: Form) {
    let mut app = App::start(server).await;
    let gate = Gate::start(form, app.port).await;
    let bearer = gate.bearer.as_str();
    let mut failures = Vec::new();
    let mut cases = 0;
    // Refused by the HTTP server under the gate, before the gate ran: listed, not failed.
    let mut bare_400 = Vec::new();

    // The pipeline works: a public page reaches the app, through the gate.
    let public = get(gate.port, "/public", &[]).await;
    let seen = app.take_seen().await;
    assert!(
        public.status == 200 && seen.len() == 1 && seen[0].target == "/public",
        "{server:?} behind {form:?}: /public answered {}; {}",
        public.short(),
        describe(&seen)
    );

    // Without a token: no spelling of /api/me reaches the app.
    let absolute = [
        format!("http://127.0.0.1:{}/api/me", gate.port),
        "http://evil.example/api/me".to_owned(),
        "http://evil.example//api/me".to_owned(),
    ];
    let targets = REFUSED_WITHOUT_TOKEN
        .iter()
        .copied()
        .chain(absolute.iter().map(String::as_str));
    for target in targets {
        cases += 1;
        let reply = get(gate.port, target, &[]).await;
        let seen = app.take_seen().await;
        if reply.status == 400 && reply.body.is_empty() {
            bare_400.push(format!("{target} (no token)"));
        }
        if !refused(&reply, true) || !seen.is_empty() || reply.body.contains(SECRET) {
            failures.push(format!(
                "no token, {target:?}: gate answered {}; {}",
                reply.short(),
                describe(&seen)
            ));
        }
    }

    // With a token: the app receives the canonical target, the query untouched.
    let auth = [("Authorization", bearer)];
    for (target, canonical) in CANONICAL_WITH_TOKEN {
        cases += 1;
        let reply = get(gate.port, target, &auth).await;
        let seen = app.take_seen().await;
        if seen.len() != 1 || seen[0].target != *canonical {
            failures.push(format!(
                "token, {target:?} (want the app to see {canonical:?}): gate answered {}; {}",
                reply.short(),
                describe(&seen)
            ));
        }
    }

    // With a token, ambiguous targets are still refused.
    for target in AMBIGUOUS_WITH_TOKEN {
        cases += 1;
        let reply = get(gate.port, target, &auth).await;
        let seen = app.take_seen().await;
        if reply.status == 400 && reply.body.is_empty() {
            bare_400.push(format!("{target} (token)"));
        }
        if !refused(&reply, false) || !seen.is_empty() {
            failures.push(format!(
                "token, ambiguous {target:?} (want 400 invalid_path): gate answered {}; {}",
                reply.short(),
                describe(&seen)
            ));
        }
    }

    // Forged headers, one at a time and all at once, on a public and a protected path.
    let direct = Origin {
        source: Ipv4Addr::LOCALHOST,
        forwarded: "127.0.0.1",
        must_forward: false,
        label: "",
    };
    let one_by_one = FORGED_HEADERS.iter().map(|h| vec![*h]);
    for headers in one_by_one.chain([FORGED_HEADERS.to_vec()]) {
        cases += 2;
        failures.extend(check_headers(&mut app, &gate, &direct, &headers).await);
    }

    // From a trusted proxy: its `X-Forwarded-For` is extended by the proxy's address, and a
    // second list in another spelling is dropped, whichever comes first (lighttpd and PHP
    // keep one value per folded name, http.server and wsgiref join them).
    let forwarded = format!("{PROXIED_CLIENT}, {TRUSTED_PROXY}");
    let trusted = Origin {
        source: TRUSTED_PROXY.parse().unwrap(),
        forwarded: &forwarded,
        must_forward: true,
        label: " from a trusted proxy",
    };
    // A trusted proxy that appended its value behind a client's, on a line of its own or
    // after a comma: the app gets neither, so no app reads the client's first.
    let forged_proto = format!("{FORGED}, http");
    let forged_real_ip = format!("{FORGED_IP}, {PROXIED_CLIENT}");
    let lists: [&[(&str, &str)]; 5] = [
        &[
            ("X_Forwarded_For", FORGED_IP),
            ("X-Forwarded-For", PROXIED_CLIENT),
        ],
        &[
            ("X-Forwarded-For", PROXIED_CLIENT),
            ("X_Forwarded_For", FORGED_IP),
        ],
        &[
            ("X.Forwarded.For", FORGED_IP),
            ("X-Forwarded-For", PROXIED_CLIENT),
        ],
        &[
            ("X-Forwarded-For", PROXIED_CLIENT),
            ("X-Real-IP", FORGED_IP),
            ("x-real-ip", PROXIED_CLIENT),
            ("X-Forwarded-Host", FORGED),
            ("X-FORWARDED-HOST", "app.example"),
        ],
        &[
            ("X-Forwarded-For", PROXIED_CLIENT),
            ("X-Real-IP", &forged_real_ip),
            ("X-Forwarded-Proto", &forged_proto),
        ],
    ];
    for headers in lists {
        cases += 2;
        failures.extend(check_headers(&mut app, &gate, &trusted, headers).await);
    }

    // Two Authorization headers: 400, whatever their order.
    for pair in [
        [bearer, "Bearer forged!"],
        ["Bearer forged!", bearer],
        [bearer, bearer],
    ] {
        cases += 1;
        let headers = [("Authorization", pair[0]), ("Authorization", pair[1])];
        let reply = get(gate.port, "/api/me", &headers).await;
        let seen = app.take_seen().await;
        if reply.status != 400 || !seen.is_empty() {
            let which = if pair[0] == pair[1] {
                "twice the token"
            } else if pair[0] == bearer {
                "token then forged"
            } else {
                "forged then token"
            };
            failures.push(format!(
                "two Authorization headers ({which}): gate answered {}; {}",
                reply.short(),
                describe(&seen)
            ));
        }
    }

    if !bare_400.is_empty() {
        eprintln!("{server:?} behind {form:?}: a bare 400 from the HTTP server for {bare_400:?}");
    }
    assert!(
        failures.is_empty(),
        "{server:?} behind the {form:?} form: {} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(gate);
    drop(app);
}

/// Runs one server behind one form, bounded in time.
async fn run(server: Server, form: Form) {
    tokio::time::timeout(Duration::from_secs(180), boundary(server, form))
        .await
        .unwrap_or_else(|_| panic!("{server:?} behind {form:?}: not done within 180 s"));
}

both_forms! {
    nginx => |form| run(Server::Nginx, form),
    http_server => |form| run(Server::SimpleHttp, form),
    wsgiref => |form| run(Server::Wsgiref, form),
    werkzeug => |form| run(Server::Werkzeug, form),
    lighttpd_cgi => |form| run(Server::Lighttpd, form),
    php_server => |form| run(Server::Php, form),
}
