//! TLS termination, `[server.tls]`: each name gets its certificate (SNI), HTTP/2 over
//! ALPN, the sign-in flow and a protected call over it, TLS below 1.2 refused, a renewed
//! certificate served after SIGHUP without a restart, and the plain listener that only
//! redirects. `otpgate run` as a process, a test CA made with rcgen; the clients are curl
//! and `openssl s_client`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use axum::Router;
use axum::http::HeaderMap;
use common::curl::curl;
use common::{Inbox, WebhookReceiver, free_port, gate_command, serve, wait_for_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";

/// A CA that issues the test's server certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "otpgate test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes a certificate for `names` (common name `cn`) and its key into `dir` as
    /// `file.pem` and `file.key`.
    fn issue(&self, dir: &Path, file: &str, cn: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    }
}

/// An app that answers every request with its path and headers as JSON.
async fn header_echo() -> SocketAddr {
    serve(
        Router::new().fallback(|uri: axum::http::Uri, headers: HeaderMap| async move {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        value.to_str().unwrap_or("<binary>").into(),
                    )
                })
                .collect();
            axum::Json(json!({"path": uri.path(), "headers": headers}))
        }),
    )
    .await
}

/// `otpgate run` with a TLS listener, its standard output collected. Killed when dropped.
struct Gate {
    child: Child,
    plain: u16,
    tls: u16,
    dir: tempfile::TempDir,
    ca: PathBuf,
    lines: common::process::OutputLines,
}

