//! Helpers shared by the integration tests: real servers on free loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use otpgate::Identity;
use otpgate::delivery::{DeliveryError, Message, Sender};
use otpgate::http::Front;
use otpgate::tower::OtpLayer;
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
pub async fn start_app(gate: impl Into<Front>) -> (String, AppCalls) {
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
pub async fn start_form(form: Form, gate: impl Into<Front>) -> (String, AppCalls) {
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
pub async fn start_proxy(gate: impl Into<Front>, upstream: SocketAddr) -> String {
    use pingora::services::Service as _;
    let conf = Arc::new(pingora::server::configuration::ServerConf::default());
    let proxy = otpgate::pingora::OtpProxy::new(
        gate,
        otpgate::config::Upstream {
            addr: upstream,
            host: "127.0.0.1".into(),
        },
    );
    let mut service = pingora::proxy::http_proxy_service(&conf, proxy);
    let port = free_port();
    service.add_tcp(&format!("127.0.0.1:{port}"));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Held by the task so the proxy runs as long as the test's runtime does.
        let _shutdown = shutdown_tx;
        service.start_service(None, shutdown_rx, 1).await;
    });
    wait_for_port(port).await;
    format!("http://127.0.0.1:{port}")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// A real redis-server on a free loopback port, with a throwaway data directory and no
/// persistence. Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect(
                "redis-server is missing: `make test` installs it (apt-get install redis-server)",
            );
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
    pub child: std::process::Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl RunningGate {
    pub async fn start(config: &str) -> RunningGate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("gate.toml");
        let config = if config.contains("[server]") {
            config.replacen(
                "[server]",
                &format!("[server]\nlisten = \"127.0.0.1:{port}\""),
                1,
            )
        } else {
            format!("[server]\nlisten = \"127.0.0.1:{port}\"\n{config}")
        };
        std::fs::write(&path, config).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
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
