//! The generic dialect: JSON send and verify, as in DESIGN.md.

use http::StatusCode;
use serde::Deserialize;

use super::Dialect;
use crate::error::GateError;
use crate::gate::{Gate, SendRequest, Session, VerifyRequest};
use crate::http::{GateResponse, RequestView};
use crate::identifier::Identifier;

#[derive(Deserialize)]
pub(crate) struct Destination {
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) phone: Option<String>,
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    #[serde(default)]
    pub(crate) locale: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct VerifyBody {
    #[serde(flatten)]
    pub(crate) destination: Destination,
    pub(crate) code: Option<String>,
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, GateError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "unexpected field type"
        } else {
            "malformed JSON"
        };
        GateError::InvalidRequest(format!("{what} at line {} column {}", e.line(), e.column()))
    })
}

pub(crate) fn identifier(destination: &Destination) -> Result<Identifier, GateError> {
    match (&destination.email, &destination.phone) {
        (Some(email), None) => Ok(Identifier::email(email)?),
        (None, Some(phone)) => Ok(Identifier::phone(phone)?),
        (Some(_), Some(_)) => Err(GateError::InvalidRequest(
            "send either email or phone, not both".into(),
        )),
        (None, None) => Err(GateError::InvalidRequest(
            "email or phone is required".into(),
        )),
    }
}

/// `POST {prefix}/otp/send`.
pub async fn send(
    gate: &Gate,
    dialect: Dialect,
    request: &RequestView<'_>,
    body: &[u8],
) -> GateResponse {
    let result = async {
        let destination: Destination = parse(body)?;
        let identifier = identifier(&destination)?;
        gate.send(SendRequest {
            tenant: destination.tenant.as_deref(),
            identifier,
            client_ip: request.client_ip,
            locale: crate::http::request_locale(destination.locale.as_deref(), request.headers),
        })
        .await
    }
    .await;
    match result {
        Ok(outcome) => {
            let mut answer = serde_json::json!({ "message": "OTP sent successfully" });
            if let Some(exists) = outcome.account_exists {
                answer["accountExists"] = exists.into();
            }
            GateResponse::json(StatusCode::OK, &answer)
        }
        Err(error) => dialect.error(&error),
    }
}

/// `POST {prefix}/otp/verify`.
pub async fn verify(
    gate: &Gate,
    dialect: Dialect,
    request: &RequestView<'_>,
    body: &[u8],
) -> GateResponse {
    let result = async {
        let parsed: VerifyBody = parse(body)?;
        let identifier = identifier(&parsed.destination)?;
        let code = parsed
            .code
            .ok_or_else(|| GateError::InvalidRequest("code is required".into()))?;
        gate.verify(VerifyRequest {
            tenant: parsed.destination.tenant.as_deref(),
            identifier,
            code: &code,
            client_ip: request.client_ip,
        })
        .await
    }
    .await;
    match result.and_then(|subject| gate.start_session(&subject)) {
        Ok(session) => session_response(gate, &session),
        Err(error) => dialect.error(&error),
    }
}

/// `{"access_token", "token_type": "Bearer", "expires_in"}` (+ `"refresh_token"`) and the
/// session cookie.
fn session_response(gate: &Gate, session: &Session) -> GateResponse {
    let mut answer = serde_json::json!({
        "access_token": session.access.token,
        "token_type": "Bearer",
        "expires_in": session.access.expires_in,
    });
    if let Some(refresh) = &session.refresh {
        answer["refresh_token"] = refresh.token.clone().into();
    }
    let mut response = GateResponse::json(StatusCode::OK, &answer);
    if let Some(cookie) = gate.session_cookie(&session.access.token, session.access.expires_in) {
        response.headers.append(http::header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: Option<String>,
}

/// `POST {prefix}/token/refresh` `{"refresh_token"}`: a new session; the old refresh
/// token is spent.
pub async fn refresh(gate: &Gate, dialect: Dialect, body: &[u8]) -> GateResponse {
    let result = async {
        let parsed: RefreshBody = parse(body)?;
        let token = parsed
            .refresh_token
            .ok_or_else(|| GateError::InvalidRequest("refresh_token is required".into()))?;
        gate.refresh(&token).await
    }
    .await;
    match result {
        Ok(session) => session_response(gate, &session),
        Err(error) => dialect.error(&error),
    }
}

/// `POST {prefix}/logout`: revokes the access token the request carries (bearer or
/// cookie) and, when the JSON body names one, the refresh token; clears the cookie.
pub async fn logout(
    gate: &Gate,
    dialect: Dialect,
    request: &RequestView<'_>,
    body: &[u8],
) -> GateResponse {
    let result = async {
        if let Some(token) = gate.token_in(request.headers)
            && let Ok(identity) = gate.authenticate(token).await
        {
            gate.revoke_access(&identity.claims).await?;
        }
        if !body.is_empty() {
            if !crate::http::is_json(request.headers) {
                return Err(GateError::UnsupportedMediaType);
            }
            let parsed: RefreshBody = parse(body)?;
            if let Some(refresh) = parsed.refresh_token {
                gate.revoke_refresh(&refresh).await?;
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut response = GateResponse::json(
                StatusCode::OK,
                &serde_json::json!({"message": "Signed out"}),
            );
            if let Some(cookie) = gate.session_cookie("", 0) {
                response.headers.append(http::header::SET_COOKIE, cookie);
            }
            response
        }
        Err(error) => dialect.error(&error),
    }
}
