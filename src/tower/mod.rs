//! The drop-in tower middleware: [`OtpLayer`] wraps any tower service (an axum
//! `Router`, a hyper service) with OTP sign-in.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use otpgate::{Gate, Identity, tower::OtpLayer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut http = otpgate::http::HttpSettings::default();
//! http.protect.push("/api/".into());
//! let gate = Gate::builder().http(http).build()?;
//!
//! let app = Router::new()
//!     .route("/api/me", get(|identity: Identity| async move { identity.subject().to_owned() }))
//!     .layer(OtpLayer::new(gate));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // ConnectInfo gives the layer the client address for per-IP limits.
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! Requests to the gate's endpoints (`/auth/otp/send`, `/auth/otp/verify`, the JWKS)
//! are answered by the layer. Every other request has its identity headers stripped;
//! one carrying a valid token gets the identity injected (headers, and an [`Identity`]
//! request extension); one to a protected prefix without a valid token is answered 401.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::engine::Identity;
use crate::error::GateError;
use crate::http::{CanonicalTarget, EndpointRoute, Front, GateResponse, RequestView, Route};
use http::header::{HeaderName, HeaderValue};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds OTP sign-in in front of a service. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct OtpLayer {
    front: Front,
}

impl OtpLayer {
    /// A layer driven by `front`: a [`Front`], or a [`crate::Gate`] with the default
    /// HTTP settings.
    pub fn new(front: impl Into<Front>) -> OtpLayer {
        OtpLayer {
            front: front.into(),
        }
    }
}

impl<S> Layer<S> for OtpLayer {
    type Service = OtpService<S>;

    fn layer(&self, inner: S) -> OtpService<S> {
        OtpService {
            inner,
            front: self.front.clone(),
        }
    }
}

/// The service made by [`OtpLayer`].
#[derive(Clone, Debug)]
pub struct OtpService<S> {
    inner: S,
    front: Front,
}

