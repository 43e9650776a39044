//! Live reload of `otpgate run` as a process: `otpgate reload` (SIGHUP) puts a changed
//! protect list in force on a connection that stays open, keeps the pending codes, and
//! refuses a broken file, keeping the running config.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use axum::Router;
use common::{
    Inbox, WebhookReceiver, free_port, gate_command, send_code, serve, verify_code, wait_for_port,
    webhook_delivery_toml, with_listen,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// The gate as a process on a config file it can be told to read again, its standard
/// output collected line by line. Killed when dropped.
struct ReloadingGate {
    child: Child,
    port: u16,
    path: PathBuf,
    lines: common::process::OutputLines,
    _dir: tempfile::TempDir,
}

impl ReloadingGate {
    async fn start(config: &str) -> ReloadingGate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, with_listen(config, port)).unwrap();
        let mut child = gate_command(&path, "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = common::process::OutputLines::collect(child.stdout.take().unwrap());
        let gate = ReloadingGate {
            child,
            port,
            path,
            lines,
            _dir: dir,
        };
        wait_for_port(port).await;
        gate.wait_for_line("SIGHUP reloads the config", 0).await;
        gate
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn line_count(&self) -> usize {
        self.lines.count()
    }

    /// The first line after the first `skip` that contains `text`, waiting at most 10 s.
    async fn wait_for_line(&self, text: &str, skip: usize) -> String {
        self.lines.wait_for(text, skip).await
    }

    /// Writes `config` as the file and runs `otpgate reload --pid`; returns the number of
    /// lines written before, for [`wait_for_line`](Self::wait_for_line).
    fn reload(&self, config: &str) -> usize {
        std::fs::write(&self.path, with_listen(config, self.port)).unwrap();
        let before = self.line_count();
        let status = Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .args(["reload", "--pid", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "otpgate reload: {status}");
        before
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReloadingGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 connection, kept open: a request on it fails if the server closed it.
struct Connection(AsyncBufReader<TcpStream>);

impl Connection {
    async fn open(port: u16) -> Connection {
        Connection(AsyncBufReader::new(
            TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        ))
    }

    /// `GET path` on this connection: the status, or a panic if the connection is gone.
    async fn get(&mut self, path: &str, token: Option<&str>) -> u16 {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: gate\r\n{auth}\r\n");
        self.0
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("the gate closed the connection");
        let mut status_line = String::new();
        let read = self.0.read_line(&mut status_line).await.unwrap();
        assert!(
            read > 0,
            "the gate closed the connection before answering {path}"
        );
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut length = 0;
        loop {
            let mut header = String::new();
            self.0.read_line(&mut header).await.unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
            assert!(
                !(name.eq_ignore_ascii_case("connection") && value.trim() == "close"),
                "the gate means to close the connection: {status_line}"
            );
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).await.unwrap();
        status
    }
}

fn config(upstream: &str, hook: &str, protect: &str, threads: usize) -> String {
    format!(
        "[server]\nupstream = \"http://{upstream}\"\nthreads = {threads}\n\n\
         [[protect]]\nprefix = \"{protect}\"\n\n{}",
        webhook_delivery_toml(hook)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_the_changed_file_and_refuses_a_broken_one() {
    let hook = WebhookReceiver::start().await;
    let upstream = serve(Router::new().fallback(|| async { "app" })).await;
    let upstream = upstream.to_string();
    let gate = ReloadingGate::start(&config(&upstream, &hook.url, "/a/", 1)).await;
    let base = gate.base();
    let client = reqwest::Client::new();

    let mut connection = Connection::open(gate.port).await;
    assert_eq!(connection.get("/b/x", None).await, 200);
    assert_eq!(connection.get("/a/x", None).await, 401);
    // A code sent before the reload.
    assert_eq!(
        send_code(&client, &base, ALICE).await.status(),
        StatusCode::OK
    );
    let code = (&hook).next_code().await;

    // /b/ protected instead of /a/, and a thread count that only a restart changes.
    let before = gate.reload(&config(&upstream, &hook.url, "/b/", 2));
    gate.wait_for_line("config reloaded", before).await;
    let restart = gate.wait_for_line("server.threads", before).await;
    assert!(restart.contains("takes a restart"), "{restart}");
    // The same connection, never closed, now judged by the new file.
    assert_eq!(connection.get("/b/x", None).await, 401);
    assert_eq!(connection.get("/a/x", None).await, 200);

    // The code sent before the reload still verifies: the store and its secret were kept.
    let verified = verify_code(&client, &base, ALICE, &code).await;
    assert_eq!(verified.status(), StatusCode::OK);
    let session: Value = verified.json().await.unwrap();
    let token = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(connection.get("/b/x", Some(&token)).await, 200);

    // A file with a mistake: refused, naming the file, the key and the line; the running
    // config stays.
    let broken =
        config(&upstream, &hook.url, "/a/", 2).replace("prefix = \"/a/\"", "prefix = \"a\"");
    let before = gate.reload(&broken);
    let refused = gate.wait_for_line("reload refused", before).await;
    let file = gate.path().display().to_string();
    assert!(refused.contains(&file), "{refused}");
    assert!(refused.contains("protect"), "{refused}");
    assert!(
        refused.contains(&format!("{file}:")),
        "no line in {refused}"
    );
    assert_eq!(connection.get("/b/x", None).await, 401);
    assert_eq!(connection.get("/a/x", None).await, 200);
    assert_eq!(connection.get("/b/x", Some(&token)).await, 200);
}

/// 32 bytes or more: the secret that keys code hashes, kept across the reload.
const OTP_SECRET: &str = "reload-test-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_engine_keeps_the_store_and_the_running_key() {
    a_new_engine_keeps_what_was_issued(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_engine_keeps_the_running_code_secret_when_the_file_sets_none() {
    a_new_engine_keeps_what_was_issued(false).await;
}

/// An engine setting changes under a running gate, with `otp.secret` in the file or
/// without it (then the secret made at start must carry over).
async fn a_new_engine_keeps_what_was_issued(with_secret: bool) {
    let hook = WebhookReceiver::start().await;
    let upstream = serve(Router::new().fallback(|| async { "app" })).await;
    let upstream = upstream.to_string();
    let file = |ttl: &str| {
        let secret = match with_secret {
            true => format!("secret = \"{OTP_SECRET}\"\n"),
            false => String::new(),
        };
        format!(
            "{}\n[otp]\n{secret}ttl = \"{ttl}\"\n",
            config(&upstream, &hook.url, "/a/", 1)
        )
    };
    let gate = ReloadingGate::start(&file("5m")).await;
    let base = gate.base();
    let client = reqwest::Client::new();
    let mut connection = Connection::open(gate.port).await;

    // A session from before, and a code sent before.
    let signed_in = common::sign_in(&client, &base, &hook, ALICE).await;
    assert_eq!(
        connection.get("/a/x", Some(&signed_in.access_token)).await,
        200
    );
    let sent = send_code(&client, &base, BOB).await;
    assert_eq!(sent.status(), StatusCode::OK);
    let code = (&hook).next_code().await;

    // An engine setting changes: a new engine, on the running store and key.
    let before = gate.reload(&file("6m"));
    gate.wait_for_line("config reloaded", before).await;
    let engine = gate.wait_for_line("reload: a new engine", before).await;
    assert!(engine.contains("store_kept=true"), "{engine}");

    // The token made before still passes (the key made at start was kept), and the code
    // sent before still verifies (the store and the secret were kept).
    assert_eq!(
        connection.get("/a/x", Some(&signed_in.access_token)).await,
        200
    );
    assert_eq!(connection.get("/a/x", None).await, 401);
    let verified = verify_code(&client, &base, BOB, &code).await;
    assert_eq!(verified.status(), StatusCode::OK);
}
