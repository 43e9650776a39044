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
use otpgate::delivery::{DeliveryError, Message, Sender};
use otpgate::tower::OtpLayer;
use otpgate::{Gate, Identity};
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
pub async fn start_app(gate: Gate) -> (String, AppCalls) {
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
