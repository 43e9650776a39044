//! An upstream written as a host name follows DNS: the proxy starts before the name
//! resolves or the app listens, and answers 502 `upstream_unavailable` until both do.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, gate_command, serve_proxy, wait_for_port, with_listen};
use otpgate::Gate;
use otpgate::http::Front;
use otpgate::pingora::{OtpProxy, Upstream};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn front() -> Front {
    Front::with_defaults(Gate::builder().build().unwrap())
}

/// A client that opens a new connection for each request.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "upstream_unavailable", "message": "the app behind the gate is unavailable"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_upstream_answers_once_the_app_listens() {
    let port = free_port();
    let upstream = Upstream::named("localhost", port, Duration::from_secs(1));
    assert_eq!(upstream.current(), None);
    let base = serve_proxy(OtpProxy::new(front(), upstream)).await;
    let client = fresh_connections();
    assert_unavailable(client.get(format!("{base}/hello")).send().await.unwrap()).await;

    // The app listens where `localhost` resolves first, as the proxy's lookup picks it.
    let addr: SocketAddr = tokio::net::lookup_host(("localhost", port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client.get(format!("{base}/hello")).send().await.unwrap();
        if response.status() == StatusCode::OK {
            assert_eq!(response.text().await.unwrap(), "hello");
            break;
        }
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(
            Instant::now() < deadline,
            "the app never answered through the proxy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_does_not_resolve_starts_the_proxy_and_gets_a_502() {
    let upstream = Upstream::named("nonexistent.invalid", 3000, Duration::from_secs(1));
    let base = serve_proxy(OtpProxy::new(front(), upstream)).await;
    // A connection that answered a 502 is closed by the proxy: each request gets its own.
    let client = fresh_connections();
    for _ in 0..3 {
        assert_unavailable(client.get(format!("{base}/anything")).send().await.unwrap()).await;
    }
    // The gate's own endpoints still answer.
    let response = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// The `otpgate run` process, killed with the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpgate_run_starts_before_its_upstream_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("gate.toml");
    let config = "[server]\nupstream = \"http://nonexistent.invalid:3000\"\nupstream_dns_interval = \"1s\"\n";
    std::fs::write(&path, with_listen(config, port)).unwrap();
    let mut command = gate_command(&path, "warn");
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gate = Running(child);
    wait_for_port(port).await;
    assert!(gate.0.try_wait().unwrap().is_none(), "otpgate run exited");
    let response = reqwest::get(format!("http://127.0.0.1:{port}/anything"))
        .await
        .unwrap();
    assert_unavailable(response).await;
}
