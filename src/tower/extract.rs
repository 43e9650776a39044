//! The axum extractor for the verified [`Identity`].

use std::convert::Infallible;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::gate::GateError;
use crate::gate::Identity;
use crate::http::Dialect;

/// The caller's verified identity, put in place by [`OtpLayer`](super::OtpLayer) or
/// [`OtpAuthorizer`](super::OtpAuthorizer). Without one the handler is not called and
/// the client gets the gate's 401.
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
            Dialect::Generic
                .error(&GateError::Unauthorized)
                .into_response()
        })
    }
}

/// `Option<Identity>`: the identity when the request carried a valid token.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Identity>().cloned())
    }
}
