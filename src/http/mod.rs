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
pub mod target;

pub use dialect::Dialect;
pub use target::{CanonicalTarget, PathPolicy};

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
    /// requests. The five headers above are always removed too. Names match in any
    /// case and with `_` and `-` alike.
    pub strip: Vec<String>,
    /// Also remove `X-Original-URL` and `X-Rewrite-URL`, with which IIS-style apps
    /// reroute a request to another path than the one the gate judged.
    pub strip_reroute: bool,
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
            strip_reroute: true,
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
    /// How request paths are read and protected prefixes matched.
    pub paths: PathPolicy,
    /// Most header lines a request may carry (431 beyond).
    pub max_headers: usize,
    /// Most bytes of header names and values a request may carry (431 beyond).
    pub max_header_bytes: usize,
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
            paths: PathPolicy::default(),
            max_headers: 100,
            max_header_bytes: 32 * 1024,
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

impl Gate {
    /// Reads a request target the one way the gate and the app will both use (see
    /// [`target`]), or the `400 invalid_path` answer for one that cannot be read one way
    /// only. `raw` is the target as the client sent it.
    pub fn canonical_target(
        &self,
        method: &Method,
        raw: &[u8],
    ) -> Result<CanonicalTarget, Box<GateResponse>> {
        target::canonicalize(raw, *method == Method::OPTIONS, &self.http_settings().paths)
            .map_err(|invalid| Box::new(Dialect::Generic.error(&GateError::InvalidPath(invalid))))
    }

