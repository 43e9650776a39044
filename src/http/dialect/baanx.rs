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

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::Dialect;
use super::generic::parse;
use crate::error::GateError;
use crate::gate::{Gate, SendRequest, VerifyRequest};
use crate::http::{EndpointMount, GateResponse, RequestView, is_json};
use crate::identifier::Identifier;
use crate::store::SetMode;
use crate::token::Subject;

/// The header the assertion travels in unless configured otherwise.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-otpgate-assertion";

fn mount(gate: &Gate) -> Option<&EndpointMount> {
    gate.http_settings()
        .endpoints
        .iter()
        .find(|m| m.dialect == Dialect::Baanx)
}

fn check_client_key(gate: &Gate, headers: &HeaderMap) -> Result<(), GateError> {
    let Some(mount) = mount(gate) else {
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

fn user_key(tenant: &str, user_id: &str) -> String {
    format!("baanx:user:{tenant}:{user_id}")
}

fn login_key(tenant: &str, login: &str) -> String {
    format!("baanx:login:{tenant}:{login}")
}

/// How long a pending second factor waits for its code.
fn pending_ttl(gate: &Gate) -> Duration {
    gate.policy().ttl * 2
}

/// `POST {prefix}/login/otp` `{userId}`.
pub async fn send(gate: &Gate, request: &RequestView<'_>, body: &[u8]) -> GateResponse {
    let result = async {
        check_client_key(gate, request.headers)?;
        if !is_json(request.headers) {
            return Err(GateError::UnsupportedMediaType);
        }
        let parsed: Value = parse(body)?;
        let user_id = parsed
            .get("userId")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .ok_or_else(|| GateError::InvalidRequest("userId is required".into()))?;
        let tenant = gate.default_tenant().to_owned();
        let phone = gate
            .store()
            .get_value(&user_key(&tenant, user_id))
            .await
            .map_err(GateError::StoreUnavailable)?
            .ok_or_else(|| {
                GateError::InvalidRequest(
                    "no login is waiting for a second factor for this user".into(),
                )
            })?;
        gate.send(SendRequest {
            tenant: Some(&tenant),
            identifier: Identifier::phone(&phone)?,
            client_ip: request.client_ip,
            locale: crate::http::request_locale(None, request.headers),
        })
        .await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => GateResponse::json(StatusCode::OK, &json!({ "success": true })),
        Err(error) => Dialect::Baanx.error(&error),
    }
}

/// `POST {prefix}/login`, mediated; see the module docs.
pub async fn login<F, Fut>(
    gate: &Gate,
    request: &RequestView<'_>,
    body: Bytes,
    forward: F,
) -> GateResponse
where
    F: FnOnce(Bytes, Vec<(HeaderName, HeaderValue)>) -> Fut,
    Fut: std::future::Future<Output = Result<GateResponse, GateError>>,
{
    if let Err(error) = check_client_key(gate, request.headers) {
        return Dialect::Baanx.error(&error);
    }
    let tenant = gate.default_tenant().to_owned();
    // Not a JSON object with an email: not ours to judge; the app answers it.
    let parsed = serde_json::from_slice::<Map<String, Value>>(&body).ok();
    let login = parsed
        .as_ref()
        .and_then(|m| m.get("email"))
        .and_then(Value::as_str)
        .map(|e| e.trim().to_lowercase());
    let (Some(mut fields), Some(login)) = (parsed, login) else {
        return forward(body, Vec::new())
            .await
            .unwrap_or_else(|e| Dialect::Baanx.error(&e));
    };

    if let Some(code) = fields.remove("otpCode") {
        let result = async {
            let code = match &code {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(GateError::InvalidRequest("otpCode must be a string".into())),
            };
            let (user_id, phone) = pending(gate, &tenant, &login)
                .await?
                .ok_or(GateError::InvalidCode)?;
            gate.verify(VerifyRequest {
                tenant: Some(&tenant),
                identifier: Identifier::phone(&phone)?,
                code: &code,
                client_ip: request.client_ip,
            })
            .await?;
            let assertion = gate.mint_assertion(&Subject {
                id: user_id,
                email: None,
                phone: Some(phone),
                tenant: tenant.clone(),
            })?;
            let header = mount(gate)
                .and_then(|m| m.assertion_header.clone())
                .unwrap_or(HeaderName::from_static(DEFAULT_ASSERTION_HEADER));
            let value = HeaderValue::from_str(&assertion.token)
                .map_err(|e| GateError::Internal(e.to_string()))?;
            let body =
                serde_json::to_vec(&fields).map_err(|e| GateError::Internal(e.to_string()))?;
            forward(Bytes::from(body), vec![(header, value)]).await
        }
        .await;
        // The app never sees a login whose code was wrong.
        return result.unwrap_or_else(|e| Dialect::Baanx.error(&e));
    }

    let response = match forward(body, Vec::new()).await {
        Ok(response) => response,
        Err(error) => return Dialect::Baanx.error(&error),
    };
    if response.status.is_success()
        && let Ok(answer) = serde_json::from_slice::<Value>(&response.body)
        && answer.get("isOtpRequired").and_then(Value::as_bool) == Some(true)
        && let Some(user_id) = answer.get("userId").and_then(Value::as_str)
        && let Err(error) =
            remember(gate, &tenant, &login, user_id, answer.get("phoneNumber")).await
    {
        tracing::warn!(%error, "could not record the pending second factor");
    }
    response
}

async fn pending(
    gate: &Gate,
    tenant: &str,
    login: &str,
) -> Result<Option<(String, String)>, GateError> {
    let store = gate.store();
    let Some(user_id) = store
        .get_value(&login_key(tenant, login))
        .await
        .map_err(GateError::StoreUnavailable)?
    else {
        return Ok(None);
    };
    let phone = store
        .get_value(&user_key(tenant, &user_id))
        .await
        .map_err(GateError::StoreUnavailable)?;
    Ok(phone.map(|phone| (user_id, phone)))
}

async fn remember(
    gate: &Gate,
    tenant: &str,
    login: &str,
    user_id: &str,
    phone: Option<&Value>,
) -> Result<(), GateError> {
    // The app's phoneNumber is often masked for display; only a full number is used.
    let from_app = phone
        .and_then(Value::as_str)
        .and_then(|p| Identifier::phone(p).ok())
        .map(|p| p.as_str().to_owned());
    let phone = match from_app {
        Some(phone) => phone,
        None => gate
            .directory()
            .find_by_id(tenant, user_id)
            .await
            .map_err(GateError::DirectoryUnavailable)?
            .and_then(|account| account.phone)
            .ok_or_else(|| {
                GateError::InvalidRequest(format!("no phone number is known for user {user_id}"))
            })?,
    };
    let ttl = pending_ttl(gate);
    let store = gate.store();
    store
        .set_value(&user_key(tenant, user_id), &phone, ttl, SetMode::Always)
        .await
        .map_err(GateError::StoreUnavailable)?;
    store
        .set_value(&login_key(tenant, login), user_id, ttl, SetMode::Always)
        .await
        .map_err(GateError::StoreUnavailable)?;
    Ok(())
}
