//! A small axum app behind otpgate's tower layer.
//!
//! ```sh
//! cargo run --example axum_app
//! # in another terminal: ask for a code (it is printed by the console sender)
//! curl -si localhost:8080/auth/otp/send -H 'content-type: application/json' \
//!      -d '{"email":"alice@example.com"}'
//! # trade it for a token
//! curl -si localhost:8080/auth/otp/verify -H 'content-type: application/json' \
//!      -d '{"email":"alice@example.com","code":"123456"}'
//! # call the protected route with it
//! curl -si localhost:8080/api/me -H "authorization: Bearer $TOKEN"
//! # without it: 401
//! curl -si localhost:8080/api/me
//! # the public key any app can verify the token with
//! curl -s localhost:8080/.well-known/jwks.json
//! ```
//!
//! `OTPGATE_LISTEN` changes the address (default `127.0.0.1:8080`).

use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::routing::get;
use axum::{Json, Router};
use otpgate::http::CookieSettings;
use otpgate::tower::OtpLayer;
use otpgate::{Gate, Identity};
use serde_json::{Value, json};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

/// A protected handler: it sees who the caller is, both as an extractor and as the
/// headers the gate injected.
async fn me(identity: Identity, headers: HeaderMap) -> Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(json!({
        "subject": identity.subject(),
        "email": identity.email(),
        "phone": identity.phone(),
        "tenant": identity.tenant(),
        "headers": {
            "x-auth-subject": header("x-auth-subject"),
            "x-auth-email": header("x-auth-email"),
            "x-auth-phone": header("x-auth-phone"),
            "x-auth-tenant": header("x-auth-tenant"),
        }
    }))
}

/// A public handler: anyone may call it; a signed-in caller is recognised.
async fn home(identity: Option<Identity>) -> String {
    match identity {
        Some(identity) => format!("Hello, {}!\n", identity.subject()),
        None => "Hello, stranger. POST /auth/otp/send to sign in.\n".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let listen: SocketAddr = std::env::var("OTPGATE_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;

    let gate = OtpLayer::with_defaults(Gate::builder().build()?)
        .protect("/api/")
        // Plain-HTTP demo: the cookie must not demand HTTPS.
        .cookie(Some(CookieSettings {
            name: "otpgate_session".into(),
            secure: false,
        }));

    let app = Router::new()
        .route("/", get(home))
        .route("/api/me", get(me))
        .layer(gate)
        // Tokens travel in these: marked sensitive, no trace or debug print shows them.
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            COOKIE,
        ]));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "otpgate demo on http://{listen}: POST /auth/otp/send, POST /auth/otp/verify, GET /api/me"
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
