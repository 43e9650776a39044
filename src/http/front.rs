//! [`Front`]: the engine behind its HTTP settings, and every HTTP decision both adapters
//! share.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::headers::{
    HeaderKind, StripRules, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID, forwarded_address,
    ip_header_value, push_identity_headers, request_id, sanitized_connection,
};
use super::policy;
use super::{
    Action, BodyReader, CanonicalTarget, Dialect, EndpointRoute, GateResponse, HttpSettings, Page,
    RequestView, Route, UpstreamPlan, dialect, forward, pages, target,
};
use crate::gate::{Gate, GateError};

/// The gate's HTTP front: the engine and the HTTP settings it is served with. Both
/// adapters hold one (the tower layer and the pingora filter) and ask it every HTTP
/// question: where a request goes, what an endpoint answers, what reaches the app.
/// Cheap to clone; clones share one state.
///
/// ```
/// use otpgate::Gate;
/// use otpgate::http::{Front, HttpSettings, Route};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut settings = HttpSettings::default();
/// settings.protect.push("/api/".into());
/// let front = Front::new(Gate::builder().build()?, settings);
///
/// // A target is read once, the one way the app will read it too.
/// let target = front
///     .canonical_target(&http::Method::GET, b"/public/../api//me")
///     .expect("a readable target");
/// assert_eq!(target.path(), "/api/me");
/// let route = front.route(&http::Method::GET, &target);
/// assert_eq!(route, Route::Upstream { rule: Some(0) });
///
/// // Without a token, a protected path is answered 401 and never reaches the app.
/// let headers = http::HeaderMap::new();
/// let refusal = front
///     .plan_upstream(&http::Method::GET, &target, &headers, None, Some(0))
///     .await
///     .unwrap_err();
/// assert_eq!(refusal.status, http::StatusCode::UNAUTHORIZED);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

struct Inner {
    gate: Gate,
    settings: HttpSettings,
    strip_rules: StripRules,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("gate", &self.inner.gate)
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl Front {
    /// `gate` served with `settings`.
    pub fn new(gate: Gate, mut settings: HttpSettings) -> Front {
        // A client must never be able to send the second-factor assertion itself.
        let assertion_headers: Vec<String> = settings
            .endpoints
            .iter()
            .filter(|mount| mount.dialect == Dialect::Baanx)
            .map(|mount| dialect::baanx::assertion_header(mount).as_str().to_owned())
            .collect();
        for header in assertion_headers {
            if !settings.identity.strip.contains(&header) {
                settings.identity.strip.push(header);
            }
        }
        let strip_rules = StripRules::new(&settings.identity);
        Front {
            inner: Arc::new(Inner {
                gate,
                settings,
                strip_rules,
            }),
        }
    }

    /// `gate` with the default HTTP settings: the generic endpoints under `/auth`,
    /// nothing protected. There is no silent conversion from a [`Gate`]: a gate built
    /// from a config file must keep the settings that came with it.
    pub fn with_defaults(gate: Gate) -> Front {
        Front::new(gate, HttpSettings::default())
    }

    /// The engine.
    pub fn gate(&self) -> &Gate {
        &self.inner.gate
    }

    /// The HTTP settings.
    pub fn settings(&self) -> &HttpSettings {
        &self.inner.settings
    }

    /// What the dialects' handlers get.
    fn context(&self) -> dialect::Context<'_> {
        dialect::Context {
            gate: self.gate(),
            settings: self.settings(),
        }
    }

    /// Reads a request target the one way the gate and the app will both use (see
    /// [`target`]), or the `400 invalid_path` answer for one that cannot be read one way
    /// only. `raw` is the target as the client sent it.
    pub fn canonical_target(
        &self,
        method: &Method,
        raw: &[u8],
    ) -> Result<CanonicalTarget, Box<GateResponse>> {
        target::canonicalize(raw, *method == Method::OPTIONS, &self.settings().paths).map_err(
            |invalid| {
                Box::new(Dialect::Generic.error(&GateError::InvalidPath(invalid.to_string())))
            },
        )
    }

