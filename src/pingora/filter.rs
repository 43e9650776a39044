//! [`OtpFilter`]: the gate's steps as functions any [`ProxyHttp`](::pingora::proxy::ProxyHttp)
//! can call, and the translation between pingora's session and the front's types.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use ::pingora::http::{RequestHeader, ResponseHeader};
use ::pingora::proxy::Session;
use ::pingora::{Error, ErrorType};
use bytes::Bytes;

use super::app_client::AppClient;
use super::{Upstream, UpstreamTimeouts};
use crate::gate::GateError;
use crate::gate::Identity;
use crate::http::{
    CanonicalTarget, EndpointRoute, Front, GateResponse, RequestView, Route, UpstreamPlan,
};

/// Per-request state of [`OtpFilter`].
#[derive(Default)]
pub struct OtpCtx {
    plan: Option<UpstreamPlan>,
    // The front the request started on: it finishes on it, whatever a reload does meanwhile.
    front: Option<Front>,
    // The kind of route `request_filter` chose; `None` until it routed the request.
    route: Option<&'static str>,
}

impl std::fmt::Debug for OtpCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpCtx")
            .field("plan", &self.plan)
            .field("route", &self.route_kind())
            .finish_non_exhaustive()
    }
}

/// The front a filter serves, replaceable while it runs: a reload puts a new one in,
/// requests already under way keep the one they started on.
#[derive(Clone)]
pub struct FrontCell(Arc<RwLock<Front>>);

impl FrontCell {
    /// A cell holding `front`.
    pub fn new(front: Front) -> FrontCell {
        FrontCell(Arc::new(RwLock::new(front)))
    }

    /// The front new requests start on.
    pub fn current(&self) -> Front {
        // A panic while holding the lock cannot leave a half-written front: the write is
        // one assignment, so a poisoned lock still holds a whole one.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `front` in for the requests that start from now on; returns the one it replaces.
    pub fn replace(&self, front: Front) -> Front {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, front)
    }
}

impl std::fmt::Debug for FrontCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrontCell(..)")
    }
}

impl OtpCtx {
    /// The verified identity of a request bound for the app, if it carried a valid token.
    pub fn identity(&self) -> Option<&Identity> {
        self.plan.as_ref().and_then(|plan| plan.identity.as_ref())
    }

    /// The kind of route the request took, for metrics: `endpoint` (answered by the
    /// gate), `mediated` (a gate endpoint that called the app), `upstream` (proxied to the
    /// app) or `refused` (answered before it was routed: unreadable, or a protected path
    /// without a valid token).
    pub fn route_kind(&self) -> &'static str {
        self.route.unwrap_or("refused")
    }

    /// The `X-Request-Id` the app gets, for a request bound for it.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id_value().and_then(|id| id.to_str().ok())
    }

    /// [`request_id`](Self::request_id) as the header value itself.
    pub fn request_id_value(&self) -> Option<&http::HeaderValue> {
        self.plan.as_ref().and_then(|plan| plan.request_id.as_ref())
    }
}

/// The gate's steps for a pingora proxy of your own: call
/// [`request_filter`](OtpFilter::request_filter) from `ProxyHttp::request_filter` and
/// [`upstream_request_filter`](OtpFilter::upstream_request_filter) from
/// `ProxyHttp::upstream_request_filter`.
#[derive(Clone, Debug)]
pub struct OtpFilter {
    front: FrontCell,
    timeouts: UpstreamTimeouts,
    // For mediated routes (the baanx login), which the gate forwards itself.
    app: Option<AppClient>,
    // `Strict-Transport-Security` for every answer over TLS.
    hsts: Option<http::HeaderValue>,
}

impl OtpFilter {
    /// A filter driven by `front`: the engine with its HTTP settings.
    pub fn new(front: Front) -> OtpFilter {
        OtpFilter::with_cell(FrontCell::new(front))
    }

    /// A filter driven by the front in `cell`, which whoever holds another clone of it
    /// may replace while the filter runs (a config reload).
    pub fn with_cell(cell: FrontCell) -> OtpFilter {
        OtpFilter {
            front: cell,
            timeouts: UpstreamTimeouts::default(),
            app: None,
            hsts: None,
        }
    }

