//! The generic dialect: JSON send and verify, as in DESIGN.md.

use http::StatusCode;
use serde::Deserialize;

use super::Context;
use super::request::{
    Destination, VerifyBody, is_json, parse, query_pairs, query_value, send_options, sent_answer,
};
use crate::gate::GateError;
use crate::gate::Session;
use crate::http::{Action, GateResponse, RequestView};

/// Answers one of the generic endpoints.
pub(crate) async fn handle(
    ctx: &Context<'_>,
    action: Action,
    request: &RequestView<'_>,
    body: &[u8],
) -> Result<GateResponse, GateError> {
    if action == Action::Logout {
        return logout(ctx, request, body).await;
    }
    if !is_json(request.headers) {
        return Err(GateError::UnsupportedMediaType);
    }
    match action {
        Action::Send => send(ctx, request, body).await,
        Action::Verify => verify(ctx, request, body).await,
        _ => refresh(ctx, body).await,
    }
}

/// `POST {prefix}/otp/send`.
async fn send(
    ctx: &Context<'_>,
    request: &RequestView<'_>,
    body: &[u8],
) -> Result<GateResponse, GateError> {
    let destination: Destination = parse(body)?;
    let outcome = ctx
        .gate
        .send_with(
            destination.send_request(destination.tenant.as_deref(), request)?,
            send_options(request),
        )
        .await?;
    Ok(GateResponse::json(StatusCode::OK, &sent_answer(outcome)))
}

/// `GET {prefix}/challenge?tenant=...`: a fresh proof-of-work challenge for a send, as
/// ALTCHA's widget reads it.
pub(crate) fn challenge(
    ctx: &Context<'_>,
    request: &RequestView<'_>,
) -> Result<GateResponse, GateError> {
    let pairs = query_pairs(request.query);
    // An empty `tenant` is the default one, as the pages send it.
    let tenant = query_value(&pairs, "tenant")?.filter(|t| !t.is_empty());
    let challenge = ctx.gate.issue_challenge(tenant)?;
    let challenge =
        serde_json::to_value(challenge).map_err(|e| GateError::Internal(e.to_string()))?;
    let mut response = GateResponse::json(StatusCode::OK, &challenge);
    // Each challenge is answered once: a cached one would be spent for every client.
    response.headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `POST {prefix}/otp/verify`.
async fn verify(
    ctx: &Context<'_>,
    request: &RequestView<'_>,
    body: &[u8],
) -> Result<GateResponse, GateError> {
    let parsed: VerifyBody = parse(body)?;
    let subject = ctx
        .gate
        .verify(parsed.verify_request(parsed.destination.tenant.as_deref(), request)?)
        .await?;
    let session = ctx.gate.start_session(&subject)?;
    Ok(session_response(ctx, &session))
}

/// `{"access_token", "token_type": "Bearer", "expires_in"}` (+ `"refresh_token"`) and the
/// session cookie.
fn session_response(ctx: &Context<'_>, session: &Session) -> GateResponse {
    let mut answer = serde_json::json!({
        "access_token": session.access.token,
        "token_type": "Bearer",
        "expires_in": session.access.expires_in,
    });
    if let Some(refresh) = &session.refresh {
        answer["refresh_token"] = refresh.token.clone().into();
    }
    let mut response = GateResponse::json(StatusCode::OK, &answer);
    if let Some(cookie) = ctx
        .settings
        .session_cookie(&session.access.token, session.access.expires_in)
    {
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
async fn refresh(ctx: &Context<'_>, body: &[u8]) -> Result<GateResponse, GateError> {
    let parsed: RefreshBody = parse(body)?;
    let token = parsed
        .refresh_token
        .ok_or_else(|| GateError::InvalidRequest("refresh_token is required".into()))?;
    let session = ctx.gate.refresh(&token).await?;
    Ok(session_response(ctx, &session))
}

/// `POST {prefix}/logout`: revokes the access token the request carries (bearer or
/// cookie) and, when the JSON body names one, the refresh token; clears the cookie.
async fn logout(
    ctx: &Context<'_>,
    request: &RequestView<'_>,
    body: &[u8],
) -> Result<GateResponse, GateError> {
    let gate = ctx.gate;
    if let Some(token) = ctx.settings.token_in(request.headers) {
        gate.sign_out(token).await?;
    }
    if !body.is_empty() {
        if !is_json(request.headers) {
            return Err(GateError::UnsupportedMediaType);
        }
        let parsed: RefreshBody = parse(body)?;
        if let Some(refresh) = parsed.refresh_token {
            gate.revoke_refresh(&refresh).await?;
        }
    }
    let mut response = GateResponse::json(
        StatusCode::OK,
        &serde_json::json!({"message": "Signed out"}),
    );
    if let Some(cookie) = ctx.settings.session_cookie("", 0) {
        response.headers.append(http::header::SET_COOKIE, cookie);
    }
    Ok(response)
}
