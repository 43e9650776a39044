//! The framework-neutral HTTP layer: routing, the gate's own endpoints, identity header
//! stripping and injection. The tower and pingora adapters only translate to and from
//! these types.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use ipnet::IpNet;

use crate::error::GateError;
use crate::gate::{Gate, Identity};

pub mod dialect;

pub use dialect::Dialect;

/// Where a dialect's endpoints are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointMount {
    /// The API shape.
    pub dialect: Dialect,
    /// The path prefix, e.g. `/auth`.
    pub prefix: String,
    /// When not empty, requests to these endpoints must carry one of these values in
    /// `x-client-key` (the baanx dialect).
    pub client_keys: Vec<String>,
    /// Where a second-factor assertion JWT reaches the app (the baanx dialect).
    pub assertion_header: Option<HeaderName>,
}

impl EndpointMount {
    /// A mount of `dialect` at `prefix`, with no client keys and no assertion header.
    pub fn new(dialect: Dialect, prefix: &str) -> EndpointMount {
        EndpointMount {
            dialect,
            prefix: prefix.to_owned(),
            client_keys: Vec::new(),
            assertion_header: None,
        }
    }
}

/// The headers through which the app learns who is calling.
#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    /// Carries the token itself.
    pub jwt: HeaderName,
    /// Carries the subject.
    pub subject: HeaderName,
    /// Carries the verified email.
    pub email: HeaderName,
    /// Carries the verified phone.
    pub phone: HeaderName,
    /// Carries the tenant.
    pub tenant: HeaderName,
    /// Header names (exact, or a prefix ending in `*`) always removed from client
    /// requests. The five headers above are always removed too.
    pub strip: Vec<String>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            jwt: HeaderName::from_static("x-otpgate-jwt"),
            subject: HeaderName::from_static("x-auth-subject"),
            email: HeaderName::from_static("x-auth-email"),
            phone: HeaderName::from_static("x-auth-phone"),
            tenant: HeaderName::from_static("x-auth-tenant"),
            strip: vec!["X-Auth-*".into(), "X-Otpgate-*".into()],
        }
    }
}

/// The session cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    /// Its name.
    pub name: String,
    /// Sent with `Secure` (only over HTTPS; browsers treat localhost as secure).
    pub secure: bool,
}

