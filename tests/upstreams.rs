//! An https upstream: the app's certificate is verified against the configured CA and the
//! upstream's host; a certificate from another CA gets the client a 502
//! `upstream_unavailable`. The app is `python3`'s http.server wrapped in its ssl module,
//! with certificates from a test CA made with rcgen.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, serve_proxy};
use otpgate::Gate;
use otpgate::http::Front;
use otpgate::pingora::{Balance, OtpProxy, Upstream, UpstreamPool, UpstreamTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A CA that issues the apps' certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes a certificate for the DNS name `name` and the IP address `ip` into `dir` as
    /// `app.pem` and `app.key`.
    fn issue(&self, dir: &Path, name: &str, ip: IpAddr) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(ip));
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join("app.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("app.key"), key.serialize_pem()).unwrap();
    }
}

/// An https app: answers every GET with its path and Host header as JSON, every POST
/// with a 401 that names its path. Killed when
/// dropped.
struct TlsApp {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

const TLS_APP: &str = r#"
import http.server, json, socket, ssl, sys, time
class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/health" and sys.argv[3].startswith("sick"):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"path": self.path, "host": self.headers.get("Host"), "name": sys.argv[3]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"error": "wrong_password", "path": self.path}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    def handle_error(self, request, client_address):
        pass  # the checks' bare connects and early closes
server = Server((sys.argv[1], int(sys.argv[2])), App)
if len(sys.argv) > 4:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl TlsApp {
    /// Serves on `ip` with a certificate from `ca` for `localhost` and `ip`.
    async fn start(ca: &TestCa, ip: IpAddr) -> TlsApp {
        TlsApp::spawn(Some(ca), ip, "tls").await
    }

    /// Serves plain http on 127.0.0.1, naming itself `name` in its answers.
    async fn plain(name: &str) -> TlsApp {
        TlsApp::spawn(None, "127.0.0.1".parse().unwrap(), name).await
    }

    async fn spawn(ca: Option<&TestCa>, ip: IpAddr, name: &str) -> TlsApp {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("python3");
        command.args(["-c", TLS_APP, &ip.to_string(), &port.to_string(), name]);
        if let Some(ca) = ca {
            ca.issue(dir.path(), "localhost", ip);
            command
                .arg(dir.path().join("app.pem"))
                .arg(dir.path().join("app.key"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs (install the python3 package)");
        let addr = SocketAddr::new(ip, port);
        let app = TlsApp {
            child,
            addr,
            _dir: dir,
        };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return app;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the https app never listened on {addr}");
    }
}

impl TlsApp {
    /// Stops the app, its connections with it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn front() -> Front {
    Front::with_defaults(Gate::builder().build().unwrap())
}

fn trusting(ca: &TestCa) -> UpstreamTls {
    UpstreamTls::from_ca_pem(ca.pem.as_bytes()).unwrap()
}

async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Where `localhost` resolves first, as the proxy's lookup picks it.
async fn localhost_ip() -> IpAddr {
    tokio::net::lookup_host(("localhost", 0))
        .await
        .unwrap()
        .next()
        .expect("localhost resolves")
        .ip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_with_its_ca_file_and_verified_for_its_name() {
    otpgate::pingora::install_crypto_provider();
    let ca = TestCa::new("app CA");
    let ip = localhost_ip().await;
    let app = TlsApp::start(&ca, ip).await;
    let upstream = Upstream::named("localhost", app.addr.port(), Duration::from_secs(30))
        .with_tls(trusting(&ca));
    let base = serve_proxy(OtpProxy::new(front(), upstream.clone())).await;
    // The name is looked up once the proxy runs (its first request starts the lookups).
    let _ = get(&base, "/").await;
    for _ in 0..500 {
        if upstream.current().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        upstream.current(),
        Some(app.addr),
        "localhost never resolved"
    );
    let (status, body) = get(&base, "/hello?x=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["path"], "/hello?x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_written_as_an_ip_is_verified_for_that_ip() {
    otpgate::pingora::install_crypto_provider();
    let ca = TestCa::new("app CA");
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let app = TlsApp::start(&ca, ip).await;
    let upstream = Upstream::at(app.addr).with_tls(trusting(&ca));
    let base = serve_proxy(OtpProxy::new(front(), upstream)).await;
    let (status, body) = get(&base, "/by-ip").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["path"], "/by-ip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_from_another_ca_gets_a_502() {
    otpgate::pingora::install_crypto_provider();
    let (app_ca, other_ca) = (TestCa::new("app CA"), TestCa::new("another CA"));
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let app = TlsApp::start(&app_ca, ip).await;
    let unavailable = json!({"error": "upstream_unavailable", "message": "the app behind the gate is unavailable"});

    let wrong_ca = Upstream::at(app.addr).with_tls(trusting(&other_ca));
    let base = serve_proxy(OtpProxy::new(front(), wrong_ca)).await;
    assert_eq!(
        get(&base, "/x").await,
        (StatusCode::BAD_GATEWAY, unavailable.clone())
    );

    // The right CA but a name the certificate does not carry.
    let wrong_name = Upstream {
        host: "127.0.0.2".into(),
        ..Upstream::at(app.addr).with_tls(trusting(&app_ca))
    };
    let base = serve_proxy(OtpProxy::new(front(), wrong_name)).await;
    assert_eq!(
        get(&base, "/x").await,
        (StatusCode::BAD_GATEWAY, unavailable)
    );

    // The system's roots do not know the test CA either.
    let system = Upstream::at(app.addr).with_tls(UpstreamTls::system_roots());
    let base = serve_proxy(OtpProxy::new(front(), system)).await;
    assert_eq!(get(&base, "/x").await.0, StatusCode::BAD_GATEWAY);
}

/// The gate's own request to the app (the mediated baanx login) is verified alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mediated_login_reaches_an_https_upstream_only_with_a_trusted_certificate() {
    otpgate::pingora::install_crypto_provider();
    let (app_ca, other_ca) = (TestCa::new("app CA"), TestCa::new("another CA"));
    let app = TlsApp::start(&app_ca, "127.0.0.1".parse().unwrap()).await;
    let login = |tls: UpstreamTls| async move {
        let front = otpgate::config::Config::from_file("config/baanx.toml".as_ref())
            .unwrap()
            .build()
            .unwrap();
        let upstream = Upstream::at(app.addr).with_tls(tls);
        let base = serve_proxy(OtpProxy::new(front, upstream)).await;
        let response = reqwest::Client::new()
            .post(format!("{base}/v1/auth/login"))
            .header("x-client-key", "demo-client-key")
            .json(&json!({"email": "ann@example.com", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, body) = login(trusting(&app_ca)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body["error"], "wrong_password",
        "the app's own answer: {body}"
    );
    let (status, body) = login(trusting(&other_ca)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "upstream_unavailable");
}

/// A proxy in front of `apps` balanced by `balance`, checked every second; returns its
/// base URL.
async fn pool_proxy(apps: &[&TlsApp], balance: Balance) -> String {
    let instances = apps.iter().map(|app| Upstream::at(app.addr)).collect();
    checked_pool_proxy(UpstreamPool::new(
        instances,
        balance,
        Duration::from_secs(1),
    ))
    .await
}

async fn checked_pool_proxy(pool: UpstreamPool) -> String {
    let checks = pool.clone();
    tokio::spawn(async move { checks.check_forever(Duration::from_secs(1)).await });
    serve_proxy(OtpProxy::new(front(), pool.primary().clone()).with_pool(pool)).await
}

/// The name of the instance that answered `path`, and the status.
async fn answered_by(client: &reqwest::Client, base: &str, path: &str) -> (StatusCode, String) {
    let response = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["name"].as_str().unwrap_or("-").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_sends_every_instance_its_share() {
    let (a, b) = (TlsApp::plain("a").await, TlsApp::plain("b").await);
    let base = pool_proxy(&[&a, &b], Balance::RoundRobin).await;
    let client = reqwest::Client::new();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let (status, name) = answered_by(&client, &base, "/").await;
        assert_eq!(status, StatusCode::OK);
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(counts, [("a".to_owned(), 10), ("b".to_owned(), 10)].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_gets_no_more_requests_and_clients_see_no_error() {
    let (mut a, b) = (TlsApp::plain("a").await, TlsApp::plain("b").await);
    let base = pool_proxy(&[&a, &b], Balance::RoundRobin).await;
    let client = reqwest::Client::new();
    assert_eq!(answered_by(&client, &base, "/").await.0, StatusCode::OK);
    a.kill();
    // One check interval and a margin: by then the check has seen it go.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut answered = 0;
    while std::time::Instant::now() < until {
        assert_eq!(
            answered_by(&client, &base, "/").await,
            (StatusCode::OK, "b".to_owned())
        );
        answered += 1;
    }
    assert!(answered >= 10, "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_fails_its_health_path_is_skipped() {
    let (a, sick) = (TlsApp::plain("a").await, TlsApp::plain("sick").await);
    let instances = vec![Upstream::at(a.addr), Upstream::at(sick.addr)];
    let pool = UpstreamPool::new(instances, Balance::RoundRobin, Duration::from_secs(1))
        .with_health_path("/health");
    let base = checked_pool_proxy(pool).await;
    // The first check runs as the proxy starts; a margin for it to finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        assert_eq!(
            answered_by(&client, &base, "/").await,
            (StatusCode::OK, "a".to_owned())
        );
    }
}

/// The health path of an https instance is fetched over TLS and verified as proxied
/// requests are: an instance whose certificate the CA file does not vouch for fails its
/// check, so no request is even tried there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_instance_whose_certificate_is_untrusted_fails_its_health_path() {
    let (ca, rogue_ca) = (TestCa::new("apps CA"), TestCa::new("another CA"));
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let good = TlsApp::start(&ca, ip).await;
    let rogue = TlsApp::start(&rogue_ca, ip).await;
    let tls = trusting(&ca);
    let instances = vec![
        Upstream::at(good.addr).with_tls(tls.clone()),
        Upstream::at(rogue.addr).with_tls(tls),
    ];
    let pool = UpstreamPool::new(instances, Balance::RoundRobin, Duration::from_secs(1))
        .with_health_path("/health");
    // Before any check, both count as healthy.
    let before: Vec<SocketAddr> = (0..2).map(|_| pool.pick().unwrap().addr()).collect();
    assert!(before.contains(&rogue.addr), "{before:?}");
    let checks = pool.clone();
    let checking = tokio::spawn(async move { checks.check_forever(Duration::from_secs(1)).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..6 {
        assert_eq!(pool.pick().unwrap().addr(), good.addr);
    }
    checking.abort();
}

/// An instance written as a host name joins the pool once its name is looked up, at the
/// first check round, without a blocking lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_at_a_host_name_joins_once_looked_up() {
    let ip = localhost_ip().await;
    let app = TlsApp::spawn(None, ip, "named").await;
    let named = Upstream::named("localhost", app.addr.port(), Duration::from_secs(30));
    let pool = UpstreamPool::new(vec![named], Balance::RoundRobin, Duration::from_secs(1));
    // The lookup runs on the runtime: the pool may or may not know the address yet, but
    // whatever it picks is the app's.
    if let Some(picked) = pool.pick() {
        assert_eq!(picked.addr(), app.addr);
    }
    let base = checked_pool_proxy(pool).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            answered_by(&client, &base, "/").await,
            (StatusCode::OK, "named".to_owned())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_idle_instance() {
    let (a, b) = (TlsApp::plain("a").await, TlsApp::plain("b").await);
    let base = pool_proxy(&[&a, &b], Balance::LeastConnections).await;
    let client = reqwest::Client::new();
    let slow = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { answered_by(&client, &base, "/slow").await })
    };
    // Time for the slow request to reach its instance (it is held there for 3 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fast = Vec::new();
    for _ in 0..6 {
        fast.push(answered_by(&client, &base, "/").await);
    }
    let (status, busy) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let idle = if busy == "a" { "b" } else { "a" };
    assert!(
        fast.iter()
            .all(|answer| *answer == (StatusCode::OK, idle.to_owned())),
        "busy {busy}: {fast:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_instance_down_readyz_names_the_upstream() {
    let (mut a, mut b) = (TlsApp::plain("a").await, TlsApp::plain("b").await);
    let base = pool_proxy(&[&a, &b], Balance::RoundRobin).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    a.kill();
    b.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_ready", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("upstream"),
        "{body}"
    );
    let response = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

/// `otpgate run` with `upstreams`: both instances answer, and once one stops (and one
/// check interval passed) every request goes to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpgate_run_balances_over_upstreams_and_checks_them() {
    let (mut a, b) = (TlsApp::plain("a").await, TlsApp::plain("b").await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\n\
         upstreams = [\"http://{}\", \"http://{}\"]\nupstream_health_interval = \"1s\"\n",
        a.addr, b.addr
    );
    std::fs::write(dir.path().join("gate.toml"), config).unwrap();
    let child = common::gate_command(&dir.path().join("gate.toml"), "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _gate = KillOnDrop(child);
    common::wait_for_port(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, name) = answered_by(&client, &base, "/").await;
        assert_eq!(status, StatusCode::OK);
        names.insert(name);
    }
    assert_eq!(names, ["a".to_owned(), "b".to_owned()].into());
    a.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Ready still: the checks moved the readiness probe from the first instance to `b`.
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    for _ in 0..10 {
        assert_eq!(
            answered_by(&client, &base, "/").await,
            (StatusCode::OK, "b".to_owned())
        );
    }
}

/// A child process, killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `otpgate check` shows an https upstream and its CA file; a CA file that is not a
/// certificate, or one for a plain upstream, stops the start naming the key.
#[test]
fn check_shows_an_https_upstream_and_refuses_a_bad_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), TestCa::new("app CA").pem).unwrap();
    let write = |config: &str| std::fs::write(dir.path().join("gate.toml"), config).unwrap();
    let check = || common::otpgate(dir.path(), &["check", "--config", "gate.toml"]);

    write("[server]\nupstream = \"https://app.internal:8443\"\nupstream_ca_file = \"ca.pem\"\n");
    let (ok, stdout, stderr) = check();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("upstream   https://app.internal:8443 (certificate verified against 1 CA certificate(s))"),
        "{stdout}"
    );

    write("[server]\nupstream = \"https://app.internal\"\n");
    let (ok, stdout, stderr) = check();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "upstream   https://app.internal:443 (certificate verified against system roots)"
        ),
        "{stdout}"
    );

    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    write("[server]\nupstream = \"https://app.internal\"\nupstream_ca_file = \"bad.pem\"\n");
    let (ok, _, stderr) = check();
    assert!(!ok);
    assert!(
        stderr.contains("server.upstream_ca_file") && stderr.contains("bad.pem"),
        "{stderr}"
    );

    write("[server]\nupstream = \"https://app.internal\"\nupstream_ca_file = \"missing.pem\"\n");
    let (ok, _, stderr) = check();
    assert!(!ok);
    assert!(
        stderr.contains("server.upstream_ca_file") && stderr.contains("missing.pem"),
        "{stderr}"
    );

    write("[server]\nupstream = \"http://app.internal\"\nupstream_ca_file = \"ca.pem\"\n");
    let (ok, _, stderr) = check();
    assert!(!ok);
    assert!(stderr.contains("server.upstream_ca_file"), "{stderr}");

    write(
        "[server]\nupstreams = [\"http://127.0.0.1:3001\", \"http://app.internal:3002\"]\n\
         upstream_balance = \"least_connections\"\nupstream_health_interval = \"2s\"\n\
         upstream_health_path = \"/health\"\n",
    );
    let (ok, stdout, stderr) = check();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "upstreams  127.0.0.1:3001 app.internal:3002 (LeastConnections, checked every 2s with GET /health)"
        ),
        "{stdout}"
    );
    for (config, key) in [
        (
            "upstream = \"http://127.0.0.1:3000\"\nupstreams = [\"http://127.0.0.1:3001\"]",
            "server.upstream",
        ),
        (
            "upstreams = [\"http://127.0.0.1:3001\", \"https://127.0.0.1:3002\"]",
            "server.upstreams[1]",
        ),
        (
            "upstreams = [\"http://127.0.0.1:3001\"]\nupstream_balance = \"random\"",
            "server.upstream_balance",
        ),
        (
            "upstream_health_interval = \"1s\"",
            "server.upstream_health_interval",
        ),
        (
            "upstreams = [\"http://127.0.0.1:3001\"]\nupstream_health_path = \"/a b\"",
            "server.upstream_health_path",
        ),
    ] {
        write(&format!("[server]\n{config}\n"));
        let (ok, _, stderr) = check();
        assert!(!ok, "{config}");
        assert!(stderr.contains(&format!("`{key}`")), "{config}: {stderr}");
    }

    write("[server]\nupstream = \"ftp://app.internal\"\n");
    let (ok, _, stderr) = check();
    assert!(!ok);
    assert!(stderr.contains("server.upstream"), "{stderr}");
}
