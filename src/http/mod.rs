//! The HTTP front: everything between a request and the engine. [`Front`] holds the
//! engine ([`crate::Gate`]) and the [`HttpSettings`], and decides, for both adapters
//! alike, where a request goes ([`Front::route`]), how its target reads
//! ([`target`]), what the gate's endpoints answer ([`Front::handle`]) and what reaches
//! the app ([`Front::plan_upstream`]). The tower and pingora adapters only translate to
//! and from these types; the [`dialect`]s translate between API shapes and the engine.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};

mod access;
mod body;
pub mod dialect;
mod forward;
mod front;
mod headers;
pub mod pages;
pub mod policy;
mod settings;
pub mod target;
#[cfg(test)]
mod tests;

pub use body::{BodyReader, MEDIATED_RESPONSE_LIMIT};
pub use dialect::Dialect;
pub use front::Front;
pub use headers::{HOP_BY_HOP, UpstreamPlan, remove_hop_by_hop};
// What the pingora adapter sets on requests itself.
#[cfg(feature = "proxy")]
pub(crate) use headers::fresh_request_id;
pub use pages::{Page, PageSettings};
pub use policy::ProtectRule;
pub use settings::{CookieSettings, EndpointMount, HttpSettings, IdentityHeaders};
pub use target::{CanonicalTarget, PathPolicy};

/// What a gate endpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Issue and deliver a code.
    Send,
    /// Check a code and mint a token.
    Verify,
    /// Revoke the session's tokens and clear the session cookie.
    Logout,
    /// Rotate a refresh token into a new session.
    Refresh,
    /// Trade a one-time token for a session.
    Exchange,
    /// The app's own login, passed through with the second factor checked on the way
    /// in and the app's answer read on the way out.
    Login,
    /// Publish the public keys.
    Jwks,
    /// Answer a liveness probe.
    Health,
    /// Answer a readiness probe: whether the parts the gate needs answer now.
    Ready,
    /// Serve one of the sign-in pages for browsers.
    Page(Page),
    /// Forward-auth: judge the request another proxy is about to forward, as described
    /// by its `X-Forwarded-*` (or `X-Original-URI`) headers.
    Check,
    /// Issue a proof-of-work challenge for a send (ALTCHA's JSON).
    Challenge,
}

/// A request the gate answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointRoute {
    /// The API shape it speaks.
    pub dialect: Dialect,
    /// What it does.
    pub action: Action,
}

impl EndpointRoute {
    /// Whether the adapter must read the request body before calling [`Front::handle`].
    pub fn needs_body(&self) -> bool {
        self.dialect.reads_body(self.action)
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To a gate endpoint.
    Endpoint(EndpointRoute),
    /// Through the gate to the app and back, the gate reading both ways; see
    /// [`Front::mediate`].
    Mediated(EndpointRoute),
    /// To the app.
    Upstream {
        /// The protect rule that guards the request (its index in
        /// [`HttpSettings::protect`]); `None` when the path is public.
        rule: Option<usize>,
    },
}

/// What the gate knows of a request it answers itself.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path.
    pub path: &'a str,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// The client's address, after trusted proxies are peeled off.
    pub client_ip: Option<IpAddr>,
    /// The address the request came from (the peer of the connection).
    pub peer: Option<IpAddr>,
    /// The authority the target named (HTTP/2's `:authority`, which stands in for the
    /// `Host` header there), if any.
    pub authority: Option<&'a str>,
}

/// An answer written by the gate itself.
#[derive(Debug, Clone)]
pub struct GateResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl GateResponse {
    /// A JSON answer.
    pub fn json(status: StatusCode, body: &serde_json::Value) -> GateResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Answers about codes and tokens are never cached by anyone.
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        GateResponse {
            status,
            headers,
            body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        }
    }

    /// Converts into an `http::Response` with the given body type.
    pub fn into_response<B: From<Bytes>>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}