impl<S> OtpService<S> {
    /// Wraps `inner` directly, without a layer.
    pub fn new(inner: S, front: impl Into<Front>) -> Self {
        OtpService {
            inner,
            front: front.into(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The client address a server put in the request's extensions: axum's
/// `ConnectInfo<SocketAddr>`, or a plain `SocketAddr`.
fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OtpService<S>
where
    S: Service<Request<OtpRequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<OtpBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let gate = self.front.clone();
        // The clone that was polled ready goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (mut parts, body) = request.into_parts();
        // One reading of the target, and the app gets exactly that reading.
        let target = match canonical_request(&gate, &mut parts) {
            Ok(target) => target,
            Err(refusal) => {
                let response = gate_response(*refusal);
                return ResponseFuture {
                    future: Box::pin(async move { Ok(response) }),
                };
            }
        };
        let route = gate.route(&target);
        // An identity only ever comes from a token this gate verified.
        parts.extensions.remove::<Identity>();
        // Each kind of route boxes only its own future: requests bound for the app, nearly
        // all of them, do not pay for allocating and moving the endpoints' larger state.
        let future: BoxResponse<ResBody, S::Error> = match route {
            Route::Upstream { protected } => Box::pin(to_app(gate, inner, parts, body, protected)),
            Route::Endpoint(route) => Box::pin(async move {
                let response = match read_body(&gate, route, &parts.headers, body).await {
                    Ok(body) => gate.handle(route, &view(&gate, &parts), body).await,
                    Err(refusal) => refusal,
                };
                Ok(gate_response(response))
            }),
            Route::Mediated(route) => Box::pin(mediate(gate, inner, parts, body, route)),
        };
        ResponseFuture { future }
    }
}

/// Checks the request head and puts the canonical target in place of the one the
/// client sent; the refusal to answer otherwise.
fn canonical_request(
    gate: &Front,
    parts: &mut http::request::Parts,
) -> Result<CanonicalTarget, Box<GateResponse>> {
    gate.check_head(&parts.headers)?;
    // Authority-form (`CONNECT host:443`) has no path: the empty target is refused.
    let raw = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let target = gate.canonical_target(&parts.method, raw.as_bytes())?;
    // HTTP/1 absolute-form is reduced to its path; HTTP/2 always carries scheme and
    // authority, which stay.
    let keep_authority = parts.version >= http::Version::HTTP_2;
    if !target.is_spelled(raw.as_bytes()) || (!keep_authority && parts.uri.authority().is_some()) {
        let origin_form = target.to_origin_form();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        if !keep_authority {
            uri.scheme = None;
            uri.authority = None;
        }
        fn invalid<E>(_: E) -> Box<GateResponse> {
            Box::new(
                crate::http::Dialect::Generic.error(&GateError::InvalidRequest(
                    "the request target is invalid".into(),
                )),
            )
        }
        uri.path_and_query = Some(http::uri::PathAndQuery::try_from(origin_form).map_err(invalid)?);
        parts.uri = http::Uri::from_parts(uri).map_err(invalid)?;
    }
    Ok(target)
}

/// A request bound for the app: identity headers stripped, a verified identity injected,
/// or a protected path refused.
async fn to_app<S, ReqBody, ResBody>(
    gate: Front,
    mut inner: S,
    mut parts: http::request::Parts,
    body: ReqBody,
    protected: bool,
) -> Result<Response<OtpBody<ResBody>>, S::Error>
where
    S: Service<Request<OtpRequestBody<ReqBody>>, Response = Response<ResBody>>,
{
    let peer = peer_ip(&parts.extensions);
    match gate.plan_upstream(&parts.headers, peer, protected).await {
        Ok(plan) => {
            plan.apply(&mut parts.headers);
            if let Some(identity) = plan.identity {
                parts.extensions.insert(identity);
            }
            let response = inner
                .call(Request::from_parts(parts, OtpRequestBody::original(body)))
                .await?;
            Ok(response.map(OtpBody::inner))
        }
        Err(refusal) => Ok(gate_response(*refusal)),
    }
}

/// A mediated route: the gate forwards the (possibly rewritten) request to the app and
/// reads its answer before the client does.
async fn mediate<S, ReqBody, ResBody>(
    gate: Front,
    mut inner: S,
    mut parts: http::request::Parts,
    body: ReqBody,
    route: EndpointRoute,
) -> Result<Response<OtpBody<ResBody>>, S::Error>
where
    S: Service<Request<OtpRequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    gate.strip_only_plan(&parts.headers, peer_ip(&parts.extensions))
        .apply(&mut parts.headers);
    let body = match read_body(&gate, route, &parts.headers, body).await {
        Ok(body) => body,
        Err(refusal) => return Ok(gate_response(refusal)),
    };
    let view_parts = ViewParts::of(&gate, &parts);
    let forward = move |body: Bytes, extra: Vec<(HeaderName, HeaderValue)>| async move {
        let mut parts = parts;
        for (name, value) in extra {
            parts.headers.insert(name, value);
        }
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let response = inner
            .call(Request::from_parts(parts, OtpRequestBody::full(body)))
            .await
            .map_err(|_| GateError::UpstreamUnavailable)?;
        buffered(response).await
    };
    let response = gate.mediate(route, &view_parts.view(), body, forward).await;
    Ok(gate_response(response))
}

async fn buffered<B>(response: Response<B>) -> Result<GateResponse, GateError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let body = Limited::new(body, crate::http::MEDIATED_RESPONSE_LIMIT)
        .collect()
        .await
        .map_err(|_| GateError::UpstreamUnavailable)?
        .to_bytes();
    // Framing is recomputed for the buffered body.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    Ok(GateResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Reads a body the gate needs, up to the limit; the refusal to answer otherwise.
async fn read_body<B>(
    gate: &Front,
    route: EndpointRoute,
    headers: &http::HeaderMap,
    body: B,
) -> Result<Bytes, GateResponse>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Some(mut reader) = gate.body_reader(route, headers)? else {
        return Ok(Bytes::new());
    };
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    reader.push(data.chunk())?;
                }
            }
            Err(_) => return Err(reader.unreadable()),
        }
    }
    Ok(reader.finish())
}

