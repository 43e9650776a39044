//! The nexudus dialect (`shared/seeds/nexudus-send-otp.md`). Input comes in the query;
//! answers use the `ActionConfirmation` envelope
//! `{WasSuccessful, Value, Status, Message, Errors}`, except the token exchange, which
//! answers `{token, token_type: "bearer", expires_in, refresh_token}`.
//!
//! - `GET {prefix}/sendOtp?email=&businessId=`: the same answer whether or not the
//!   email has an account; `businessId` names the tenant.
//! - `POST {prefix}/verifyOtp?email=&businessId=&code=`: `Value` is a one-time JWT.
//! - `POST {prefix}/exchange?token=&validForInMinutes=`: the one-time JWT, once, for a
//!   session.
//! - `POST {prefix}/refreshToken?refresh_token=`: a refresh token, once, for a new session.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use super::Context;
use super::request::{query_pairs, query_value, request_locale, send_options};
use crate::gate::GateError;
use crate::gate::{SendRequest, Session, VerifyRequest};
use crate::http::{Action, GateResponse, RequestView};
use crate::identifier::Identifier;

/// The longest session an exchange may ask for: one year.
const MAX_VALID_FOR_MINUTES: u64 = 525_600;

fn envelope(status: StatusCode, value: Value, message: Value, errors: Value) -> GateResponse {
    GateResponse::json(
        status,
        &json!({
            "WasSuccessful": status.is_success(),
            "Value": value,
            "Status": status.as_u16(),
            "Message": message,
            "Errors": errors,
        }),
    )
}

/// A refusal as an `ActionConfirmation`: `WasSuccessful: false`, the status mirrored,
/// the message, and `Errors: [{"Code", "Message"}]` with the stable code.
pub(crate) fn error(error: &GateError) -> GateResponse {
    let message = error.to_string();
    envelope(
        error.status(),
        Value::Null,
        message.clone().into(),
        json!([{ "Code": error.code(), "Message": message }]),
    )
}

fn email_and_business(pairs: &[(String, String)]) -> Result<(Identifier, String), GateError> {
    let email = query_value(pairs, "email")?
        .ok_or_else(|| GateError::InvalidRequest("email is required".into()))?;
    let identifier = Identifier::email(email)?;
    let business = query_value(pairs, "businessId")?
        .ok_or_else(|| GateError::InvalidRequest("businessId is required".into()))?;
    // businessId is numeric in Nexudus; anything else is malformed, not an unknown tenant.
    let business: u64 = business
        .trim()
        .parse()
        .map_err(|_| GateError::InvalidRequest("businessId must be a number".into()))?;
    Ok((identifier, business.to_string()))
}

fn session_answer(session: &Session) -> GateResponse {
    GateResponse::json(
        StatusCode::OK,
        &json!({
            "token": session.access.token,
            "token_type": "bearer",
            "expires_in": session.access.expires_in,
            "refresh_token": session.refresh.as_ref().map(|r| r.token.clone()),
        }),
    )
}

/// Answers a nexudus endpoint.
pub(crate) async fn handle(
    ctx: &Context<'_>,
    action: Action,
    request: &RequestView<'_>,
) -> Result<GateResponse, GateError> {
    let gate = ctx.gate;
    let pairs = query_pairs(request.query);
    match action {
        Action::Send => {
            let (identifier, business) = email_and_business(&pairs)?;
            let send = SendRequest {
                tenant: Some(&business),
                identifier,
                client_ip: request.client_ip,
                locale: request_locale(query_value(&pairs, "locale")?, request.headers),
            };
            gate.send_with(send, send_options(request)).await?;
            // The same envelope whether or not the email is registered.
            Ok(envelope(
                StatusCode::OK,
                Value::Null,
                Value::Null,
                Value::Null,
            ))
        }
        Action::Verify => {
            let (identifier, business) = email_and_business(&pairs)?;
            let code = required(&pairs, "code")?;
            let subject = gate
                .verify(VerifyRequest {
                    tenant: Some(&business),
                    identifier,
                    code,
                    client_ip: request.client_ip,
                })
                .await?;
            let one_time = gate.mint_exchange_token(&subject)?;
            Ok(envelope(
                StatusCode::OK,
                one_time.token.into(),
                Value::Null,
                Value::Null,
            ))
        }
        Action::Exchange => {
            let token = required(&pairs, "token")?;
            let valid_for = match query_value(&pairs, "validForInMinutes")? {
                None => None,
                Some(minutes) => Some(valid_for(minutes)?),
            };
            Ok(session_answer(&gate.exchange(token, valid_for).await?))
        }
        _ => {
            let token = required(&pairs, "refresh_token")?;
            Ok(session_answer(&gate.refresh(token).await?))
        }
    }
}

/// The one value of a parameter the endpoint cannot do without.
fn required<'a>(pairs: &'a [(String, String)], name: &str) -> Result<&'a str, GateError> {
    query_value(pairs, name)?
        .ok_or_else(|| GateError::InvalidRequest(format!("{name} is required")))
}

/// `validForInMinutes`: a whole number of minutes, one to a year.
fn valid_for(minutes: &str) -> Result<Duration, GateError> {
    let minutes: u64 = minutes
        .trim()
        .parse()
        .ok()
        .filter(|m| (1..=MAX_VALID_FOR_MINUTES).contains(m))
        .ok_or_else(|| {
            GateError::InvalidRequest(format!(
                "validForInMinutes must be a whole number from 1 to {MAX_VALID_FOR_MINUTES}"
            ))
        })?;
    Ok(Duration::from_secs(minutes * 60))
}
