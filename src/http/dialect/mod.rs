//! API shapes. Each dialect maps its own paths and bodies onto the one engine; the
//! decisions stay in [`crate::gate`].

use http::StatusCode;
use http::header::HeaderValue;

use super::{Action, GateResponse};
use crate::error::GateError;

pub mod generic;

/// An API shape the gate can speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `POST {prefix}/otp/send`, `POST {prefix}/otp/verify`, `POST {prefix}/token/refresh`,
    /// `POST {prefix}/logout`.
    Generic,
}

impl std::str::FromStr for Dialect {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "generic" => Ok(Dialect::Generic),
            other => Err(format!("unknown dialect `{other}`: expected generic")),
        }
    }
}

impl Dialect {
    /// The action of `path` under a mount at `prefix`, if it is one of this dialect's.
    pub fn action_for(&self, path: &str, prefix: &str) -> Option<Action> {
        let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
        match self {
            Dialect::Generic => match rest {
                "/otp/send" => Some(Action::Send),
                "/otp/verify" => Some(Action::Verify),
                "/logout" => Some(Action::Logout),
                "/token/refresh" => Some(Action::Refresh),
                _ => None,
            },
        }
    }

    /// A refusal in this dialect's shape.
    pub fn error(&self, error: &GateError) -> GateResponse {
        let mut response = match self {
            Dialect::Generic => GateResponse::json(
                error.status(),
                &serde_json::json!({ "error": error.code(), "message": error.to_string() }),
            ),
        };
        if let Some(seconds) = error.retry_after_secs() {
            response
                .headers
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if error.status() == StatusCode::UNAUTHORIZED && matches!(error, GateError::Unauthorized) {
            response.headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
