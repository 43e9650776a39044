//! A stand-in for "the existing app": it answers every request with what it received,
//! so you can see what the gate in front of it injects and strips.
//!
//! ```sh
//! cargo run --example echo_upstream          # listens on 127.0.0.1:3000
//! cargo run --bin otpgate -- run             # the gate on 127.0.0.1:8080 in front of it
//! curl -s localhost:8080/hello -H 'X-Auth-Subject: forged'   # the forgery never arrives
//! ```
//!
//! `ECHO_LISTEN` changes the address.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    // Count the body as it streams by instead of holding it.
    let mut stream = body.into_data_stream();
    let mut body_bytes = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        body_bytes += chunk.len() as u64;
    }
    let identity: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("x-auth-") || name.as_str().starts_with("x-otpgate-")
        })
        .map(|(name, value)| {
            (
                name.to_string(),
                value.to_str().unwrap_or("<binary>").into(),
            )
        })
        .collect();
    // A person in a browser gets a page; programs get JSON.
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_page {
        return Html(page(uri.path(), &identity)).into_response();
    }
    Json(json!({
        "app": "echo",
        "method": method.as_str(),
        "path": uri.path(),
        "identity_headers": identity,
        "body_bytes": body_bytes,
    }))
    .into_response()
}

/// The page a browser sees: who the gate says is calling, and a way out.
fn page(path: &str, identity: &serde_json::Map<String, Value>) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let who = identity
        .get("x-auth-email")
        .or_else(|| identity.get("x-auth-phone"))
        .and_then(Value::as_str)
        .map_or("nobody (this page is public)".to_owned(), escape);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo app</title></head>\
         <body><main><h1>Demo app</h1><p>You are at <code>{}</code>, signed in as \
         <strong id=\"who\">{who}</strong>.</p>\
         <p><a href=\"/app/\">Protected page</a> · <a href=\"/auth/sign-out\">Sign out</a></p>\
         </main></body></html>",
        escape(path)
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::var("ECHO_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("echo app on http://{listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