    /// Adds `Strict-Transport-Security: value` to every answer to a request that came
    /// over TLS, the gate's own and the app's (see
    /// [`response_filter`](Self::response_filter)); plain-HTTP answers never carry it, as
    /// RFC 6797 asks.
    pub fn with_hsts(mut self, value: http::HeaderValue) -> OtpFilter {
        self.hsts = Some(value);
        self
    }

    /// The `Strict-Transport-Security` value for an answer to `session`, if any.
    pub(super) fn hsts_for(&self, session: &Session) -> Option<&http::HeaderValue> {
        self.hsts.as_ref().filter(|_| over_tls(session))
    }

    /// Call from `ProxyHttp::response_filter`: adds what every answer over TLS carries
    /// (the [`with_hsts`](Self::with_hsts) header) to the app's answer.
    pub fn response_filter(
        &self,
        session: &Session,
        response: &mut ResponseHeader,
    ) -> ::pingora::Result<()> {
        if let Some(hsts) = self.hsts_for(session) {
            response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        Ok(())
    }

    /// The app that mediated routes (the baanx login, whose answer the gate must read)
    /// are forwarded to. Without it such routes answer 502.
    pub fn with_upstream(mut self, upstream: Upstream) -> OtpFilter {
        self.app = Some(AppClient::new(upstream, self.timeouts));
        self
    }

    /// How long mediated routes wait on the app (the default: [`UpstreamTimeouts::default`]).
    pub fn with_upstream_timeouts(mut self, timeouts: UpstreamTimeouts) -> OtpFilter {
        self.timeouts = timeouts;
        if let Some(app) = self.app.take() {
            self.app = Some(AppClient::new(app.upstream().clone(), timeouts));
        }
        self
    }

    /// The front new requests start on.
    pub fn front(&self) -> Front {
        self.front.current()
    }

    /// The cell holding the front: replace its front to reload.
    pub fn front_cell(&self) -> &FrontCell {
        &self.front
    }

    /// Serves `front` to the requests that start from now on; those under way finish on
    /// the one they started with.
    pub fn reload(&self, front: Front) {
        self.front.replace(front);
    }

    /// Answers the gate's endpoints and refuses protected paths without a valid token.
    /// `Ok(true)` means the response is written and the request must not be proxied.
    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut OtpCtx,
    ) -> ::pingora::Result<bool> {
        // Read once: the whole request is judged and answered by the same config.
        let front = ctx
            .front
            .get_or_insert_with(|| self.front.current())
            .clone();
        let front = &front;
        let target = match canonical_request(front, session) {
            Ok(target) => target,
            Err(refusal) => {
                let hsts = self.hsts_for(session).cloned();
                write_response(session, *refusal, hsts).await?;
                return Ok(true);
            }
        };
        let peer = peer_ip(session);
        match front.route(&session.req_header().method, &target) {
            Route::Endpoint(route) => {
                ctx.route = Some("endpoint");
                let response = match read_body(front, session, route).await {
                    Ok(body) => {
                        let (method, uri, headers) = request_parts(session);
                        let view = view(front, session, &method, &uri, &headers);
                        front.handle(route, &view, body).await
                    }
                    Err(refusal) => refusal,
                };
                let response = self.with_app_readiness(route, response).await;
                let hsts = self.hsts_for(session).cloned();
                write_response(session, response, hsts).await?;
                Ok(true)
            }
            Route::Mediated(route) => {
                ctx.route = Some("mediated");
                let response = match read_body(front, session, route).await {
                    Ok(body) => self.mediate(front, session, route, body).await,
                    Err(refusal) => refusal,
                };
                let hsts = self.hsts_for(session).cloned();
                write_response(session, response, hsts).await?;
                Ok(true)
            }
            Route::Upstream { rule } => match front
                .plan_upstream(
                    &session.req_header().method,
                    &target,
                    &session.req_header().headers,
                    peer,
                    rule,
                )
                .await
            {
                Ok(mut plan) => {
                    let headers = &session.req_header().headers;
                    front.plan_forwarded_proto(&mut plan, headers, peer, over_tls(session));
                    ctx.plan = Some(plan);
                    ctx.route = Some("upstream");
                    Ok(false)
                }
                Err(refusal) => {
                    let hsts = self.hsts_for(session).cloned();
                    write_response(session, *refusal, hsts).await?;
                    Ok(true)
                }
            },
        }
    }

