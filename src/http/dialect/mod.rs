//! API shapes. Each dialect maps its own paths, bodies and answers onto the one engine;
//! the decisions stay in [`crate::gate`]. Handlers take a `Context` (the engine and the
//! HTTP settings, never the front itself) and return `Result<GateResponse, GateError>`; the
//! front renders the error once, in the dialect's shape ([`Dialect::error`]).

use http::Method;
use http::header::HeaderValue;

use super::{Action, GateResponse, HttpSettings};
use crate::gate::Gate;
use crate::gate::GateError;

pub(crate) mod aerocall;
pub(crate) mod baanx;
pub(crate) mod generic;
pub(crate) mod nexudus;
mod request;

pub use baanx::DEFAULT_ASSERTION_HEADER;

/// What a dialect handler works with: the engine, and the HTTP settings it is served with
/// (mounts, the session cookie). Handlers see no more of the front than this.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    /// The engine.
    pub(crate) gate: &'a Gate,
    /// The HTTP settings.
    pub(crate) settings: &'a HttpSettings,
}

/// An API shape the gate can speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `POST {prefix}/otp/send`, `POST {prefix}/otp/verify`, `POST {prefix}/token/refresh`,
    /// `POST {prefix}/logout`.
    Generic,
    /// Nexudus: `GET {prefix}/sendOtp?email=&businessId=`,
    /// `POST {prefix}/verifyOtp?email=&businessId=&code=`,
    /// `POST {prefix}/exchange?token=&validForInMinutes=`,
    /// `POST {prefix}/refreshToken?refresh_token=`; `businessId` names the tenant.
    Nexudus,
    /// Aerocall: `POST {prefix}/:projectSlug/auth/otp/send` and `.../verify`; the project
    /// slug names the tenant.
    Aerocall,
    /// Baanx: the app's `POST {prefix}/login` passes through; `POST {prefix}/login/otp`
    /// `{userId}` sends the second factor, which the retried login carries as `otpCode`.
    Baanx,
}

impl std::str::FromStr for Dialect {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "generic" => Ok(Dialect::Generic),
            "nexudus" => Ok(Dialect::Nexudus),
            "aerocall" => Ok(Dialect::Aerocall),
            "baanx" => Ok(Dialect::Baanx),
            other => Err(format!(
                "unknown dialect `{other}`: expected generic, nexudus, aerocall or baanx"
            )),
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
                "/challenge" => Some(Action::Challenge),
                _ => None,
            },
            Dialect::Nexudus => match rest {
                "/sendOtp" => Some(Action::Send),
                "/verifyOtp" => Some(Action::Verify),
                "/exchange" => Some(Action::Exchange),
                "/refreshToken" => Some(Action::Refresh),
                _ => None,
            },
            Dialect::Baanx => match rest {
                "/login" => Some(Action::Login),
                "/login/otp" => Some(Action::Send),
                _ => None,
            },
            Dialect::Aerocall => {
                let (slug, tail) = rest.strip_prefix('/')?.split_once('/')?;
                if !aerocall::is_slug(slug) {
                    return None;
                }
                match tail {
                    "auth/otp/send" => Some(Action::Send),
                    "auth/otp/verify" => Some(Action::Verify),
                    _ => None,
                }
            }
        }
    }

    /// The method an action takes in this dialect.
    pub fn method(&self, action: Action) -> Method {
        match (self, action) {
            (
                _,
                Action::Jwks | Action::Health | Action::Ready | Action::Check | Action::Challenge,
            ) => Method::GET,
            (Dialect::Nexudus, Action::Send) => Method::GET,
            _ => Method::POST,
        }
    }

    /// Whether an action reads the request body (otherwise its input is the query).
    pub fn reads_body(&self, action: Action) -> bool {
        // Nexudus takes its input in the query; the JWKS, the probes, forward-auth and
        // challenges take none. Pages read their form bodies.
        !matches!(
            (self, action),
            (
                _,
                Action::Jwks | Action::Health | Action::Ready | Action::Check | Action::Challenge
            ) | (Dialect::Nexudus, _)
        )
    }

    /// A refusal in this dialect's shape, with `Retry-After` where it applies.
    pub fn error(&self, error: &GateError) -> GateResponse {
        let mut response = match self {
            Dialect::Generic | Dialect::Baanx => GateResponse::json(
                error.status(),
                &serde_json::json!({ "error": error.code(), "message": error.to_string() }),
            ),
            Dialect::Aerocall => aerocall::error(error),
            Dialect::Nexudus => nexudus::error(error),
        };
        if let Some(seconds) = error.retry_after_secs() {
            response
                .headers
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(
            error,
            GateError::Unauthorized | GateError::ReauthenticationRequired
        ) {
            response.headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