impl Gate {
    /// `tls_extra`: more `[server.tls]` keys. The folder holds `a.pem`/`a.key` (a.test),
    /// `b.pem`/`b.key` (b.test) and the CA as `ca.pem`.
    async fn start(ca: &TestCa, app: SocketAddr, hook: &WebhookReceiver, tls_extra: &str) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        ca.issue(dir.path(), "a", "a.test", &["a.test"]);
        ca.issue(dir.path(), "b", "b.test", &["b.test"]);
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let (plain, tls) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{plain}\"\nupstream = \"http://{app}\"\nthreads = 1\n\n\
             [server.tls]\nlisten = \"127.0.0.1:{tls}\"\nhsts = \"max-age=31536000\"\n{tls_extra}\n\n\
             [[server.tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n\n\
             [[server.tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\n\n\
             [[protect]]\nprefix = \"/api/\"\n\n{}",
            common::webhook_delivery_toml(&hook.url)
        );
        std::fs::write(dir.path().join("gate.toml"), config).unwrap();
        let mut child = gate_command(&dir.path().join("gate.toml"), "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = common::process::OutputLines::collect(child.stdout.take().unwrap());
        wait_for_port(plain).await;
        wait_for_port(tls).await;
        Gate {
            child,
            plain,
            tls,
            dir,
            ca: ca_path,
            lines,
        }
    }

    /// curl's options to reach `https://name:PORT` on loopback, trusting the test CA.
    fn https(&self, name: &str, path: &str) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.ca.display().to_string(),
            "--resolve".into(),
            format!("{name}:{}:127.0.0.1", self.tls),
            format!("https://{name}:{}{path}", self.tls),
        ]
    }

    /// The first line after the first `skip` that contains `text`, waiting at most 10 s.
    async fn wait_for_line(&self, text: &str, skip: usize) -> String {
        self.lines.wait_for(text, skip).await
    }

    /// `otpgate reload --pid`; returns the number of lines written before.
    fn reload(&self) -> usize {
        let before = self.lines.count();
        let status = Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .args(["reload", "--pid", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "otpgate reload: {status}");
        before
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_client` to the TLS port asking for `name`, with `extra` options: whether
/// the handshake succeeded, and its output.
async fn s_client(port: u16, name: &str, extra: &[&str]) -> (bool, String) {
    let mut args: Vec<String> = [
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        name,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let output = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("openssl runs (install the openssl package)");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

/// The `subject=` line of an `openssl s_client` output.
fn subject(output: &str) -> &str {
    output
        .lines()
        .find(|line| line.starts_with("subject="))
        .unwrap_or_else(|| panic!("no certificate subject in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_gets_its_certificate_over_http2_and_old_tls_is_refused() {
    let ca = TestCa::new();
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start(&ca, header_echo().await, &hook, "").await;

    for name in ["a.test", "b.test"] {
        // curl checks the certificate against the CA and the name it dialed.
        let health = curl(&["--http2"], gate.https(name, "/healthz")).await;
        assert_eq!(
            (health.version.as_str(), health.status),
            ("2", 200),
            "{name}"
        );
        assert_eq!(
            health.header("strict-transport-security"),
            Some("max-age=31536000")
        );
        let (ok, output) = s_client(gate.tls, name, &[]).await;
        assert!(ok, "{output}");
        assert!(subject(&output).contains(name), "{name}: {output}");
    }
    // An unknown name gets the first certificate.
    let (_, output) = s_client(gate.tls, "other.test", &[]).await;
    assert!(subject(&output).contains("a.test"), "{output}");
    // HTTP/1.1 when the client offers only that.
    let h1 = curl(&["--http1.1"], gate.https("a.test", "/healthz")).await;
    assert_eq!((h1.version.as_str(), h1.status), ("1.1", 200));

    // TLS 1.2 is the least: the same client allowed everything (security level 0) gets
    // TLS 1.2, and no handshake at all when it offers only 1.1 or 1.0.
    let anything = ["-cipher", "DEFAULT@SECLEVEL=0"];
    let (ok, output) = s_client(gate.tls, "a.test", &[&["-tls1_2"][..], &anything].concat()).await;
    assert!(ok && output.contains("TLSv1.2"), "{output}");
    for old in ["-tls1_1", "-tls1"] {
        let (ok, output) = s_client(gate.tls, "a.test", &[&[old][..], &anything].concat()).await;
        assert!(!ok, "{old} was accepted:\n{output}");
        assert!(!output.contains("subject="), "{old}: {output}");
    }

    // The plain listener still serves (no redirect asked), with no HSTS.
    let plain = curl(
        &[],
        vec![format!("http://127.0.0.1:{}/healthz", gate.plain)],
    )
    .await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("strict-transport-security"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_flow_and_a_protected_call_work_over_http2_with_tls() {
    let ca = TestCa::new();
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start(&ca, header_echo().await, &hook, "").await;
    let json_post = |body: &Value| {
        vec![
            "--http2".to_owned(),
            "-H".to_owned(),
            "content-type: application/json".to_owned(),
            "--data-binary".to_owned(),
            body.to_string(),
        ]
    };

    let send = json_post(&json!({"email": ALICE}));
    let send: Vec<&str> = send.iter().map(String::as_str).collect();
    let sent = curl(&send, gate.https("a.test", "/auth/otp/send")).await;
    assert_eq!(
        (sent.version.as_str(), sent.status),
        ("2", 200),
        "{}",
        sent.body
    );
    assert_eq!(
        sent.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let code = (&hook).next_code().await;
    let verify = json_post(&json!({"email": ALICE, "code": code}));
    let verify: Vec<&str> = verify.iter().map(String::as_str).collect();
    let verified = curl(&verify, gate.https("a.test", "/auth/otp/verify")).await;
    assert_eq!((verified.version.as_str(), verified.status), ("2", 200));
    let cookie = verified.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    let token = verified.json()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();

    let authorization = format!("authorization: Bearer {token}");
    let called = curl(
        &[
            "--http2",
            "-H",
            &authorization,
            "-H",
            "x-auth-subject: admin",
            "-H",
            "x-forwarded-proto: http",
        ],
        gate.https("a.test", "/api/me"),
    )
    .await;
    assert_eq!((called.version.as_str(), called.status), ("2", 200));
    // The app's answer carries HSTS too.
    assert_eq!(
        called.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let headers = &called.json()["headers"];
    assert_eq!(headers["x-auth-subject"], ALICE);
    assert_eq!(headers["x-otpgate-jwt"], token.as_str());
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["host"], format!("a.test:{}", gate.tls));

    let refused = curl(&["--http2"], gate.https("b.test", "/api/me")).await;
    assert_eq!((refused.version.as_str(), refused.status), ("2", 401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_renewed_certificate_to_new_connections() {
    let ca = TestCa::new();
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start(&ca, header_echo().await, &hook, "").await;
    gate.wait_for_line("SIGHUP reloads the config", 0).await;
    let (_, output) = s_client(gate.tls, "a.test", &[]).await;
    assert!(subject(&output).contains("CN = a.test"), "{output}");

    // Renewed on disk: the same name, another certificate.
    ca.issue(gate.dir.path(), "a", "a.test renewed", &["a.test"]);
    let before = gate.reload();
    gate.wait_for_line("new TLS connections get the certificates", before)
        .await;
    let (_, output) = s_client(gate.tls, "a.test", &[]).await;
    assert!(subject(&output).contains("a.test renewed"), "{output}");
    let health = curl(&["--http2"], gate.https("a.test", "/healthz")).await;
    assert_eq!(health.status, 200);

    // A broken file is refused, naming its key; the running certificates stay.
    std::fs::write(gate.dir.path().join("b.key"), "not a key").unwrap();
    let before = gate.reload();
    let refused = gate.wait_for_line("reload refused", before).await;
    assert!(
        refused.contains("server.tls.certificates[1].key"),
        "{refused}"
    );
    let (_, output) = s_client(gate.tls, "b.test", &[]).await;
    assert!(subject(&output).contains("b.test"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_listener_only_redirects_to_https() {
    let ca = TestCa::new();
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start(&ca, header_echo().await, &hook, "redirect_http = true").await;
    let url = format!("http://a.test:{}/api/me?x=1", gate.plain);
    let resolve = format!("a.test:{}:127.0.0.1", gate.plain);
    let redirected = curl(&["--resolve", &resolve], vec![url]).await;
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.header("location"),
        Some(format!("https://a.test:{}/api/me?x=1", gate.tls).as_str())
    );
    // Nothing is served over plain HTTP, not even the gate's own endpoints.
    let health = curl(
        &[],
        vec![format!("http://127.0.0.1:{}/healthz", gate.plain)],
    )
    .await;
    assert_eq!(health.status, 308);
    let followed = curl(&["--http2"], gate.https("a.test", "/healthz")).await;
    assert_eq!(followed.status, 200);

    // Without a Host there is nowhere to send the client: a 400 in the gate's JSON.
    let raw = common::raw::exchange(
        std::net::Ipv4Addr::LOCALHOST,
        gate.plain,
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("an answer");
    let reply = common::raw::parse_reply(&raw, true, false).expect("a whole answer");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("\"error\":\"invalid_request\""),
        "{}",
        reply.text()
    );
}

/// `otpgate check` names the certificates' names; a file that is not a certificate stops
/// the start, naming the key.
#[test]
fn check_names_the_certificates_and_a_bad_file_stops_the_start_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    TestCa::new().issue(dir.path(), "a", "a.test", &["a.test", "*.a.test"]);
    let config = "[server]\nlisten = \"127.0.0.1:1\"\nh2c = true\n\n\
                  [server.tls]\nlisten = \"127.0.0.1:2\"\n\n\
                  [[server.tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    std::fs::write(dir.path().join("gate.toml"), config).unwrap();
    let (ok, stdout, stderr) = common::otpgate(dir.path(), &["check", "--config", "gate.toml"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("tls        127.0.0.1:2 (a.test *.a.test)"),
        "{stdout}"
    );
    assert!(stdout.contains("h2c        on 127.0.0.1:1"), "{stdout}");

    std::fs::write(dir.path().join("a.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("a.key"), "not a key").unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:1\"\n\n[server.tls]\nlisten = \"127.0.0.1:2\"\n\n\
                  [[server.tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    std::fs::write(dir.path().join("gate.toml"), config).unwrap();
    let (ok, _, stderr) = common::otpgate(dir.path(), &["check", "--config", "gate.toml"]);
    assert!(!ok);
    assert!(
        stderr.contains("server.tls.certificates[0].cert") && stderr.contains("a.pem"),
        "{stderr}"
    );
}

/// How long a raw read may wait: a guard against a hang, not a timed assertion.
const LIVENESS: std::time::Duration = std::time::Duration::from_secs(10);

/// One connection to a listener, written to as is and read with every read under
/// [`LIVENESS`].
struct RawConnection {
    stream: tokio::net::TcpStream,
    received: Vec<u8>,
}

impl RawConnection {
    async fn open(port: u16) -> RawConnection {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        let (stream, received) = (stream.unwrap(), Vec::new());
        RawConnection { stream, received }
    }

    /// Writes `request`; a server that answers before reading a body, and closes, may
    /// refuse the rest of it, so a failed write is left to the reads to judge.
    async fn send(&mut self, request: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stream.write_all(request).await;
    }

    /// One read: the bytes it got, none when the server closed (a reset after a body it
    /// did not read is a close too). Panics when nothing comes within [`LIVENESS`].
    async fn read(&mut self, what: &str) -> usize {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 8192];
        let read = tokio::time::timeout(LIVENESS, self.stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: nothing within {LIVENESS:?}"));
        match read {
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// The next answer, length-framed as every answer of the redirect is.
    async fn answer(&mut self, what: &str) -> common::raw::RawReply {
        loop {
            if let Some(reply) = common::raw::parse_reply(&self.received, false, false) {
                let length = reply.header("content-length").map(str::parse::<usize>);
                assert_eq!(length, Some(Ok(reply.body.len())), "{what}");
                let head = self.received.windows(4).position(|w| w == b"\r\n\r\n");
                let used = head.unwrap() + 4 + reply.body.len();
                self.received.drain(..used);
                return reply;
            }
            let got = self.read(what).await;
            assert!(
                got > 0,
                "{what}: closed before a whole answer: {:?}",
                self.text()
            );
        }
    }

    /// Asserts the server closes the connection, with nothing more sent.
    async fn closed(&mut self, what: &str) {
        while self.read(what).await > 0 {}
        assert!(
            self.received.is_empty(),
            "{what}: more after the answer: {:?}",
            self.text()
        );
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// The plain listener answers HTTP/1.0, absolute-form targets and requests with a body
/// at once, and then closes the connection or keeps it as HTTP says: HTTP/1.0 closes
/// unless the client asked for keep-alive, and what stays open serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_answers_every_request_form_and_closes_or_keeps_the_connection() {
    let ca = TestCa::new();
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start(&ca, header_echo().await, &hook, "redirect_http = true").await;
    let https = |host: &str, path: &str| format!("https://{host}:{}{path}", gate.tls);

    // HTTP/1.0 without a Host: the refusal, then the close the client reads to.
    let mut conn = RawConnection::open(gate.plain).await;
    conn.send(b"GET /x HTTP/1.0\r\n\r\n").await;
    let reply = conn.answer("HTTP/1.0 without Host").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("\"error\":\"invalid_request\""));
    assert_eq!(reply.header("connection"), Some("close"));
    conn.closed("HTTP/1.0 without Host").await;

    // HTTP/1.0 with a Host: redirected, then closed.
    let mut conn = RawConnection::open(gate.plain).await;
    conn.send(b"GET /x?y=1 HTTP/1.0\r\nHost: a.test\r\n\r\n")
        .await;
    let reply = conn.answer("HTTP/1.0 with Host").await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some(https("a.test", "/x?y=1").as_str())
    );
    assert_eq!(reply.header("connection"), Some("close"));
    conn.closed("HTTP/1.0 with Host").await;

    // HTTP/1.0 asking for keep-alive gets it: the next request is answered, and closed.
    let mut conn = RawConnection::open(gate.plain).await;
    conn.send(b"GET /one HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let reply = conn.answer("HTTP/1.0 keep-alive").await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("connection"), Some("keep-alive"));
    conn.send(b"GET /two HTTP/1.0\r\nHost: b.test\r\n\r\n")
        .await;
    let reply = conn.answer("HTTP/1.0 after keep-alive").await;
    assert_eq!(
        reply.header("location"),
        Some(https("b.test", "/two").as_str())
    );
    conn.closed("HTTP/1.0 after keep-alive").await;

    // An absolute-form target names the host, with or without a Host header; HTTP/1.1
    // keeps the connection for the next request.
    let mut conn = RawConnection::open(gate.plain).await;
    conn.send(b"GET http://a.test/x?y HTTP/1.1\r\n\r\n").await;
    let reply = conn.answer("absolute-form").await;
    assert_eq!(reply.status, 308, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some(https("a.test", "/x?y").as_str())
    );
    conn.send(b"GET http://b.test:80/z HTTP/1.1\r\nHost: b.test:80\r\nConnection: close\r\n\r\n")
        .await;
    let reply = conn.answer("absolute-form with Host").await;
    assert_eq!(
        reply.header("location"),
        Some(https("b.test", "/z").as_str())
    );
    conn.closed("absolute-form with Host, Connection: close")
        .await;

    // A body, small or larger than one read: the answer comes without waiting for it to be
    // read, and the connection is closed (keeping it would mean reading the body first).
    for size in [11, 64 * 1024] {
        let what = format!("POST with a {size}-byte body");
        let mut conn = RawConnection::open(gate.plain).await;
        let mut request =
            format!("POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: {size}\r\n\r\n")
                .into_bytes();
        request.resize(request.len() + size, b'x');
        conn.send(&request).await;
        let reply = conn.answer(&what).await;
        assert_eq!(reply.status, 308, "{what}");
        assert_eq!(
            reply.header("location"),
            Some(https("a.test", "/form").as_str())
        );
        assert_eq!(reply.header("connection"), Some("close"), "{what}");
        conn.closed(&what).await;
    }
}
