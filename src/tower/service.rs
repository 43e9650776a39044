//! [`OtpService`]: each request read once, then answered by the gate, passed through
//! it to the app and back (a mediated login), or handed to the app.

use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use super::future::{BoxResponse, ResponseFuture};
use super::{OtpBody, OtpLayer};
use crate::gate::GateError;
use crate::gate::Identity;
use crate::http::{
    CanonicalTarget, EndpointRoute, Front, GateResponse, MEDIATED_RESPONSE_LIMIT, RequestView,
    Route, remove_hop_by_hop,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service made by [`OtpLayer`]: the gate in front of `S`.
///
/// `S` receives its requests with an [`OtpBody`] and may answer with any body of
/// [`Bytes`]; the client gets an [`OtpBody`] of that.
#[derive(Clone, Debug)]
pub struct OtpService<S> {
    inner: S,
    front: Front,
}

impl<S> OtpService<S> {
    /// Puts the gate, `front`, in front of `inner`.
    pub fn new(inner: S, front: Front) -> Self {
        OtpService { inner, front }
    }

    /// A layer that wraps services in an `OtpService`; the same as [`OtpLayer::new`].
    pub fn layer(front: Front) -> OtpLayer {
        OtpLayer::new(front)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The front this service asks.
    pub fn front(&self) -> &Front {
        &self.front
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
    S: Service<Request<OtpBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
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
        let front = self.front.clone();
        // The clone that was polled ready goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (mut parts, body) = request.into_parts();
        // One reading of the target, and the app gets exactly that reading.
        let target = match canonical_request(&front, &mut parts) {
            Ok(target) => target,
            Err(refusal) => {
                let response = written(*refusal);
                return ResponseFuture::new(Box::pin(async move { Ok(response) }));
            }
        };
        let route = front.route(&parts.method, &target);
        // An identity only ever comes from a token this gate verified.
        parts.extensions.remove::<Identity>();
        // Each kind of route boxes only its own future: requests bound for the app, nearly
        // all of them, do not pay for allocating and moving the endpoints' larger state.
        let future: BoxResponse<ResBody, S::Error> = match route {
            Route::Upstream { rule } => Box::pin(to_app(front, inner, parts, body, target, rule)),
            Route::Endpoint(route) => Box::pin(async move {
                let response = match read_body(&front, route, &parts.headers, body).await {
                    Ok(body) => front.handle(route, &view(&front, &parts), body).await,
                    Err(refusal) => refusal,
                };
                Ok(written(response))
            }),
            Route::Mediated(route) => Box::pin(mediate(front, inner, parts, body, route)),
        };
        ResponseFuture::new(future)
    }
}

/// Checks the request head and puts the canonical target in place of the one the
/// client sent; the refusal to answer otherwise.
fn canonical_request(
    front: &Front,
    parts: &mut http::request::Parts,
) -> Result<CanonicalTarget, Box<GateResponse>> {
    // Authority-form (`CONNECT host:443`) has no path: the empty target is refused.
    let raw = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let (target, rewritten) = front.read_head(
        &parts.method,
        &parts.headers,
        raw.as_bytes(),
        &parts.uri,
        parts.version >= http::Version::HTTP_2,
    )?;
    if let Some(uri) = rewritten {
        parts.uri = uri;
    }
    Ok(target)
}

/// A request bound for the app: identity headers stripped, a verified identity injected,
/// or a protected path refused.
async fn to_app<S, ReqBody, ResBody>(
    front: Front,
    mut inner: S,
    mut parts: http::request::Parts,
    body: ReqBody,
    target: CanonicalTarget,
    rule: Option<usize>,
) -> Result<Response<OtpBody<ResBody>>, S::Error>
where
    S: Service<Request<OtpBody<ReqBody>>, Response = Response<ResBody>>,
{
    let peer = peer_ip(&parts.extensions);
    let plan = front
        .plan_upstream(&parts.method, &target, &parts.headers, peer, rule)
        .await;
    match plan {
        Ok(plan) => {
            if let Some(identity) = plan.apply_into(&mut parts.headers) {
                parts.extensions.insert(identity);
            }
            let response = inner
                .call(Request::from_parts(parts, OtpBody::original(body)))
                .await?;
            Ok(response.map(OtpBody::original))
        }
        Err(refusal) => Ok(written(*refusal)),
    }
}

/// A mediated route: the gate forwards the (possibly rewritten) request to the app and
/// reads its answer before the client does.
async fn mediate<S, ReqBody, ResBody>(
    front: Front,
    mut inner: S,
    mut parts: http::request::Parts,
    body: ReqBody,
    route: EndpointRoute,
) -> Result<Response<OtpBody<ResBody>>, S::Error>
where
    S: Service<Request<OtpBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    front
        .strip_only_plan(&parts.headers, peer_ip(&parts.extensions))
        .apply(&mut parts.headers);
    let body = match read_body(&front, route, &parts.headers, body).await {
        Ok(body) => body,
        Err(refusal) => return Ok(written(refusal)),
    };
    let view_parts = ViewParts::of(&front, &parts);
    let forward = move |body: Bytes, extra: Vec<(HeaderName, HeaderValue)>| async move {
        let mut parts = parts;
        // The body is sent whole, with its own framing.
        remove_hop_by_hop(&mut parts.headers);
        for (name, value) in extra {
            parts.headers.insert(name, value);
        }
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let response = inner
            .call(Request::from_parts(parts, OtpBody::written(body)))
            .await
            .map_err(|_| GateError::UpstreamUnavailable)?;
        buffered(response).await
    };
    let response = front
        .mediate(route, &view_parts.view(), body, forward)
        .await;
    Ok(written(response))
}

/// The app's answer to a mediated request, read whole (up to
/// [`MEDIATED_RESPONSE_LIMIT`]).
async fn buffered<B>(response: Response<B>) -> Result<GateResponse, GateError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let body = Limited::new(body, MEDIATED_RESPONSE_LIMIT)
        .collect()
        .await
        .map_err(|_| GateError::UpstreamUnavailable)?
        .to_bytes();
    // Framing is recomputed for the buffered body.
    remove_hop_by_hop(&mut parts.headers);
    Ok(GateResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Reads a body the gate needs, up to the limit; the refusal to answer otherwise.
async fn read_body<B>(
    front: &Front,
    route: EndpointRoute,
    headers: &http::HeaderMap,
    body: B,
) -> Result<Bytes, GateResponse>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Some(mut reader) = front.body_reader(route, headers)? else {
        return Ok(Bytes::new());
    };
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    reader.push(&data)?;
                }
            }
            Err(_) => return Err(reader.unreadable()),
        }
    }
    Ok(reader.finish())
}