    /// Reads a request's head the one way the gate and the app will both use: the caps
    /// and headers ([`check_head`](Self::check_head)), then the target
    /// ([`canonical_target`](Self::canonical_target)); `raw` is the target as the client
    /// sent it and `uri` as the adapter parsed it. Returns the target and, when the app
    /// must get it written otherwise, the URI to put in the request's place: the canonical
    /// origin form for a target spelled any other way, and for an absolute-form target
    /// (whose authority the gate did not judge) unless `keep_authority` (HTTP/2, where
    /// scheme and authority always travel with the path).
    pub fn read_head(
        &self,
        method: &Method,
        headers: &HeaderMap,
        raw: &[u8],
        uri: &http::Uri,
        keep_authority: bool,
    ) -> Result<(CanonicalTarget, Option<http::Uri>), Box<GateResponse>> {
        self.check_head(headers)?;
        let target = self.canonical_target(method, raw)?;
        let drop_authority = !keep_authority && uri.authority().is_some();
        if target.is_spelled(raw) && !drop_authority {
            return Ok((target, None));
        }
        let invalid = |_: http::Error| {
            Box::new(Dialect::Generic.error(&GateError::InvalidRequest(
                "the request target is invalid".into(),
            )))
        };
        let mut parts = uri.clone().into_parts();
        if drop_authority {
            parts.scheme = None;
            parts.authority = None;
        }
        parts.path_and_query = Some(
            http::uri::PathAndQuery::try_from(target.to_origin_form())
                .map_err(|e| invalid(e.into()))?,
        );
        let rewritten = http::Uri::from_parts(parts).map_err(|e| invalid(e.into()))?;
        Ok((target, Some(rewritten)))
    }

