//! The aerocall dialect (`shared/seeds/aerocall-otp-send.md`):
//! `POST {prefix}/:projectSlug/auth/otp/send` `{email}` or `{phone}` and `.../verify`.
//! The project slug names the tenant; its channels, auto-create and account reveal are
//! the tenant's settings.

use http::StatusCode;

use super::Context;
use super::request::{Destination, VerifyBody, is_json, parse, send_options, sent_answer};
use crate::gate::{DestinationRefusal, GateError};
use crate::http::{Action, GateResponse, RequestView};
use crate::identifier::Channel;

/// Whether `slug` can name a project: 1 to 64 of `A-Z a-z 0-9 - _`.
pub(crate) fn is_slug(slug: &str) -> bool {
    (1..=64).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn slug_of(path: &str) -> &str {
    path.rsplit_once("/auth/otp/")
        .and_then(|(before, _)| before.rsplit('/').next())
        .unwrap_or("")
}

/// Answers one of the aerocall endpoints; the project slug in the path names the tenant.
pub(crate) async fn handle(
    ctx: &Context<'_>,
    action: Action,
    request: &RequestView<'_>,
    body: &[u8],
) -> Result<GateResponse, GateError> {
    let gate = ctx.gate;
    let slug = slug_of(request.path);
    if !is_json(request.headers) {
        return Err(GateError::UnsupportedMediaType);
    }
    let answer = match action {
        Action::Send => {
            let destination: Destination = parse(body)?;
            let outcome = gate
                .send_with(
                    destination.send_request(Some(slug), request)?,
                    send_options(request),
                )
                .await?;
            sent_answer(outcome)
        }
        _ => {
            let parsed: VerifyBody = parse(body)?;
            let subject = gate
                .verify(parsed.verify_request(Some(slug), request)?)
                .await?;
            let session = gate.start_session(&subject)?;
            let mut user = serde_json::json!({ "id": subject.id });
            if let Some(email) = &subject.email {
                user["email"] = email.clone().into();
            }
            if let Some(phone) = &subject.phone {
                user["phone"] = phone.clone().into();
            }
            serde_json::json!({ "token": session.access.token, "user": user })
        }
    };
    Ok(GateResponse::json(StatusCode::OK, &answer))
}

/// An error in aerocall's words: `{error, message}` with its own messages.
pub(crate) fn error(error: &GateError) -> GateResponse {
    let (status, message) = match error {
        GateError::InvalidRequest(_) | GateError::InvalidIdentifier(_) => (
            StatusCode::BAD_REQUEST,
            "Invalid request: missing or invalid email or phone".to_owned(),
        ),
        GateError::ChannelDisabled(Channel::Sms) => (
            StatusCode::BAD_REQUEST,
            "Phone OTP is not enabled for this project".to_owned(),
        ),
        GateError::ChannelDisabled(Channel::Email) => (
            StatusCode::BAD_REQUEST,
            "Email OTP is not enabled for this project".to_owned(),
        ),
        GateError::UnknownTenant => (StatusCode::NOT_FOUND, "Project not found".to_owned()),
        // The send guard's hold reads like any other send limit here; its code says which.
        GateError::RateLimited { .. } | GateError::SendsThrottled { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many OTP requests".to_owned(),
        ),
        GateError::DestinationRefused(DestinationRefusal::SmsCountry) => (
            StatusCode::BAD_REQUEST,
            "Phone OTP is not available for this country".to_owned(),
        ),
        GateError::DestinationRefused(DestinationRefusal::NumberType) => (
            StatusCode::BAD_REQUEST,
            "Phone OTP is not available for this type of number".to_owned(),
        ),
        GateError::DestinationRefused(DestinationRefusal::EmailDomain) => (
            StatusCode::BAD_REQUEST,
            "Email OTP is not available for this email domain".to_owned(),
        ),
        GateError::ChallengeRequired => (
            StatusCode::BAD_REQUEST,
            "Proof-of-work challenge required".to_owned(),
        ),
        GateError::ChallengeInvalid => (
            StatusCode::BAD_REQUEST,
            "Invalid or expired proof-of-work challenge".to_owned(),
        ),
        GateError::InvalidCode => (
            StatusCode::UNAUTHORIZED,
            "Invalid or expired OTP".to_owned(),
        ),
        other => (other.status(), other.to_string()),
    };
    let code = match error {
        GateError::UnknownTenant => "project_not_found",
        other => other.code(),
    };
    GateResponse::json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(
            slug_of("/api/v1/public/projects/my-app/auth/otp/send"),
            "my-app"
        );
        assert!(is_slug("my_app-2"));
        assert!(!is_slug(""));
        assert!(!is_slug("a/b"));
        assert!(!is_slug(&"x".repeat(65)));
    }
}