    /// Strips the client's identity headers from the request to the app and injects the
    /// verified identity. Fails, so that nothing is forwarded, when
    /// [`request_filter`](Self::request_filter) did not run for the request.
    pub fn upstream_request_filter(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &OtpCtx,
    ) -> ::pingora::Result<()> {
        match &ctx.plan {
            Some(plan) => apply(plan, upstream_request),
            // request_filter did not run (a mistake in the caller's proxy): the gate never
            // judged this path or its token, so nothing of it is forwarded.
            None => Error::e_explain(
                ErrorType::InternalError,
                "OtpFilter::request_filter did not run for this request",
            ),
        }
    }

    /// A mediated route: the gate forwards the (possibly rewritten) request to the app
    /// itself, so that it can read the answer before the client does.
    async fn mediate(
        &self,
        front: &Front,
        session: &Session,
        route: EndpointRoute,
        body: Bytes,
    ) -> GateResponse {
        let (method, uri, mut headers) = request_parts(session);
        // What every request to the app gets: no identity the client wrote, and
        // X-Forwarded-For from the peer.
        let mut plan = front.strip_only_plan(&headers, peer_ip(session));
        front.plan_forwarded_proto(&mut plan, &headers, peer_ip(session), over_tls(session));
        plan.apply(&mut headers);
        let view = view(front, session, &method, &uri, &headers);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let (app, forward_method, forward_headers) =
            (self.app.as_ref(), method.clone(), headers.clone());
        let forward = move |body: Bytes, extra: Vec<(http::HeaderName, http::HeaderValue)>| async move {
            let app = app.ok_or(GateError::UpstreamUnavailable)?;
            app.send(forward_method, target, forward_headers, extra, body)
                .await
        };
        front.mediate(route, &view, body, forward).await
    }
}

/// Checks the request head and puts the canonical target in place of the one the
/// client sent, so that the app receives exactly the path that was judged.
fn canonical_request(
    front: &Front,
    session: &mut Session,
) -> Result<CanonicalTarget, Box<GateResponse>> {
    let request = session.req_header();
    // HTTP/1: an absolute-form target is reduced to its path. HTTP/2 always carries
    // scheme and authority with the path, and the authority stands in for `Host`: kept,
    // so that the app gets it as its `Host`.
    let keep_authority = request.version >= http::Version::HTTP_2;
    let (target, rewritten) = front.read_head(
        &request.method,
        &request.headers,
        request.raw_path(),
        &request.uri,
        keep_authority,
    )?;
    if let Some(uri) = rewritten {
        session.req_header_mut().set_uri(uri);
    }
    Ok(target)
}

/// Reads a body the gate needs, up to the limit; the refusal to answer otherwise.
async fn read_body(
    front: &Front,
    session: &mut Session,
    route: EndpointRoute,
) -> Result<Bytes, GateResponse> {
    let Some(mut reader) = front.body_reader(route, &session.req_header().headers)? else {
        return Ok(Bytes::new());
    };
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => reader.push(&chunk)?,
            Ok(None) => return Ok(reader.finish()),
            Err(_) => return Err(reader.unreadable()),
        }
    }
}

fn view<'a>(
    front: &Front,
    session: &Session,
    method: &'a http::Method,
    uri: &'a http::Uri,
    headers: &'a http::HeaderMap,
) -> RequestView<'a> {
    let peer = peer_ip(session);
    RequestView {
        method,
        path: uri.path(),
        headers,
        query: uri.query(),
        client_ip: front.client_ip(peer, headers),
        peer,
        authority: uri.authority().map(|a| a.as_str()),
    }
}

/// Whether `session` came over TLS: the gate's TLS listener.
pub(super) fn over_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(SocketAddr::ip)
}

fn request_parts(session: &Session) -> (http::Method, http::Uri, http::HeaderMap) {
    let request = session.req_header();
    (
        request.method.clone(),
        request.uri.clone(),
        request.headers.clone(),
    )
}