fn view<'a>(gate: &Front, parts: &'a http::request::Parts) -> RequestView<'a> {
    RequestView {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        query: parts.uri.query(),
        client_ip: gate.client_ip(peer_ip(&parts.extensions), &parts.headers),
    }
}

/// Owned copies of what a view needs, for when the request itself moves on to the app.
struct ViewParts {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    client_ip: Option<std::net::IpAddr>,
}

impl ViewParts {
    fn of(gate: &Front, parts: &http::request::Parts) -> ViewParts {
        ViewParts {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            client_ip: gate.client_ip(peer_ip(&parts.extensions), &parts.headers),
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: self.uri.path(),
            headers: &self.headers,
            query: self.uri.query(),
            client_ip: self.client_ip,
        }
    }
}

pin_project! {
    /// The request body the wrapped service receives: the client's, untouched, or one the
    /// gate rewrote (the baanx login without its `otpCode`).
    pub struct OtpRequestBody<B> {
        #[pin]
        kind: RequestBodyKind<B>,
    }
}

pin_project! {
    #[project = RequestBodyKindProj]
    enum RequestBodyKind<B> {
        Original { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> OtpRequestBody<B> {
    fn original(body: B) -> Self {
        OtpRequestBody {
            kind: RequestBodyKind::Original { body },
        }
    }

    fn full(data: Bytes) -> Self {
        OtpRequestBody {
            kind: RequestBodyKind::Full { data: Some(data) },
        }
    }
}

impl<B> Body for OtpRequestBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            RequestBodyKindProj::Original { body } => body.poll_frame(cx),
            RequestBodyKindProj::Full { data } => Poll::Ready(
                data.take()
                    .filter(Buf::has_remaining)
                    .map(|d| Ok(Frame::data(d))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestBodyKind::Original { body } => body.is_end_stream(),
            RequestBodyKind::Full { data } => data.as_ref().is_none_or(|d| d.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestBodyKind::Original { body } => body.size_hint(),
            RequestBodyKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

type BoxResponse<B, E> = Pin<Box<dyn Future<Output = Result<Response<OtpBody<B>>, E>> + Send>>;

/// The future of [`OtpService`].
pub struct ResponseFuture<B, E> {
    future: BoxResponse<B, E>,
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<OtpBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn gate_response<B>(response: GateResponse) -> Response<OtpBody<B>> {
    let mut out = Response::new(OtpBody::gate(response.body));
    *out.status_mut() = response.status;
    *out.headers_mut() = response.headers;
    out
}

pin_project! {
    /// The response body of [`OtpService`]: the app's body, or one written by the gate.
    pub struct OtpBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    enum BodyKind<B> {
        Inner { #[pin] body: B },
        Gate { data: Option<Bytes> },
    }
}

impl<B> OtpBody<B> {
    fn inner(body: B) -> Self {
        OtpBody {
            kind: BodyKind::Inner { body },
        }
    }

    fn gate(data: Bytes) -> Self {
        OtpBody {
            kind: BodyKind::Gate { data: Some(data) },
        }
    }
}

impl<B> Body for OtpBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            BodyKindProj::Inner { body } => body.poll_frame(cx),
            BodyKindProj::Gate { data } => Poll::Ready(
                data.take()
                    .filter(Buf::has_remaining)
                    .map(|d| Ok(Frame::data(d))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Gate { data } => data.as_ref().is_none_or(|d| d.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Gate { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::request::Parts;

    use super::Infallible;
    use crate::engine::Identity;
    use crate::error::GateError;
    use crate::http::Dialect;

    /// The caller's verified identity, put in place by [`super::OtpLayer`]. Without one
    /// the handler is not called and the client gets 401.
    impl<S: Send + Sync> FromRequestParts<S> for Identity {
        type Rejection = axum::response::Response;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
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
}