fn view<'a>(front: &Front, parts: &'a http::request::Parts) -> RequestView<'a> {
    RequestView {
        method: &parts.method,
        path: parts.uri.path(),
        headers: &parts.headers,
        query: parts.uri.query(),
        client_ip: front.client_ip(peer_ip(&parts.extensions), &parts.headers),
        peer: peer_ip(&parts.extensions),
        authority: parts.uri.authority().map(|a| a.as_str()),
    }
}

/// Owned copies of what a view needs, for when the request itself moves on to the app.
struct ViewParts {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    client_ip: Option<IpAddr>,
    peer: Option<IpAddr>,
}

impl ViewParts {
    fn of(front: &Front, parts: &http::request::Parts) -> ViewParts {
        ViewParts {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            client_ip: front.client_ip(peer_ip(&parts.extensions), &parts.headers),
            peer: peer_ip(&parts.extensions),
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: self.uri.path(),
            headers: &self.headers,
            query: self.uri.query(),
            client_ip: self.client_ip,
            peer: self.peer,
            authority: self.uri.authority().map(|a| a.as_str()),
        }
    }
}

/// An answer the gate wrote, as a response of the service.
fn written<B>(response: GateResponse) -> Response<OtpBody<B>> {
    let mut out = Response::new(OtpBody::written(response.body));
    *out.status_mut() = response.status;
    *out.headers_mut() = response.headers;
    out
}
