//! A stand-in for an app with a baanx-style password login, to run behind
//! `otpgate run --config config/baanx.toml`.
//!
//! `POST /v1/auth/login` `{email, password}` answers `isOtpRequired` with a `userId`, and
//! issues an `accessToken` only to a login that carries the gate's assertion
//! (`X-Otpgate-Assertion`), checked against the gate's JWKS.
//!
//! ```sh
//! cargo run --example baanx_app                                   # 127.0.0.1:3000
//! cargo run --bin otpgate -- run --config config/baanx.toml      # 127.0.0.1:8080
//! H='-H content-type:application/json -H x-client-key:demo-client-key'
//! curl -s localhost:8080/v1/auth/login $H -d '{"email":"ann@example.com","password":"correct horse"}'
//! curl -s localhost:8080/v1/auth/login/otp $H -d '{"userId":"b6b9168c-bb56-4c6a-9c0d-4650ea74f5f9"}'
//! curl -s localhost:8080/v1/auth/login $H -d '{"email":"ann@example.com","password":"correct horse","otpCode":"<code>"}'
//! ```
//!
//! `BAANX_APP_LISTEN` and `OTPGATE_JWKS_URL` change the addresses.

use std::net::SocketAddr;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const USER_ID: &str = "b6b9168c-bb56-4c6a-9c0d-4650ea74f5f9";

async fn login(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if body["email"] != "ann@example.com" || body["password"] != "correct horse" {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Invalid credentials"})),
        )
            .into_response();
    }
    let Some(assertion) = headers
        .get("x-otpgate-assertion")
        .and_then(|v| v.to_str().ok())
    else {
        // The phone is masked, as an app shows it; the gate finds the full number itself.
        return Json(
            json!({"isOtpRequired": true, "userId": USER_ID, "phoneNumber": "+1******2671"}),
        )
        .into_response();
    };
    match check_assertion(assertion).await {
        Ok(()) => {
            Json(json!({"accessToken": format!("app-session-for-{USER_ID}")})).into_response()
        }
        Err(reason) => (StatusCode::UNAUTHORIZED, Json(json!({"message": reason}))).into_response(),
    }
}

/// The app's side of the contract: the assertion must be signed by a key in the gate's
/// JWKS, for this user, by OTP, for this app.
async fn check_assertion(assertion: &str) -> Result<(), String> {
    let url = std::env::var("OTPGATE_JWKS_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8080/.well-known/jwks.json".into());
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(url)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| e.to_string())?;
    let jwk = header
        .kid
        .as_deref()
        .and_then(|kid| jwks.find(kid))
        .ok_or("unknown key")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["baanx-app"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| e.to_string())?
        .claims;
    if claims["sub"] != USER_ID || claims["amr"] != json!(["otp"]) {
        return Err("the assertion is for someone else".into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::var("BAANX_APP_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let app = axum::Router::new().route("/v1/auth/login", post(login));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("baanx-style app on http://{listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
