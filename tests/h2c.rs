//! HTTP/2 with prior knowledge (h2c) on the proxy's plain listener, `[server] h2c = true`:
//! the sign-in flow and a protected call over it, the app getting the authority as its
//! `Host`, and HTTP/2 connections outliving the request-head deadline. `otpgate run` as
//! a process; the client is curl (`--http2-prior-knowledge`) and the `h2` crate.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use bytes::Bytes;
use common::curl::{Answer, curl};
use common::{Inbox, WebhookReceiver, free_port, gate_command, serve, wait_for_port};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";

/// An app that answers every request with its method, path and headers as JSON.
async fn header_echo() -> SocketAddr {
    serve(Router::new().fallback(
        |method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap| async move {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        value.to_str().unwrap_or("<binary>").into(),
                    )
                })
                .collect();
            axum::Json(json!({"method": method.as_str(), "path": uri.path(), "headers": headers}))
        },
    ))
    .await
}

/// `otpgate run` on a config file in a temporary folder. Killed when dropped.
struct Gate {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Gate {
    async fn start(app: SocketAddr, hook: &WebhookReceiver) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://{app}\"\nthreads = 1\n\
             h2c = true\nheader_timeout = \"1s\"\n\n\
             [[protect]]\nprefix = \"/api/\"\n\n{}",
            common::webhook_delivery_toml(&hook.url)
        );
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, config).unwrap();
        let child = gate_command(&path, "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port).await;
        Gate {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

/// `POST url` with a JSON body, over h2c.
async fn post_h2c(url: &str, body: &Value) -> Answer {
    let body = body.to_string();
    curl(
        &[],
        args(&[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            url,
        ]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_flow_and_a_protected_call_work_over_h2c() {
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start(header_echo().await, &hook).await;

    let sent = post_h2c(&gate.url("/auth/otp/send"), &json!({"email": ALICE})).await;
    assert_eq!(
        (sent.version.as_str(), sent.status),
        ("2", 200),
        "{}",
        sent.body
    );
    let code = (&hook).next_code().await;
    let verified = post_h2c(
        &gate.url("/auth/otp/verify"),
        &json!({"email": ALICE, "code": code}),
    )
    .await;
    assert_eq!((verified.version.as_str(), verified.status), ("2", 200));
    let token = verified.json()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();

    // Spelled otherwise than canonically, with a forged identity and a forged scheme.
    let authorization = format!("authorization: Bearer {token}");
    let called = curl(
        &[],
        args(&[
            "--http2-prior-knowledge",
            "--path-as-is",
            "-H",
            &authorization,
            "-H",
            "x-auth-subject: admin",
            "-H",
            "x-forwarded-proto: https",
            &gate.url("/api/./%6De"),
        ]),
    )
    .await;
    assert_eq!((called.version.as_str(), called.status), ("2", 200));
    let seen = called.json();
    assert_eq!(
        seen["path"], "/api/me",
        "the canonical target reaches the app"
    );
    let headers = &seen["headers"];
    assert_eq!(headers["x-auth-subject"], ALICE);
    assert_eq!(headers["x-auth-email"], ALICE);
    assert_eq!(headers["x-otpgate-jwt"], token.as_str());
    // The HTTP/2 authority becomes the app's Host (it was empty before).
    assert_eq!(headers["host"], format!("127.0.0.1:{}", gate.port));
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    // No HSTS over plain HTTP.
    assert_eq!(called.header("strict-transport-security"), None);

    // Without the token: refused, over h2c as over HTTP/1.
    let refused = curl(
        &[],
        args(&["--http2-prior-knowledge", &gate.url("/api/me")]),
    )
    .await;
    assert_eq!((refused.version.as_str(), refused.status), ("2", 401));

    // HTTP/1.1 still works on the same listener.
    let plain = curl(&[], args(&["--http1.1", &gate.url("/healthz")])).await;
    assert_eq!((plain.version.as_str(), plain.status), ("1.1", 200));
}

/// `GET uri` on an open HTTP/2 connection: the status, or the connection's error.
async fn h2_get(client: &h2::client::SendRequest<Bytes>, uri: &str) -> Result<u16, h2::Error> {
    let request = http::Request::get(uri).body(()).unwrap();
    let (response, _) = client.clone().ready().await?.send_request(request, true)?;
    let response = response.await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_outlives_the_request_head_deadline() {
    let hook = WebhookReceiver::start().await;
    let gate = Gate::start(header_echo().await, &hook).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gate.port))
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let uri = gate.url("/healthz");
    assert_eq!(h2_get(&client, &uri).await.unwrap(), 200);
    // header_timeout is 1 s: an HTTP/1 connection's next head would be cut off after it,
    // an HTTP/2 connection is only closed when idle for keepalive_timeout (60 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        h2_get(&client, &uri)
            .await
            .expect("the same connection still serves"),
        200
    );
    assert!(!connection.is_finished());
}
