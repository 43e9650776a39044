//! The webhook sender against a real HTTP receiver: retries, refusals, timeouts, signing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use otpgate::delivery::{DeliveryError, Message, Sender, WebhookSender};
use otpgate::identifier::Identifier;
use otpgate::otp::CodeFormat;

fn message() -> Message {
    Message {
        to: Identifier::phone("+14155552671").unwrap(),
        code: CodeFormat::default().normalize("123456"),
        tenant: "default".into(),
        sender_name: None,
        expires_in: Duration::from_secs(300),
    }
}

/// A receiver answering each call with the next status of `script` (the last repeats).
async fn scripted(
    script: Vec<StatusCode>,
    delay: Duration,
) -> (
    String,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Vec<(HeaderMap, Bytes)>>>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), seen.clone());
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            s.lock().unwrap().push((headers, body));
            let status = script[n.min(script.len() - 1)];
            async move {
                tokio::time::sleep(delay).await;
                status
            }
        }),
    );
    let addr = common::serve(app).await;
    (format!("http://{addr}/hook"), calls, seen)
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let (url, calls, seen) = scripted(
        vec![
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK,
        ],
        Duration::ZERO,
    )
    .await;
    let sender = WebhookSender::new(url.parse().unwrap()).retries(3, Duration::from_millis(10));
    sender.send(&message()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let (headers, body) = seen.lock().unwrap()[2].clone();
    assert_eq!(headers["content-type"], "application/json");
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({
            "channel": "sms",
            "to": "+14155552671",
            "code": "123456",
            "tenant": "default",
            "message": "Your sign-in code is 123456. It expires in 5 minutes. If you did not ask for it, ignore this message.",
            "expires_in": 300,
        })
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (url, calls, _) = scripted(vec![StatusCode::BAD_REQUEST], Duration::ZERO).await;
    let sender = WebhookSender::new(url.parse().unwrap()).retries(3, Duration::from_millis(10));
    assert!(matches!(
        sender.send(&message()).await,
        Err(DeliveryError::Rejected(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_give_up_after_the_last_one() {
    let (url, calls, _) = scripted(vec![StatusCode::BAD_GATEWAY], Duration::ZERO).await;
    let sender = WebhookSender::new(url.parse().unwrap()).retries(2, Duration::from_millis(10));
    assert!(matches!(
        sender.send(&message()).await,
        Err(DeliveryError::Failed(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn slow_receivers_time_out() {
    let (url, calls, _) = scripted(vec![StatusCode::OK], Duration::from_secs(3)).await;
    let sender = WebhookSender::new(url.parse().unwrap())
        .timeout(Duration::from_millis(200))
        .retries(1, Duration::from_millis(10));
    let started = std::time::Instant::now();
    assert!(matches!(
        sender.send(&message()).await,
        Err(DeliveryError::Failed(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout cut the wait short"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_fails_without_leaking_the_code() {
    // Bind then drop a listener: the port is free and nothing answers on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sender = WebhookSender::new(format!("http://127.0.0.1:{port}/hook").parse().unwrap())
        .retries(1, Duration::from_millis(10));
    match sender.send(&message()).await {
        Err(DeliveryError::Failed(reason)) => assert!(!reason.contains("123456"), "{reason}"),
        other => panic!("expected failure, got {other:?}"),
    }
}

#[tokio::test]
async fn bodies_are_signed_with_the_secret() {
    let (url, _, seen) = scripted(vec![StatusCode::OK], Duration::ZERO).await;
    let sender = WebhookSender::new(url.parse().unwrap()).signing_secret(b"webhook-secret");
    sender.send(&message()).await.unwrap();
    let (headers, body) = seen.lock().unwrap()[0].clone();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"webhook-secret");
    let expected: String = aws_lc_rs::hmac::sign(&key, &body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        headers["x-otpgate-signature"],
        format!("sha256={expected}").as_str()
    );
}