    /// Refuses a request head the gate will not pass on: more header lines or bytes than
    /// allowed (431), or more than one `Authorization` header (400), which the gate and
    /// the app could each read differently.
    pub fn check_head(&self, headers: &HeaderMap) -> Result<(), Box<GateResponse>> {
        let http = self.settings();
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

    /// Decides where a request goes, from its method and canonical target alone.
    pub fn route(&self, method: &Method, target: &CanonicalTarget) -> Route {
        let http = self.settings();
        if target.is_asterisk() {
            // `OPTIONS *` names no resource: only a rule that protects everything covers it.
            return Route::Upstream {
                rule: policy::rule_for(&http.protect, method, "/", http.paths.case_sensitive),
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
        if path == http.ready_path {
            return Route::Endpoint(EndpointRoute {
                dialect: Dialect::Generic,
                action: Action::Ready,
            });
        }
        if let Some(pages) = &http.pages {
            if let Some(page) = Page::at(path, &pages.prefix) {
                return Route::Endpoint(EndpointRoute {
                    dialect: Dialect::Generic,
                    action: Action::Page(page),
                });
            }
            // The sign-in page's script fetches its challenges beside the pages, whichever
            // dialects are mounted.
            if path.strip_prefix(pages.prefix.trim_end_matches('/')) == Some("/challenge") {
                return Route::Endpoint(EndpointRoute {
                    dialect: Dialect::Generic,
                    action: Action::Challenge,
                });
            }
            if pages.forward_auth
                && path.strip_prefix(pages.prefix.trim_end_matches('/')) == Some("/check")
            {
                return Route::Endpoint(EndpointRoute {
                    dialect: Dialect::Generic,
                    action: Action::Check,
                });
            }
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
            rule: policy::rule_for(&http.protect, method, path, http.paths.case_sensitive),
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
        // Every audit event of this request names its dialect and client.
        let dialect_name = format!("{:?}", route.dialect).to_ascii_lowercase();
        crate::gate::audit::within(dialect_name, request.client_ip, async {
            // Pages take GET and POST on one path and answer in HTML: they check their own
            // methods and render their own errors.
            if let Action::Page(page) = route.action {
                return match &self.settings().pages {
                    Some(pages) => pages::handle(&self.context(), pages, page, request, body).await,
                    None => refusal(route.dialect, &GateError::NotFound),
                };
            }
            let allowed = route.dialect.method(route.action);
            if *request.method != allowed {
                let mut response = route.dialect.error(&GateError::MethodNotAllowed);
                response.headers.insert(
                    http::header::ALLOW,
                    HeaderValue::from_str(allowed.as_str())
                        .unwrap_or(HeaderValue::from_static("POST")),
                );
                return response;
            }
            let answer = match (route.dialect, route.action) {
                (_, Action::Jwks) => {
                    let mut response = GateResponse::json(StatusCode::OK, &serde_json::Value::Null);
                    response.body = self.gate().tokens().jwks().clone();
                    // Public keys may be cached briefly by verifiers.
                    response.headers.insert(
                        http::header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=300"),
                    );
                    Ok(response)
                }
                (_, Action::Health) => Ok(GateResponse::json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok"}),
                )),
                (_, Action::Ready) => self.gate().readiness().await.map(|()| {
                    GateResponse::json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
                }),
                (_, Action::Check) => Ok(forward::check(self, request).await),
                (_, Action::Challenge) => dialect::generic::challenge(&self.context(), request),
                (_, Action::Page(_)) => Err(GateError::NotFound),
                (Dialect::Nexudus, action) => {
                    dialect::nexudus::handle(&self.context(), action, request).await
                }
                (Dialect::Aerocall, action) => {
                    dialect::aerocall::handle(&self.context(), action, request, &body).await
                }
                (Dialect::Baanx, _) => dialect::baanx::send(&self.context(), request, &body).await,
                (Dialect::Generic, action) => {
                    dialect::generic::handle(&self.context(), action, request, &body).await
                }
            };
            // Errors are rendered here, once, in the route's dialect; the log says why a
            // part the gate needs failed, which the answer does not.
            answer.unwrap_or_else(|error| refusal(route.dialect, &error))
        })
        .await
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
        // Every audit event of this request names its dialect and client.
        let dialect_name = format!("{:?}", route.dialect).to_ascii_lowercase();
        crate::gate::audit::within(dialect_name, request.client_ip, async {
            let answer = match route.dialect {
                Dialect::Baanx => {
                    dialect::baanx::login(&self.context(), request, body, forward).await
                }
                _ => Err(GateError::NotFound),
            };
            answer.unwrap_or_else(|error| refusal(route.dialect, &error))
        })
        .await
    }

    /// Starts reading the body of a request to `route` (see [`BodyReader`]): `Ok(None)`
    /// when the route takes none, the 413 answer when the request declares too much.
    #[allow(clippy::result_large_err)] // answered at once by the adapter; see `BodyReader`
    pub fn body_reader(
        &self,
        route: EndpointRoute,
        headers: &HeaderMap,
    ) -> Result<Option<BodyReader>, GateResponse> {
        BodyReader::start(route, headers, self.settings().body_limit)
    }

    /// Decides what to change in a request bound for the app: every identity header the
    /// client sent is removed and, when the request carries a valid token, the identity
    /// is injected; forwarding headers are set from `peer` (see
    /// [`strip_only_plan`](Self::strip_only_plan)). When `rule` (from
    /// [`route`](Self::route)) guards the request and the session does not pass it,
    /// returns the answer to give instead (see [`refuse`](Self::refuse)).
    pub async fn plan_upstream(
        &self,
        method: &Method,
        target: &CanonicalTarget,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        rule: Option<usize>,
    ) -> Result<UpstreamPlan, Box<GateResponse>> {
        let identity = match self.judge(headers, rule).await {
            Ok(identity) => identity,
            Err(refused) => {
                let return_to = target.to_origin_form();
                return Err(Box::new(
                    self.refuse(&refused, method, headers, &return_to, rule),
                ));
            }
        };
        let mut plan = self.strip_only_plan(headers, peer);
        if let Some(identity) = &identity {
            push_identity_headers(&self.settings().identity, identity, &mut plan.inject);
        }
        plan.identity = identity;
        Ok(plan)
    }

    /// A plan that injects no identity: it removes every header the client may not set
    /// (identity headers in any spelling, rerouting headers, and forwarding headers from
    /// an untrusted `peer`), sets `X-Forwarded-For` and `X-Request-Id` (a trusted `peer`'s
    /// own, else a fresh one; see [`UpstreamPlan::request_id`]), and keeps `Connection`
    /// from naming any of them.
    pub fn strip_only_plan(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> UpstreamPlan {
        let peer_trusted = peer.is_some_and(|peer| self.is_trusted_proxy(&peer));
        let rules = &self.inner.strip_rules;
        let mut strip: Vec<HeaderName> = headers
            .keys()
            .filter(|name| match rules.kind(name) {
                HeaderKind::Plain => false,
                // Clients must never be able to claim an identity by sending the headers
                // themselves: they are stripped always, whatever happens next.
                HeaderKind::Stripped => true,
                // Only a trusted proxy may say who the client is, and only in the spelling
                // proxies write: `X_Forwarded_For` would be a second list.
                HeaderKind::Forwarding { canonical } => {
                    !peer_trusted || !canonical || several_values(headers, name)
                }
                // Replaced by the id chosen below, in every spelling: the app sees one id,
                // and a client cannot pick it.
                HeaderKind::RequestId => true,
            })
            .cloned()
            .collect();
        let request_id = request_id(headers, peer_trusted);
        // Room for the request id, the forwarding headers and an identity: one allocation.
        let mut inject = Vec::with_capacity(8);
        inject.push((X_REQUEST_ID.clone(), request_id.clone()));
        if let Some(peer) = peer {
            // One line, so that apps reading only the first or only the last line of
            // X-Forwarded-For read the same list; a trusted proxy's list is extended.
            let forwarded_for = match peer_trusted {
                true => HeaderValue::from_str(
                    &headers
                        .get_all(&X_FORWARDED_FOR)
                        .iter()
                        .filter_map(|value| value.to_str().ok())
                        .chain(std::iter::once(peer.to_string().as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                false => Ok(ip_header_value(peer)),
            };
            if let Ok(value) = forwarded_for {
                inject.push((X_FORWARDED_FOR.clone(), value));
            }
        }
        // `Connection: X-Auth-Subject` asks the next hop to drop that header: a client
        // must not be able to remove what the gate sets.
        if let Some(connection) = sanitized_connection(headers, &self.inner.strip_rules) {
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
            request_id: Some(request_id),
        }
    }

    /// Puts the `X-Forwarded-Proto` the app gets in `plan` (from
    /// [`strip_only_plan`](Self::strip_only_plan) or [`plan_upstream`](Self::plan_upstream)):
    /// `https` for a request that reached the gate over TLS, else `http`, unless a trusted
    /// `peer` (a proxy that terminated TLS in front of the gate) already said which, with
    /// one value that `plan` keeps.
    pub fn plan_forwarded_proto(
        &self,
        plan: &mut UpstreamPlan,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        tls: bool,
    ) {
        // The gate's own TLS is a fact; a trusted proxy's word is kept only where the gate
        // saw plain HTTP, and a client's own value never reaches the app (stripped by the
        // plan as a forwarding header from an untrusted peer, as are a trusted proxy's
        // several lines): the gate's own view replaces what the plan strips.
        let trusted_said = !tls
            && peer.is_some_and(|peer| self.is_trusted_proxy(&peer))
            && headers.contains_key(&X_FORWARDED_PROTO)
            && !plan.strip.contains(&X_FORWARDED_PROTO);
        if trusted_said {
            return;
        }
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        plan.inject.push((X_FORWARDED_PROTO.clone(), proto));
    }

    /// The token a request carries: `Authorization: Bearer`, else the session cookie.
    pub fn token_in<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        self.settings().token_in(headers)
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
            .get_all(&X_FORWARDED_FOR)
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

    pub(crate) fn is_trusted_proxy(&self, ip: &IpAddr) -> bool {
        self.settings()
            .trusted_proxies
            .iter()
            .any(|net| net.contains(ip))
    }

    /// The `Set-Cookie` value for a session token, when cookies are on.
    pub fn session_cookie(&self, token: &str, max_age: u64) -> Option<HeaderValue> {
        self.settings().session_cookie(token, max_age)
    }
}

/// Whether a trusted proxy's forwarding header `name` says more than one thing, which the
/// app must not get: one value is a proxy's word; with two (a proxy that appended its
/// value behind a client's, on a line of its own or after a comma), apps reading the first
/// and apps reading the last would each believe a different one. The lists are the
/// exception: `X-Forwarded-For`, which the plan joins into one line, the peer last, and
/// `Forwarded`, whose one line is kept as a list and whose several lines are not.
fn several_values(headers: &HeaderMap, name: &HeaderName) -> bool {
    if *name == X_FORWARDED_FOR {
        return false;
    }
    let mut lines = headers.get_all(name).iter();
    let first = lines.next();
    lines.next().is_some()
        || (*name != http::header::FORWARDED
            && first.is_some_and(|value| value.as_bytes().contains(&b',')))
}

/// `error` in `dialect`'s shape. Errors are rendered here, once; when a part the gate
/// needs failed, the log says which and why, which the answer does not.
pub(crate) fn refusal(dialect: Dialect, error: &GateError) -> GateResponse {
    error.log_if_unavailable();
    dialect.error(error)
}
