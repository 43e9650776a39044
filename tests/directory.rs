//! The HTTP directory against a real lookup endpoint in "the app".

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use common::{capture, email_and_sms, members_only, send_to, serve};
use otpgate::directory::{Directory, HttpDirectory};
use otpgate::identifier::Identifier;
use otpgate::{Gate, GateError, Tenant};
use serde_json::json;

struct Lookups {
    calls: AtomicUsize,
    failing: AtomicBool,
}

async fn lookup_app() -> (String, Arc<Lookups>) {
    let state = Arc::new(Lookups {
        calls: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
    });
    let s = state.clone();
    let app = Router::new().route(
        "/internal/users",
        get(move |Query(q): Query<std::collections::HashMap<String, String>>| {
            let s = s.clone();
            async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                if s.failing.load(Ordering::SeqCst) {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                let known = q.get("tenant").map(String::as_str) == Some("default")
                    && (q.get("email").map(String::as_str) == Some("ann@example.com")
                        || q.get("id").map(String::as_str) == Some("u-1"));
                if known {
                    axum::Json(json!({"id": "u-1", "email": "ann@example.com", "phone": "+14155552671"})).into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                }
            }
        }),
    );
    let addr = serve(app).await;
    (format!("http://{addr}/internal/users"), state)
}

#[tokio::test]
async fn lookups_find_accounts_and_are_cached() {
    let (url, state) = lookup_app().await;
    let directory = HttpDirectory::new(url.parse().unwrap(), Duration::from_secs(60));
    let ann = Identifier::email("ann@example.com").unwrap();
    let found = directory.find("default", &ann).await.unwrap().unwrap();
    assert_eq!(found.subject, "u-1");
    assert_eq!(found.phone.as_deref(), Some("+14155552671"));
    assert_eq!(
        directory.find_by_id("default", "u-1").await.unwrap(),
        Some(found.clone())
    );
    assert_eq!(directory.find("other", &ann).await.unwrap(), None);
    let calls = state.calls.load(Ordering::SeqCst);
    // Cached: asking again does not reach the app, for found and not-found alike.
    directory.find("default", &ann).await.unwrap();
    directory.find("other", &ann).await.unwrap();
    assert_eq!(state.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn a_failing_directory_is_a_503_and_nothing_is_sent() {
    let (url, state) = lookup_app().await;
    let (sender, mut inbox) = capture();
    let gate = Gate::builder()
        .directory(Arc::new(HttpDirectory::new(
            url.parse().unwrap(),
            Duration::from_millis(1),
        )))
        .senders(email_and_sms(sender))
        .tenant(Tenant {
            reveal_account: true,
            ..members_only()
        })
        .build()
        .unwrap();
    let send = |email: &str| gate.send(send_to(Identifier::email(email).unwrap()));
    let outcome = send("ann@example.com").await.unwrap();
    assert_eq!(outcome.account_exists, Some(true));
    assert_eq!(inbox.recv().await.unwrap().to.as_str(), "ann@example.com");
    assert!(matches!(
        send("nobody@example.com").await,
        Err(GateError::AccountNotFound)
    ));

    tokio::time::sleep(Duration::from_millis(5)).await;
    state.failing.store(true, Ordering::SeqCst);
    let error = send("bob@example.com").await.unwrap_err();
    assert!(
        matches!(error, GateError::DirectoryUnavailable(_)),
        "{error:?}"
    );
    assert_eq!(error.status(), 503);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), inbox.recv())
            .await
            .is_err(),
        "nothing sent"
    );
}