/// HTTP-side settings of a gate.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Mounted endpoint sets.
    pub endpoints: Vec<EndpointMount>,
    /// Path prefixes that require a valid token.
    pub protect: Vec<String>,
    /// Identity headers.
    pub identity: IdentityHeaders,
    /// Session cookie; `None` to use bearer tokens only.
    pub cookie: Option<CookieSettings>,
    /// Largest request body the gate reads, in bytes.
    pub body_limit: usize,
    /// Peers allowed to say who the client is via `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
    /// Where the JWKS is served.
    pub jwks_path: String,
    /// Where the liveness probe is answered.
    pub health_path: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            endpoints: vec![EndpointMount::new(Dialect::Generic, "/auth")],
            protect: Vec::new(),
            identity: IdentityHeaders::default(),
            cookie: Some(CookieSettings {
                name: "otpgate_session".into(),
                secure: true,
            }),
            body_limit: 16 * 1024,
            trusted_proxies: Vec::new(),
            jwks_path: "/.well-known/jwks.json".into(),
            health_path: "/healthz".into(),
        }
    }
}

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
    /// Whether the adapter must read the request body before calling [`Gate::handle`].
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
    /// [`Gate::mediate`].
    Mediated(EndpointRoute),
    /// To the app; `protected` when a valid token is required.
    Upstream {
        /// A valid token is required.
        protected: bool,
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

fn path_matches(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
        || prefix.is_empty()
}

impl Gate {
    /// Decides where a request goes, from its path alone.
    pub fn route(&self, path: &str) -> Route {
        let http = self.http_settings();
        if path == http.jwks_path {
            return Route::Endpoint(EndpointRoute {
                dialect: Dialect::Generic,
                action: Action::Jwks,
            });
        }
        if path == http.health_path {
            return Route::Endpoint(EndpointRoute {
                dialect: Dialect::Generic,
                action: Action::Health,
            });
        }
        for mount in &http.endpoints {
            if let Some(action) = mount.dialect.action_for(path, &mount.prefix) {
                let route = EndpointRoute {
                    dialect: mount.dialect,
                    action,
                };
                return match action {
                    Action::Login => Route::Mediated(route),
                    _ => Route::Endpoint(route),
                };
            }
        }
        Route::Upstream {
            protected: http.protect.iter().any(|prefix| path_matches(path, prefix)),
        }
    }

    /// Answers a request to a gate endpoint. `body` is the request body, read by the
    /// adapter up to [`HttpSettings::body_limit`] when the route needs it.
    pub async fn handle(
        &self,
        route: EndpointRoute,
        request: &RequestView<'_>,
        body: Bytes,
    ) -> GateResponse {
        let allowed = route.dialect.method(route.action);
        if *request.method != allowed {
            let mut response = route.dialect.error(&GateError::MethodNotAllowed);
            response.headers.insert(
                http::header::ALLOW,
                HeaderValue::from_str(allowed.as_str()).unwrap_or(HeaderValue::from_static("POST")),
            );
            return response;
        }
        match (route.dialect, route.action) {
            (_, Action::Jwks) => {
                let mut response = GateResponse::json(StatusCode::OK, &serde_json::Value::Null);
                response.body = self.tokens().jwks().clone();
                // Public keys may be cached briefly by verifiers.
                response.headers.insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                response
            }
            (_, Action::Health) => {
                GateResponse::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            (Dialect::Nexudus, action) => dialect::nexudus::handle(self, action, request).await,
            (Dialect::Aerocall, action) => {
                dialect::aerocall::handle(self, action, request, &body).await
            }
            (Dialect::Baanx, _) => dialect::baanx::send(self, request, &body).await,
            (Dialect::Generic, Action::Logout) => {
                dialect::generic::logout(self, route.dialect, request, &body).await
            }
            (Dialect::Generic, action) => {
                if !is_json(request.headers) {
                    return route.dialect.error(&GateError::UnsupportedMediaType);
                }
                match action {
                    Action::Send => {
                        dialect::generic::send(self, route.dialect, request, &body).await
                    }
                    Action::Verify => {
                        dialect::generic::verify(self, route.dialect, request, &body).await
                    }
                    _ => dialect::generic::refresh(self, route.dialect, &body).await,
                }
            }
        }
    }

    /// Runs a [`Route::Mediated`] request: checks it on the way in, hands it to `forward`
    /// (the adapter's way to reach the app) with the body and extra headers to send, and
    /// reads the app's answer on the way out. Returns what the client gets.
    pub async fn mediate<F, Fut>(
        &self,
        route: EndpointRoute,
        request: &RequestView<'_>,
        body: Bytes,
        forward: F,
    ) -> GateResponse
    where
        F: FnOnce(Bytes, Vec<(HeaderName, HeaderValue)>) -> Fut,
        Fut: std::future::Future<Output = Result<GateResponse, GateError>>,
    {
        match route.dialect {
            Dialect::Baanx => dialect::baanx::login(self, request, body, forward).await,
            other => other.error(&GateError::NotFound),
        }
    }

    /// Whether the request declares a body over the limit, so that it can be refused
    /// before a byte of it is read.
    pub fn declares_oversized_body(&self, headers: &HeaderMap) -> bool {
        headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|length| length > self.http_settings().body_limit as u64)
    }

    /// The answer for a body over the limit, in the route's dialect.
    pub fn payload_too_large(&self, route: EndpointRoute) -> GateResponse {
        route.dialect.error(&GateError::PayloadTooLarge {
            limit: self.http_settings().body_limit,
        })
    }

    /// The answer for a body that could not be read, in the route's dialect.
    pub fn unreadable_body(&self, route: EndpointRoute) -> GateResponse {
        route.dialect.error(&GateError::InvalidRequest(
            "the request body could not be read".into(),
        ))
    }

    /// Decides what to change in a request bound for the app: every identity header the
    /// client sent is removed and, when the request carries a valid token, the identity
    /// is injected. On a protected path without a valid token, returns the 401 to answer
    /// instead (or a 503 when the store cannot answer the revocation check and
    /// [`crate::RevocationFallback::Deny`] is set).
    pub async fn plan_upstream(
        &self,
        headers: &HeaderMap,
        protected: bool,
    ) -> Result<UpstreamPlan, Box<GateResponse>> {
        let identity = match self.token_in(headers) {
            Some(token) => match self.authenticate(token).await {
                Ok(identity) => Some(identity),
                // The store could not rule out a revocation and the fallback is "deny":
                // a protected path waits for the store rather than guessing.
                Err(error @ GateError::StoreUnavailable(_)) if protected => {
                    return Err(Box::new(Dialect::Generic.error(&error)));
                }
                Err(_) => None,
            },
            None => None,
        };
        if identity.is_none() && protected {
            return Err(Box::new(Dialect::Generic.error(&GateError::Unauthorized)));
        }
        let mut plan = self.strip_only_plan(headers);
        if let Some(identity) = &identity {
            plan.inject = identity_headers(&self.http_settings().identity, identity);
        }
        plan.identity = identity;
        Ok(plan)
    }

    /// A plan that only strips the identity headers the client sent.
    pub fn strip_only_plan(&self, headers: &HeaderMap) -> UpstreamPlan {
        let settings = &self.http_settings().identity;
        // Clients must never be able to claim an identity by sending the headers
        // themselves: they are stripped always, whatever happens next.
        let strip = headers
            .keys()
            .filter(|name| is_identity_header(name, settings))
            .cloned()
            .collect();
        UpstreamPlan {
            strip,
            ..UpstreamPlan::default()
        }
    }

    /// The token a request carries: `Authorization: Bearer`, else the session cookie.
    pub fn token_in<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        for value in headers.get_all(http::header::AUTHORIZATION) {
            if let Some((scheme, token)) =
                value.to_str().ok().and_then(|v| v.trim().split_once(' '))
                && scheme.eq_ignore_ascii_case("bearer")
                && !token.trim().is_empty()
            {
                return Some(token.trim());
            }
        }
        let cookie = self.http_settings().cookie.as_ref()?;
        for value in headers.get_all(http::header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((name, token)) = pair.trim().split_once('=')
                    && name == cookie.name
                    && !token.is_empty()
                {
                    return Some(token);
                }
            }
        }
        None
    }

    /// The client's address: the peer, unless the peer is a trusted proxy, in which case
    /// the right-most untrusted address of `X-Forwarded-For`.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let trusted = &self.http_settings().trusted_proxies;
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        let peer = peer?;
        if !is_trusted(&peer) {
            // Only a trusted proxy may speak for the client; anyone else could forge it.
            return Some(peer);
        }
        let mut client = peer;
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse().ok())
            .collect();
        for ip in forwarded.into_iter().rev() {
            client = ip;
            if !is_trusted(&ip) {
                break;
            }
        }
        Some(client)
    }

    /// The `Set-Cookie` value for a session token, when cookies are on.
    pub(crate) fn session_cookie(&self, token: &str, max_age: u64) -> Option<HeaderValue> {
        let cookie = self.http_settings().cookie.as_ref()?;
        let secure = if cookie.secure { "; Secure" } else { "" };
        // HttpOnly keeps the token from page scripts; SameSite=Lax blocks cross-site posts.
        let value = format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            cookie.name, token, max_age, secure
        );
        HeaderValue::from_str(&value).ok()
    }
}

