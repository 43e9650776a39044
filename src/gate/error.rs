//! Every refusal the gate can answer, each with its HTTP status and stable error code.

use std::time::Duration;

use http::StatusCode;

use crate::identifier::{Channel, InvalidIdentifier};

/// A refused request. [`GateError::code`] is the stable machine-readable code that API
/// answers carry; the `Display` text is the human message.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Body or query malformed or missing a field.
    #[error("{0}")]
    InvalidRequest(String),
    /// Email or phone not valid.
    #[error("{0}")]
    InvalidIdentifier(#[from] InvalidIdentifier),
    /// The tenant does not exist.
    #[error("unknown tenant")]
    UnknownTenant,
    /// The tenant does not offer this channel.
    #[error("{} OTP is not enabled for this tenant", match .0 { Channel::Email => "Email", Channel::Sms => "Phone" })]
    ChannelDisabled(Channel),
    /// Unknown identifier, auto-create off, and the tenant reveals accounts.
    #[error("No account found. Please sign up first.")]
    AccountNotFound,
    /// Too many sends (per identifier or per IP).
    #[error("too many requests; try again later")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// A destination the tenant does not send codes to.
    #[error("{}", .0.message())]
    DestinationRefused(crate::gate::DestinationRefusal),
    /// The send guard holds sends to this destination (or all SMS) for now.
    #[error("too many codes sent to such destinations; try again later")]
    SendsThrottled {
        /// When to try again.
        retry_after: Duration,
        /// Which cap holds.
        reason: crate::gate::ThrottleReason,
    },
    /// The tenant needs a solved proof-of-work challenge on sends and none was sent.
    #[error("this request needs a solved challenge")]
    ChallengeRequired,
    /// A challenge that is malformed, forged, wrongly solved, expired or already used:
    /// one answer for all, so a client learns nothing about which.
    #[error("the challenge is invalid, expired or already used")]
    ChallengeInvalid,
    /// Too many failed verifications; the identity must wait.
    #[error("too many failed attempts; try again later")]
    TooManyAttempts {
        /// When to try again.
        retry_after: Duration,
    },
    /// Wrong, expired, used or unknown code: deliberately one answer for all four.
    #[error("the code is invalid or has expired")]
    InvalidCode,
    /// No valid token on a protected path.
    #[error("authentication required")]
    Unauthorized,
    /// A valid session whose sign-in is older than the path's rule accepts (step-up).
    #[error("sign in again to continue")]
    ReauthenticationRequired,
    /// A valid session that the path's rule does not admit (another tenant, an account
    /// not on the rule's lists).
    #[error("{0}")]
    Forbidden(&'static str),
    /// A missing or unknown `x-client-key`.
    #[error("missing or unknown client key")]
    InvalidClientKey,
    /// The app behind the gate could not be reached.
    #[error("the app behind the gate is unavailable")]
    UpstreamUnavailable,
    /// The proxy could not serve the request, for a reason it answers with this status.
    #[error("the request could not be served")]
    RequestFailed(StatusCode),
    /// A refresh, one-time or revoked token that is invalid, used, expired or forged.
    #[error("the token is invalid, expired or already used")]
    InvalidToken,
    /// A request target that cannot be read one way only.
    #[error("invalid request path: {0}")]
    InvalidPath(String),
    /// More header lines or bytes than the gate accepts.
    #[error("request headers too large (limit {limit} {unit})")]
    HeadersTooLarge {
        /// The limit.
        limit: usize,
        /// What the limit counts: `"headers"` or `"bytes"`.
        unit: &'static str,
    },
    /// Body larger than the limit.
    #[error("request body too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Not JSON.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// Wrong method on a gate endpoint.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No such gate endpoint.
    #[error("not found")]
    NotFound,
    /// The store failed.
    #[error("temporarily unavailable")]
    StoreUnavailable(#[source] crate::store::StoreError),
    /// The directory failed.
    #[error("temporarily unavailable")]
    DirectoryUnavailable(#[source] crate::directory::DirectoryError),
    /// The outbox is full.
    #[error("temporarily unavailable")]
    DeliveryUnavailable,
    /// A readiness probe found a part the gate needs unreachable.
    #[error("{part} unavailable")]
    NotReady {
        /// Which part: `"store"`, `"directory"` or `"upstream"`; the client sees it.
        part: &'static str,
        /// Why, for the log only: the backend's own words may name hosts.
        detail: String,
    },
    /// Something inside the gate failed (a broken key).
    #[error("internal error")]
    Internal(String),
}

impl GateError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            GateError::InvalidRequest(_)
            | GateError::InvalidIdentifier(_)
            | GateError::UnknownTenant
            | GateError::ChannelDisabled(_)
            | GateError::AccountNotFound
            | GateError::DestinationRefused(_)
            | GateError::ChallengeRequired
            | GateError::ChallengeInvalid
            | GateError::InvalidPath(_) => StatusCode::BAD_REQUEST,
            GateError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GateError::RateLimited { .. }
            | GateError::TooManyAttempts { .. }
            | GateError::SendsThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            GateError::InvalidCode
            | GateError::Unauthorized
            | GateError::ReauthenticationRequired
            | GateError::InvalidToken
            | GateError::InvalidClientKey => StatusCode::UNAUTHORIZED,
            GateError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GateError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GateError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GateError::Forbidden(_) => StatusCode::FORBIDDEN,
            GateError::NotFound => StatusCode::NOT_FOUND,
            GateError::StoreUnavailable(_)
            | GateError::DirectoryUnavailable(_)
            | GateError::DeliveryUnavailable
            | GateError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GateError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GateError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            GateError::RequestFailed(status) => *status,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            GateError::InvalidRequest(_) => "invalid_request",
            GateError::InvalidIdentifier(InvalidIdentifier::Email) => "invalid_email",
            GateError::InvalidIdentifier(InvalidIdentifier::Phone) => "invalid_phone",
            GateError::UnknownTenant => "unknown_tenant",
            GateError::ChannelDisabled(_) => "channel_disabled",
            GateError::AccountNotFound => "account_not_found",
            GateError::RateLimited { .. } => "rate_limited",
            GateError::DestinationRefused(refusal) => refusal.code(),
            GateError::SendsThrottled { reason, .. } => reason.code(),
            GateError::ChallengeRequired => "challenge_required",
            GateError::ChallengeInvalid => "challenge_invalid",
            GateError::TooManyAttempts { .. } => "too_many_attempts",
            GateError::InvalidCode => "invalid_code",
            GateError::Unauthorized => "unauthorized",
            GateError::ReauthenticationRequired => "reauthentication_required",
            GateError::Forbidden(_) => "forbidden",
            GateError::InvalidToken => "invalid_token",
            GateError::InvalidClientKey => "invalid_client_key",
            GateError::UpstreamUnavailable => "upstream_unavailable",
            GateError::RequestFailed(_) => "request_failed",
            GateError::PayloadTooLarge { .. } => "payload_too_large",
            GateError::InvalidPath(_) => "invalid_path",
            GateError::HeadersTooLarge { .. } => "headers_too_large",
            GateError::UnsupportedMediaType => "unsupported_media_type",
            GateError::MethodNotAllowed => "method_not_allowed",
            GateError::NotFound => "not_found",
            GateError::StoreUnavailable(_)
            | GateError::DirectoryUnavailable(_)
            | GateError::DeliveryUnavailable => "temporarily_unavailable",
            GateError::NotReady { .. } => "not_ready",
            GateError::Internal(_) => "internal_error",
        }
    }

    /// Seconds for a `Retry-After` header, where one applies (rounded up, at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            GateError::RateLimited { retry_after }
            | GateError::TooManyAttempts { retry_after }
            | GateError::SendsThrottled { retry_after, .. } => {
                Some(retry_after.as_millis().div_ceil(1000).max(1) as u64)
            }
            GateError::StoreUnavailable(_)
            | GateError::DirectoryUnavailable(_)
            | GateError::DeliveryUnavailable
            | GateError::NotReady { .. } => Some(1),
            _ => None,
        }
    }

    /// Logs, as a warning, which part the gate needs failed and why, when this refusal is
    /// one of those (see [`unavailable_reason`](Self::unavailable_reason)); the answer a
    /// client gets says neither.
    pub fn log_if_unavailable(&self) {
        if let Some((reason, detail)) = self.unavailable_reason() {
            tracing::warn!(
                reason,
                detail,
                status = self.status().as_u16(),
                "a part the gate needs is unavailable"
            );
        }
    }

    /// For the log, where a part the gate needs failed: which one (`"store"`,
    /// `"directory"`, `"outbox full"` or `"upstream"`) and why. `None` for every other
    /// refusal. Clients get only [`code`](Self::code) and the message.
    pub fn unavailable_reason(&self) -> Option<(&'static str, String)> {
        match self {
            GateError::StoreUnavailable(error) => Some(("store", error.to_string())),
            GateError::DirectoryUnavailable(error) => Some(("directory", error.to_string())),
            GateError::DeliveryUnavailable => Some((
                "outbox full",
                "the outbox has no room for another message".into(),
            )),
            GateError::UpstreamUnavailable => {
                Some(("upstream", "the app behind the gate did not answer".into()))
            }
            GateError::NotReady { part, detail } => Some((part, detail.clone())),
            _ => None,
        }
    }
}