    /// Refuses a request head the gate will not pass on: more header lines or bytes than
    /// allowed (431), or more than one `Authorization` header (400), which the gate and
    /// the app could each read differently.
    pub fn check_head(&self, headers: &HeaderMap) -> Result<(), Box<GateResponse>> {
        let http = self.http_settings();
        let refuse = |error: GateError| Err(Box::new(Dialect::Generic.error(&error)));
        if headers.len() > http.max_headers {
            return refuse(GateError::HeadersTooLarge {
                limit: http.max_headers,
                unit: "headers",
            });
        }
        // Name, value and the `: ` and CRLF around them, as on the wire.
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if bytes > http.max_header_bytes {
            return refuse(GateError::HeadersTooLarge {
                limit: http.max_header_bytes,
                unit: "bytes",
            });
        }
        // The gate would read the first, some apps read the last or join them.
        if headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return refuse(GateError::InvalidRequest(
                "more than one Authorization header".into(),
            ));
        }
        Ok(())
    }

    /// Decides where a request goes, from its canonical target alone.
    pub fn route(&self, target: &CanonicalTarget) -> Route {
        let http = self.http_settings();
        if target.is_asterisk() {
            // `OPTIONS *` names no resource: only a prefix that protects everything
            // covers it.
            return Route::Upstream {
                protected: http
                    .protect
                    .iter()
                    .any(|prefix| prefix.trim_matches('/').is_empty()),
            };
        }
        let path = target.match_path();
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
            protected: http
                .protect
                .iter()
                .any(|prefix| target::prefix_covers(prefix, path, http.paths.case_sensitive)),
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
    /// is injected; forwarding headers are set from `peer` (see
    /// [`strip_only_plan`](Self::strip_only_plan)). On a protected path without a valid
    /// token, returns the 401 to answer instead (or a 503 when the store cannot answer
    /// the revocation check and [`crate::RevocationFallback::Deny`] is set).
    pub async fn plan_upstream(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
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
        let mut plan = self.strip_only_plan(headers, peer);
        if let Some(identity) = &identity {
            plan.inject
                .extend(identity_headers(&self.http_settings().identity, identity));
        }
        plan.identity = identity;
        Ok(plan)
    }

    /// A plan that injects no identity: it removes every header the client may not set
    /// (identity headers in any spelling, rerouting headers, and forwarding headers from
    /// an untrusted `peer`), sets `X-Forwarded-For`, and keeps `Connection` from naming
    /// any of them.
    pub fn strip_only_plan(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> UpstreamPlan {
        let http = self.http_settings();
        let peer_trusted = peer.is_some_and(|peer| self.is_trusted_proxy(&peer));
        let mut strip: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                // Clients must never be able to claim an identity by sending the headers
                // themselves: they are stripped always, whatever happens next.
                is_identity_header(name, &http.identity)
                    // Only a trusted proxy may say who the client is, and only in the
                    // spelling proxies write: `X_Forwarded_For` would be a second list.
                    || (is_forwarding_header(name)
                        && (!peer_trusted || folded(name.as_str()) != name.as_str()))
            })
            .cloned()
            .collect();
        let mut inject = Vec::new();
        if let Some(peer) = peer {
            let peer = peer.to_string();
            // One line, so that apps reading only the first or only the last line of
            // X-Forwarded-For read the same list; a trusted proxy's list is extended.
            let forwarded_for = match peer_trusted {
                true => headers
                    .get_all(X_FORWARDED_FOR)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .chain(std::iter::once(peer.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
                false => peer,
            };
            if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
                strip.push(HeaderName::from_static(X_FORWARDED_FOR));
                inject.push((HeaderName::from_static(X_FORWARDED_FOR), value));
            }
        }
        // `Connection: X-Auth-Subject` asks the next hop to drop that header: a client
        // must not be able to remove what the gate sets.
        if let Some(connection) = sanitized_connection(headers, &http.identity) {
            strip.push(http::header::CONNECTION);
            if let Some(value) = connection {
                inject.push((http::header::CONNECTION, value));
            }
        }
        strip.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        strip.dedup();
        UpstreamPlan {
            strip,
            inject,
            identity: None,
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
        let is_trusted = |ip: &IpAddr| self.is_trusted_proxy(ip);
        let peer = peer?;
        if !is_trusted(&peer) {
            // Only a trusted proxy may speak for the client; anyone else could forge it.
            return Some(peer);
        }
        let mut client = peer;
        let entries: Vec<Option<IpAddr>> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .flat_map(|value| match value.to_str() {
                Ok(value) => value.split(',').map(forwarded_address).collect(),
                Err(_) => vec![None],
            })
            .collect();
        for entry in entries.into_iter().rev() {
            // An entry that does not read as an address ends the walk: skipping it would
            // let whatever a client wrote to its left stand as the client.
            let Some(ip) = entry else { break };
            client = ip;
            if !is_trusted(&ip) {
                break;
            }
        }
        Some(client)
    }

    fn is_trusted_proxy(&self, ip: &IpAddr) -> bool {
        self.http_settings()
            .trusted_proxies
            .iter()
            .any(|net| net.contains(ip))
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

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// A header name as the most lenient app servers read it: lower case, and every
/// character other than a letter or digit as `-`. CGI, PHP, Rack and WSGI fold `-` and `_`
/// together, lighttpd folds every other character onto `_` too, PHP turns `.` into `_`:
/// `X_Auth_Subject`, `X.Auth.Subject` and `X~Auth~Subject` all reach an app as
/// `HTTP_X_AUTH_SUBJECT`. `HeaderName`s are already lower case.
fn folded(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(
            name.chars()
                .map(|c| match c {
                    c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
                    _ => '-',
                })
                .collect(),
        )
    }
}

/// Headers with which IIS-style apps reroute a request to another path.
const REROUTE_HEADERS: [&str; 2] = ["x-original-url", "x-rewrite-url"];

fn is_identity_header(name: &HeaderName, settings: &IdentityHeaders) -> bool {
    let name = folded(name.as_str());
    let same = |pattern: &str| name.eq_ignore_ascii_case(&folded(pattern));
    [
        &settings.jwt,
        &settings.subject,
        &settings.email,
        &settings.phone,
        &settings.tenant,
    ]
    .iter()
    .any(|h| same(h.as_str()))
        || (settings.strip_reroute && REROUTE_HEADERS.iter().any(|h| same(h)))
        || settings
            .strip
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => {
                    let prefix = folded(prefix);
                    name.get(..prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(&prefix))
                }
                None => same(pattern),
            })
}

/// One `X-Forwarded-For` entry: an address, or `192.0.2.1:443` and `[2001:db8::1]:443`
/// as some load balancers write them.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(bracketed) = entry.strip_prefix('[') {
        let (ip, port) = bracketed.split_once(']')?;
        port.strip_prefix(':')?.parse::<u16>().ok()?;
        return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (ip, port) = entry.split_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Headers through which a proxy tells the app who the client is, in any spelling.
fn is_forwarding_header(name: &HeaderName) -> bool {
    let name = folded(name.as_str());
    name == "forwarded" || name == "x-real-ip" || name.starts_with("x-forwarded-")
}

