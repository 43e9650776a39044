//! Access: whether the session a request carries may pass the rule that guards it, and
//! what a refused request is answered. Decided here once, for the tower layer, the proxy
//! and forward-auth alike.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};

use super::front::refusal;
use super::policy::{self, Denial};
use super::{Dialect, Front, GateResponse};
use crate::gate::{GateError, Identity};

impl Front {
    /// Judges the session a request carries against `rule`: the verified identity, if
    /// any, when it may pass; otherwise why not. Made once here for the proxy, the layer
    /// and forward-auth.
    pub(crate) async fn judge(
        &self,
        headers: &HeaderMap,
        rule: Option<usize>,
    ) -> Result<Option<Identity>, GateError> {
        let rule = rule.and_then(|index| self.settings().protect.get(index));
        let identity = match self.token_in(headers) {
            Some(token) => match self.gate().authenticate(token).await {
                Ok(identity) => Some(identity),
                // The store could not rule out a revocation and the fallback is "deny":
                // a protected path waits for the store rather than guessing.
                Err(error @ GateError::StoreUnavailable(_)) if rule.is_some() => {
                    return Err(error);
                }
                Err(_) => None,
            },
            None => None,
        };
        let Some(rule) = rule else {
            return Ok(identity);
        };
        let Some(identity) = identity else {
            return Err(GateError::Unauthorized);
        };
        // Read after the store answered: a session that aged out meanwhile is refused.
        let now_secs = self.gate().now().0 / 1000;
        match rule.admits(&identity, now_secs) {
            Ok(()) => Ok(Some(identity)),
            Err(Denial::SignInAgain) => Err(GateError::ReauthenticationRequired),
            Err(Denial::Forbidden(reason)) => Err(GateError::Forbidden(reason)),
        }
    }

    /// The answer to a request the rule check (`judge`) refused: a browser navigating to a
    /// page that needs a (fresher) sign-in is sent to the sign-in page (303), with
    /// `return_to` (the path and query it asked for) to come back to; everything else
    /// gets the JSON refusal (401, 403, 503), which a script can act on.
    pub fn refuse(
        &self,
        error: &GateError,
        method: &Method,
        headers: &HeaderMap,
        return_to: &str,
        rule: Option<usize>,
    ) -> GateResponse {
        match self.sign_in_location(error, method, headers, return_to, rule) {
            Some(location) => see_other(&location),
            None => refusal(Dialect::Generic, error),
        }
    }

    /// Where a refused browser navigation signs in, when it should: only for a refusal
    /// that a sign-in cures, only for a navigation, and only when the pages are on.
    pub(crate) fn sign_in_location(
        &self,
        error: &GateError,
        method: &Method,
        headers: &HeaderMap,
        return_to: &str,
        rule: Option<usize>,
    ) -> Option<String> {
        let pages = self.settings().pages.as_ref()?;
        let cured_by_sign_in = matches!(
            error,
            GateError::Unauthorized | GateError::ReauthenticationRequired
        );
        if !cured_by_sign_in || !policy::is_navigation(method, headers) {
            return None;
        }
        // A rule for one tenant signs people in to that tenant.
        let tenant = rule
            .and_then(|index| self.settings().protect.get(index))
            .and_then(|rule| match rule.tenants.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            });
        Some(pages.sign_in_location(return_to, tenant))
    }
}

/// A `303 See Other` to `location`, never cached.
pub(crate) fn see_other(location: &str) -> GateResponse {
    let mut response = GateResponse {
        status: StatusCode::SEE_OTHER,
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers.insert(http::header::LOCATION, value);
    }
    response.headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}