fn apply(plan: &UpstreamPlan, request: &mut RequestHeader) -> ::pingora::Result<()> {
    for name in &plan.strip {
        request.remove_header(name);
    }
    // Both of pingora's maps (values, and each name's spelling) grow once, not once per
    // header as they fill up; each name goes in as it is, neither copied nor parsed again.
    request.reserve_headers(plan.inject.len())?;
    for (name, value) in &plan.inject {
        request.insert_header_name(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Writes an answer of the gate's own, with its length.
/// `hsts`: the `Strict-Transport-Security` value, for an answer over TLS.
pub(super) async fn write_response(
    session: &mut Session,
    response: GateResponse,
    hsts: Option<http::HeaderValue>,
) -> ::pingora::Result<()> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 2))?;
    for (name, value) in &response.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    if let Some(hsts) = hsts {
        header.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts)?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, response.body.len())?;
    let empty = response.body.is_empty();
    session
        .write_response_header(Box::new(header), empty)
        .await?;
    if !empty {
        session
            .write_response_body(Some(response.body), true)
            .await?;
    }
    Ok(())
}

// The edge proxy's readiness probe asks about the app too.
impl OtpFilter {
    /// A readiness answer that the front found ready becomes 503 `not_ready` naming the
    /// upstream while the app accepts no TCP connection within the connect timeout. A
    /// filter without an upstream (in a proxy of your own) leaves every answer as it is.
    async fn with_app_readiness(
        &self,
        route: EndpointRoute,
        response: GateResponse,
    ) -> GateResponse {
        let Some(app) = &self.app else {
            return response;
        };
        if route.action != crate::http::Action::Ready || response.status != http::StatusCode::OK {
            return response;
        }
        match app_accepts(app.upstream(), self.timeouts.connect).await {
            Ok(()) => response,
            Err(detail) => {
                tracing::warn!(
                    reason = "upstream",
                    detail,
                    status = 503,
                    "a part the gate needs is unavailable"
                );
                route.dialect.error(&GateError::NotReady {
                    part: "upstream",
                    detail,
                })
            }
        }
    }
}