/// The locale a request asks for: the explicit one, else the first `Accept-Language`
/// tag; only well-formed tags (`fr`, `pt-BR`) count.
pub(crate) fn request_locale<'a>(
    explicit: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    let well_formed = |tag: &str| {
        (2..=35).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    explicit.filter(|t| well_formed(t)).or_else(|| {
        headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split([',', ';']).next())
            .map(str::trim)
            .filter(|t| well_formed(t))
    })
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            // application/json, or a structured-syntax type such as application/vnd.x+json.
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

fn is_identity_header(name: &HeaderName, settings: &IdentityHeaders) -> bool {
    let name = name.as_str();
    [
        &settings.jwt,
        &settings.subject,
        &settings.email,
        &settings.phone,
        &settings.tenant,
    ]
    .iter()
    .any(|h| h.as_str() == name)
        || settings
            .strip
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => {
                    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
                }
                None => name.eq_ignore_ascii_case(pattern),
            })
}

fn identity_headers(
    settings: &IdentityHeaders,
    identity: &Identity,
) -> Vec<(HeaderName, HeaderValue)> {
    // Subject, tenant, email and phone are made once per verified token and kept with its
    // cached claims; only the token's own header is made per request.
    let from_claims = identity.claims.forwarded.0.get_or_init(|| {
        [
            (&settings.subject, Some(identity.subject())),
            (&settings.tenant, Some(identity.tenant())),
            (&settings.email, identity.email()),
            (&settings.phone, identity.phone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, header_value(name, value?)?)))
        .map(|(name, value)| (name.clone(), value))
        .collect()
    });
    let mut headers = Vec::with_capacity(from_claims.len() + 1);
    if let Some(token) = header_value(&settings.jwt, &identity.token) {
        headers.push((settings.jwt.clone(), token));
    }
    headers.extend(from_claims.iter().cloned());
    headers
}

fn header_value(name: &HeaderName, value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value)
        .inspect_err(|_| {
            tracing::warn!(header = %name, "identity value is not a valid header value; not forwarded")
        })
        .ok()
}

/// The changes to make to a request before it reaches the app; see [`Gate::plan_upstream`].
#[derive(Clone, Debug, Default)]
pub struct UpstreamPlan {
    /// Identity headers the client sent, to be removed.
    pub strip: Vec<HeaderName>,
    /// Identity headers to set.
    pub inject: Vec<(HeaderName, HeaderValue)>,
    /// The verified identity, when the request carried a valid token.
    pub identity: Option<Identity>,
}

impl UpstreamPlan {
    /// Applies the plan to a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.strip {
            headers.remove(name);
        }
        headers.reserve(self.inject.len());
        for (name, value) in &self.inject {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(path_matches("/api/x", "/api/"));
        assert!(path_matches("/api", "/api/"));
        assert!(path_matches("/api/x", "/api"));
        assert!(!path_matches("/apiary", "/api"));
        assert!(path_matches("/anything", "/"));
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, expected) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("+json", false),
        ] {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), expected, "{value}");
        }
    }

    #[test]
    fn stripping_removes_patterns_and_configured_names() {
        let settings = IdentityHeaders {
            strip: vec!["X-Auth-*".into(), "X-Custom".into()],
            ..IdentityHeaders::default()
        };
        let mut headers = HeaderMap::new();
        for name in [
            "x-auth-subject",
            "X-AUTH-Anything",
            "x-otpgate-jwt",
            "x-custom",
            "x-keep",
            "authorization",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_identity_header(n, &settings))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["authorization", "x-keep"]);
    }
}
