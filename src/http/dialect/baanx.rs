//! The baanx dialect (`shared/seeds/baanx-login-otp.md`): the app keeps its password
//! login and the gate owns the second factor.
//!
//! 1. `POST {prefix}/login` reaches the app. When the app answers `isOtpRequired: true`
//!    with a `userId`, the gate remembers that user's pending second factor and the phone
//!    to send it to (the app's `phoneNumber` when it is a full E.164 number, otherwise
//!    the directory's).
//! 2. `POST {prefix}/login/otp` `{userId}` sends a code to that phone: `{"success": true}`.
//!    Calling again resends (the cooldown applies).
//! 3. The retried login carries `otpCode`. The gate checks it first: a wrong code never
//!    reaches the app; a right one reaches it without `otpCode` and with a signed
//!    assertion JWT (sub = userId, amr otp, aud = the app, 60 s) in the configured header.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::Context;
use super::Dialect;
use super::request::{is_json, parse, request_locale};
use crate::gate::GateError;
use crate::http::{EndpointMount, GateResponse, RequestView};

/// The header the assertion travels in unless configured otherwise.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-otpgate-assertion";

/// The header a mount sends its assertion in.
pub(crate) fn assertion_header(mount: &EndpointMount) -> HeaderName {
    mount
        .assertion_header
        .clone()
        .unwrap_or(HeaderName::from_static(DEFAULT_ASSERTION_HEADER))
}

fn mount<'a>(ctx: &Context<'a>) -> Option<&'a EndpointMount> {
    ctx.settings
        .endpoints
        .iter()
        .find(|m| m.dialect == Dialect::Baanx)
}

fn check_client_key(ctx: &Context<'_>, headers: &HeaderMap) -> Result<(), GateError> {
    let Some(mount) = mount(ctx) else {
        return Ok(());
    };
    if mount.client_keys.is_empty() {
        return Ok(());
    }
    let presented = headers.get("x-client-key").and_then(|v| v.to_str().ok());
    // Compared in constant time: client keys are secrets.
    let known = presented.is_some_and(|key| {
        mount
            .client_keys
            .iter()
            .any(|k| subtle::ConstantTimeEq::ct_eq(k.as_bytes(), key.as_bytes()).into())
    });
    if known {
        Ok(())
    } else {
        Err(GateError::InvalidClientKey)
    }
}

/// `POST {prefix}/login/otp` `{userId}`.
pub(crate) async fn send(
    ctx: &Context<'_>,
    request: &RequestView<'_>,
    body: &[u8],
) -> Result<GateResponse, GateError> {
    check_client_key(ctx, request.headers)?;
    if !is_json(request.headers) {
        return Err(GateError::UnsupportedMediaType);
    }
    let parsed: Value = parse(body)?;
    let user_id = parsed
        .get("userId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .ok_or_else(|| GateError::InvalidRequest("userId is required".into()))?;
    ctx.gate
        .send_second_factor(
            user_id,
            request.client_ip,
            request_locale(None, request.headers),
        )
        .await?;
    Ok(GateResponse::json(
        StatusCode::OK,
        &json!({ "success": true }),
    ))
}

/// `POST {prefix}/login`, mediated; see the module docs.
pub(crate) async fn login<F, Fut>(
    ctx: &Context<'_>,
    request: &RequestView<'_>,
    body: Bytes,
    forward: F,
) -> Result<GateResponse, GateError>
where
    F: FnOnce(Bytes, Vec<(HeaderName, HeaderValue)>) -> Fut,
    Fut: std::future::Future<Output = Result<GateResponse, GateError>>,
{
    check_client_key(ctx, request.headers)?;
    let gate = ctx.gate;
    // Not a JSON object with an email: not ours to judge; the app answers it.
    let parsed = serde_json::from_slice::<Map<String, Value>>(&body).ok();
    let login = parsed
        .as_ref()
        .and_then(|m| m.get("email"))
        .and_then(Value::as_str)
        .map(|e| e.trim().to_lowercase());
    let (Some(mut fields), Some(login)) = (parsed, login) else {
        return forward(body, Vec::new()).await;
    };

    if let Some(code) = fields.remove("otpCode") {
        let code = match &code {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(GateError::InvalidRequest("otpCode must be a string".into())),
        };
        // The app never sees a login whose code was wrong: this returns first.
        let assertion = gate
            .verify_second_factor(&login, &code, request.client_ip)
            .await?;
        let header = mount(ctx).map_or(
            HeaderName::from_static(DEFAULT_ASSERTION_HEADER),
            assertion_header,
        );
        let value = HeaderValue::from_str(&assertion.token)
            .map_err(|e| GateError::Internal(e.to_string()))?;
        let body = serde_json::to_vec(&fields).map_err(|e| GateError::Internal(e.to_string()))?;
        return forward(Bytes::from(body), vec![(header, value)]).await;
    }

    let response = forward(body, Vec::new()).await?;
    if response.status.is_success()
        && let Ok(answer) = serde_json::from_slice::<Value>(&response.body)
        && answer.get("isOtpRequired").and_then(Value::as_bool) == Some(true)
        && let Some(user_id) = answer.get("userId").and_then(Value::as_str)
        && let Err(error) = gate
            .await_second_factor(
                &login,
                user_id,
                answer.get("phoneNumber").and_then(Value::as_str),
            )
            .await
    {
        tracing::warn!(%error, "could not record the pending second factor");
    }
    Ok(response)
}