/// `Connection` without the names of headers the gate strips or sets: `None` when
/// nothing is to change, `Some(None)` when nothing is left of it.
fn sanitized_connection(
    headers: &HeaderMap,
    identity: &IdentityHeaders,
) -> Option<Option<HeaderValue>> {
    let mut changed = false;
    let mut kept = Vec::new();
    for value in headers.get_all(http::header::CONNECTION) {
        let Ok(value) = value.to_str() else {
            // Unreadable: dropped whole, since the gate cannot tell what it names.
            changed = true;
            continue;
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let named = HeaderName::from_bytes(token.as_bytes());
            let protected = named.as_ref().map_or(true, |name| {
                is_identity_header(name, identity) || is_forwarding_header(name)
            });
            if protected {
                changed = true;
            } else {
                kept.push(token);
            }
        }
    }
    if !changed {
        return None;
    }
    Some(match kept.is_empty() {
        true => None,
        false => HeaderValue::from_str(&kept.join(", ")).ok(),
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

    fn gate(trusted: &[&str]) -> Gate {
        let http = HttpSettings {
            trusted_proxies: trusted.iter().map(|net| net.parse().unwrap()).collect(),
            ..HttpSettings::default()
        };
        Gate::builder().http(http).build().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn planned(gate: &Gate, pairs: &[(&str, &str)], peer: Option<&str>) -> HeaderMap {
        let mut headers = headers(pairs);
        let peer = peer.map(|p| p.parse().unwrap());
        gate.strip_only_plan(&headers, peer).apply(&mut headers);
        headers
    }

    #[test]
    fn identity_headers_go_in_every_spelling_an_app_server_folds() {
        let gate = gate(&[]);
        let left = planned(
            &gate,
            &[
                ("X_Auth_Subject", "admin"),
                ("X-Auth_Subject", "admin"),
                ("X_AUTH_SUBJECT", "admin"),
                ("x_auth-email", "admin@example.com"),
                ("X_Otpgate_Jwt", "forged"),
                ("x-otpgate_anything", "forged"),
                // lighttpd folds every other character onto `_`, PHP turns `.` into `_`.
                ("X.Auth.Subject", "admin"),
                ("X~Auth~Email", "admin@example.com"),
                ("X!Auth+Phone", "+14155550123"),
                ("X'Auth'Tenant", "other"),
                ("X-Auth.Role", "root"),
                ("X.Otpgate.Jwt", "forged"),
                ("X.Original.URL", "/api/me"),
                ("X-Original-URL", "/api/me"),
                ("X_Rewrite_Url", "/api/me"),
                ("X-Authority", "kept"),
                ("x_custom_thing", "kept"),
            ],
            None,
        );
        let mut names: Vec<&str> = left.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-authority", "x_custom_thing"]);
    }

    #[test]
    fn reroute_headers_can_be_kept() {
        let http = HttpSettings {
            identity: IdentityHeaders {
                strip_reroute: false,
                ..IdentityHeaders::default()
            },
            ..HttpSettings::default()
        };
        let gate = Gate::builder().http(http).build().unwrap();
        let left = planned(&gate, &[("x-original-url", "/x")], None);
        assert!(left.contains_key("x-original-url"));
    }

    #[test]
    fn an_untrusted_peer_cannot_say_who_the_client_is() {
        let gate = gate(&["10.0.0.0/8"]);
        let left = planned(
            &gate,
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "7.7.7.7"),
                ("X_Forwarded_For", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("x-forwarded-host", "evil.test"),
                ("X.Forwarded.For", "6.6.6.6"),
                ("X.Real.IP", "6.6.6.6"),
                ("X~Forwarded~Proto", "https"),
            ],
            Some("192.0.2.7"),
        );
        let values: Vec<&HeaderValue> = left.get_all("x-forwarded-for").iter().collect();
        assert_eq!(values, ["192.0.2.7"]);
        assert_eq!(left.len(), 1, "{left:?}");
        // With no peer known, forged values still go and nothing is claimed.
        let left = planned(&gate, &[("x-forwarded-for", "6.6.6.6")], None);
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_trusted_proxy_list_is_extended_on_one_line() {
        let gate = gate(&["10.0.0.0/8"]);
        let left = planned(
            &gate,
            &[
                ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
                ("x-forwarded-for", "10.2.2.2"),
                ("x-real-ip", "203.0.113.9"),
                // A trusted proxy writes `X-Forwarded-For`; other spellings are a client's.
                ("X_Forwarded_For", "6.6.6.6"),
                ("X.Real.IP", "6.6.6.6"),
            ],
            Some("10.0.0.5"),
        );
        let values: Vec<&HeaderValue> = left.get_all("x-forwarded-for").iter().collect();
        assert_eq!(values, ["203.0.113.9, 10.1.1.1, 10.2.2.2, 10.0.0.5"]);
        assert_eq!(left["x-real-ip"], "203.0.113.9");
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn the_client_is_the_right_most_address_a_trusted_proxy_did_not_add() {
        let gate = gate(&["10.0.0.0/8"]);
        let client = |xff: &[&str], peer: &str| {
            let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            gate.client_ip(Some(peer.parse().unwrap()), &headers(&pairs))
                .map(|ip| ip.to_string())
        };
        let some = |ip: &str| Some(ip.to_owned());
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client(&["6.6.6.6"], "192.0.2.7"), some("192.0.2.7"));
        assert_eq!(
            client(&["6.6.6.6, 203.0.113.9"], "10.0.0.1"),
            some("203.0.113.9")
        );
        assert_eq!(
            client(&["6.6.6.6", "203.0.113.9, 10.1.1.1"], "10.0.0.1"),
            some("203.0.113.9")
        );
        // Proxies that write ports.
        assert_eq!(
            client(&["6.6.6.6, 203.0.113.9:5555"], "10.0.0.1"),
            some("203.0.113.9")
        );
        assert_eq!(
            client(&["6.6.6.6, [2001:db8::9]:443"], "10.0.0.1"),
            some("2001:db8::9")
        );
        // Something unreadable ends the walk at the last hop that could be read.
        assert_eq!(client(&["6.6.6.6, unknown"], "10.0.0.1"), some("10.0.0.1"));
        assert_eq!(
            client(&["6.6.6.6, 203.0.113.9:x"], "10.0.0.1"),
            some("10.0.0.1")
        );
        assert_eq!(
            client(&["6.6.6.6, 10.1.1.1, garbage, 10.2.2.2"], "10.0.0.1"),
            some("10.2.2.2")
        );
        assert_eq!(client(&[], "10.0.0.1"), some("10.0.0.1"));
    }

    #[test]
    fn connection_cannot_name_what_the_gate_sets_or_strips() {
        let gate = gate(&[]);
        let left = planned(
            &gate,
            &[(
                "connection",
                "keep-alive, X-Auth-Subject, x_otpgate_jwt, X-Forwarded-For, te",
            )],
            Some("192.0.2.7"),
        );
        assert_eq!(left["connection"], "keep-alive, te");
        let left = planned(&gate, &[("connection", "x-auth-email")], None);
        assert!(!left.contains_key("connection"));
        let left = planned(&gate, &[("connection", "close")], None);
        assert_eq!(left["connection"], "close");
    }

    #[test]
    fn heads_over_the_caps_or_with_two_authorizations_are_refused() {
        let http = HttpSettings {
            max_headers: 3,
            max_header_bytes: 64,
            ..HttpSettings::default()
        };
        let gate = Gate::builder().http(http).build().unwrap();
        assert!(
            gate.check_head(&headers(&[("a", "1"), ("b", "2"), ("c", "3")]))
                .is_ok()
        );
        let refusal = gate
            .check_head(&headers(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]))
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let long = "v".repeat(60);
        let refusal = gate.check_head(&headers(&[("a", &long)])).unwrap_err();
        assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let refusal = gate
            .check_head(&headers(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b"),
            ]))
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&refusal.body).contains("invalid_request"));
    }

    #[test]
    fn protection_and_routing_use_the_canonical_path() {
        let http = HttpSettings {
            protect: vec!["/api/".into()],
            ..HttpSettings::default()
        };
        let gate = Gate::builder().http(http).build().unwrap();
        let route =
            |raw: &str| gate.route(&gate.canonical_target(&Method::GET, raw.as_bytes()).unwrap());
        for raw in [
            "/api/me",
            "/API/me",
            "//api/me",
            "/public/../api/me",
            "/%61pi/me",
            "/api",
        ] {
            assert_eq!(route(raw), Route::Upstream { protected: true }, "{raw}");
        }
        for raw in ["/apiary", "/public/api/me", "/"] {
            assert_eq!(route(raw), Route::Upstream { protected: false }, "{raw}");
        }
        assert!(matches!(route("//auth/otp/send"), Route::Endpoint(_)));
        let refusal = gate
            .canonical_target(&Method::GET, b"/api%2Fme")
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&refusal.body).contains("invalid_path"));
    }
}