/// Whether the app accepts a TCP connection at its current address within `timeout`;
/// the connection is closed at once. Otherwise why not, for the log.
async fn app_accepts(upstream: &Upstream, timeout: std::time::Duration) -> Result<(), String> {
    upstream.start_resolving();
    let addr = upstream
        .current()
        .ok_or_else(|| format!("{upstream} has not resolved yet"))?;
    // The host name too, where there is one: the log names what the config says.
    let app = match upstream.host.parse::<IpAddr>() {
        Ok(_) => addr.to_string(),
        Err(_) => format!("{upstream} ({addr})"),
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_connection)) => Ok(()),
        Ok(Err(error)) => Err(format!("connecting to {app}: {error}")),
        Err(_) => Err(format!("no connection to {app} within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn wire(request: &RequestHeader) -> String {
        let mut buf = bytes::BytesMut::new();
        request.header_to_h1_wire(&mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    fn plan(strip: &[&'static str], inject: &[(&'static str, &'static str)]) -> UpstreamPlan {
        UpstreamPlan {
            strip: strip.iter().map(|n| HeaderName::from_static(n)).collect(),
            inject: inject
                .iter()
                .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
                .collect(),
            ..UpstreamPlan::default()
        }
    }

    #[test]
    fn the_app_gets_each_injected_header_once_in_place_of_the_clients_and_the_rest_as_sent() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.append_header("HOST", "app.example").unwrap();
        request.append_header("X-Auth-Subject", "forged").unwrap();
        request
            .append_header("x-auth-subject", "forged again")
            .unwrap();
        request
            .append_header("X-Forwarded-For", "10.9.9.9")
            .unwrap();
        request
            .append_header("X-Auth-Email", "forged@example.com")
            .unwrap();
        let plan = plan(
            &["x-auth-email"],
            &[
                ("x-request-id", "0123456789abcdef"),
                ("x-forwarded-for", "192.0.2.7"),
                ("connection", "keep-alive"),
                ("x-auth-subject", "user-1"),
            ],
        );
        apply(&plan, &mut request).unwrap();
        let sent = wire(&request);
        assert_eq!(
            sent,
            "HOST: app.example\r\n\
             x-auth-subject: user-1\r\n\
             x-forwarded-for: 192.0.2.7\r\n\
             x-request-id: 0123456789abcdef\r\n\
             Connection: keep-alive\r\n",
            "{sent}"
        );
        assert_eq!(request.headers.len(), 5);
        assert_eq!(request.headers.get_all("x-auth-subject").iter().count(), 1);
    }

    /// What the app reads, by lower-case name: every line pingora writes for `request`.
    fn lines(request: &RequestHeader) -> Vec<(String, String)> {
        wire(request)
            .lines()
            .map(|line| {
                let (name, value) = line.split_once(": ").unwrap();
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect()
    }

    fn through_the_front(
        trusted: &[&str],
        peer: &str,
        tls: bool,
        sent: &[(&'static str, &'static str)],
    ) -> Vec<(String, String)> {
        let settings = crate::http::HttpSettings {
            trusted_proxies: trusted.iter().map(|net| net.parse().unwrap()).collect(),
            ..crate::http::HttpSettings::default()
        };
        let front = Front::new(crate::Gate::builder().build().unwrap(), settings);
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in sent {
            request.append_header(*name, *value).unwrap();
        }
        let peer = Some(peer.parse().unwrap());
        let mut plan = front.strip_only_plan(&request.headers, peer);
        front.plan_forwarded_proto(&mut plan, &request.headers, peer, tls);
        apply(&plan, &mut request).unwrap();
        lines(&request)
    }

    fn values<'l>(lines: &'l [(String, String)], name: &str) -> Vec<&'l str> {
        lines
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn a_trusted_proxys_forwarding_lines_in_any_case_reach_the_app_as_one_line_each() {
        let sent = through_the_front(
            &["10.0.0.0/8"],
            "10.0.0.1",
            true,
            &[
                ("Host", "app.example"),
                ("X-Forwarded-Proto", "http"),
                ("x-forwarded-PROTO", "http"),
                ("X-Forwarded-For", "198.51.100.1"),
                ("x-FORWARDED-for", "198.51.100.2"),
                ("X_Forwarded_For", "6.6.6.6"),
                ("X-Request-Id", "0123456789abcdef"),
                ("x-request-ID", "fedcba9876543210"),
            ],
        );
        assert_eq!(values(&sent, "x-forwarded-proto"), ["https"], "{sent:?}");
        assert_eq!(
            values(&sent, "x-forwarded-for"),
            ["198.51.100.1, 198.51.100.2, 10.0.0.1"],
            "{sent:?}"
        );
        assert!(values(&sent, "x_forwarded_for").is_empty(), "{sent:?}");
        // Two ids from the proxy: neither is kept, and the app gets one fresh id.
        let ids = values(&sent, "x-request-id");
        assert_eq!(ids.len(), 1, "{sent:?}");
        assert!(!["0123456789abcdef", "fedcba9876543210"].contains(&ids[0]));
    }

    #[test]
    fn a_trusted_proxys_one_proto_value_is_kept_and_two_are_replaced() {
        let from_proxy = |sent: &[(&'static str, &'static str)]| {
            let sent = through_the_front(&["10.0.0.0/8"], "10.0.0.1", false, sent);
            values(&sent, "x-forwarded-proto")
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(from_proxy(&[("X-Forwarded-Proto", "https")]), ["https"]);
        // Two lines, whichever the client's: the gate saw plain HTTP, and says only that.
        assert_eq!(
            from_proxy(&[
                ("X-Forwarded-Proto", "https"),
                ("x-FORWARDED-proto", "http")
            ]),
            ["http"]
        );
        // Two values on one line, the same.
        assert_eq!(
            from_proxy(&[("X-Forwarded-Proto", "https, http")]),
            ["http"]
        );
        assert_eq!(from_proxy(&[]), ["http"]);
    }

    #[test]
    fn a_clients_forwarding_lines_never_reach_the_app() {
        let sent = through_the_front(
            &["10.0.0.0/8"],
            "203.0.113.9",
            false,
            &[
                ("Host", "app.example"),
                ("X-Forwarded-For", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
                ("X-Forwarded-Proto", "https"),
                ("X-Request-Id", "chosen-by-the-client"),
            ],
        );
        assert_eq!(
            values(&sent, "x-forwarded-for"),
            ["203.0.113.9"],
            "{sent:?}"
        );
        assert_eq!(values(&sent, "x-forwarded-proto"), ["http"], "{sent:?}");
        assert_ne!(
            values(&sent, "x-request-id"),
            ["chosen-by-the-client"],
            "{sent:?}"
        );
        assert_eq!(values(&sent, "x-request-id").len(), 1, "{sent:?}");
        assert_eq!(values(&sent, "host"), ["app.example"], "{sent:?}");
    }
}
