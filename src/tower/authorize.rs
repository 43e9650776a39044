//! [`OtpAuthorizer`]: the gate's token check for tower-http's
//! [`AsyncRequireAuthorizationLayer`](tower_http::auth::AsyncRequireAuthorizationLayer).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_http::auth::AsyncAuthorizeRequest;

use crate::gate::GateError;
use crate::gate::Identity;
use crate::http::{Dialect, Front};

/// Lets through only requests with a token this gate verified, for tower-http's
/// [`AsyncRequireAuthorizationLayer`](tower_http::auth::AsyncRequireAuthorizationLayer).
///
/// The token is read the way the gate reads it everywhere: `Authorization: Bearer`, else
/// the session cookie. A request with a valid, unrevoked token passes with its
/// [`Identity`] in the extensions (the axum extractor finds it there). Every other
/// request is answered without reaching the service:
///
/// - no token, or one that is forged, expired, revoked or for another audience: the
///   gate's `401 unauthorized` JSON, with `WWW-Authenticate: Bearer`;
/// - more than one `Authorization` header: the same 401, since the gate and the app
///   could each read a different one;
/// - the store cannot rule out a revocation and the gate is built with
///   [`RevocationFallback::Deny`](crate::RevocationFallback::Deny): the `503` the gate
///   answers on a protected path.
///
/// An `Identity` extension already on the request is removed first: an identity only
/// ever comes from a token this gate verified.
///
/// It only authorizes: it serves no sign-in endpoints and neither strips nor sets
/// identity headers. Put [`OtpLayer`](super::OtpLayer) around the app for those, and the
/// authorizer on the routes that need a signed-in caller:
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use otpgate::http::{Front, HttpSettings};
/// use otpgate::tower::{OtpAuthorizer, OtpLayer};
/// use otpgate::{Gate, Identity};
/// use tower_http::auth::AsyncRequireAuthorizationLayer;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let front = Front::new(Gate::builder().build()?, HttpSettings::default());
/// let app = Router::new()
///     .route(
///         "/me",
///         get(|identity: Identity| async move { identity.subject().to_owned() })
///             .route_layer(AsyncRequireAuthorizationLayer::new(OtpAuthorizer::new(
///                 front.clone(),
///             ))),
///     )
///     .route("/", get(|| async { "open to all" }))
///     // `/auth/otp/send` and `/auth/otp/verify`, and no forged identity headers.
///     .layer(OtpLayer::new(front));
/// # let _: Router = app;
/// # Ok(()) }
/// ```
///
/// `ResBody` is the response body of the service it guards (`axum::body::Body` for an
/// axum app); it is inferred.
pub struct OtpAuthorizer<ResBody> {
    front: Front,
    // `fn() -> ResBody`: the authorizer makes bodies, it holds none (Send and Sync alike).
    body: PhantomData<fn() -> ResBody>,
}

impl<ResBody> OtpAuthorizer<ResBody> {
    /// An authorizer asking `front` (its engine, and its session cookie's name).
    pub fn new(front: Front) -> Self {
        OtpAuthorizer {
            front,
            body: PhantomData,
        }
    }

    /// The front it asks.
    pub fn front(&self) -> &Front {
        &self.front
    }
}

impl<ResBody> Clone for OtpAuthorizer<ResBody> {
    fn clone(&self) -> Self {
        OtpAuthorizer {
            front: self.front.clone(),
            body: PhantomData,
        }
    }
}

impl<ResBody> std::fmt::Debug for OtpAuthorizer<ResBody> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpAuthorizer")
            .field("front", &self.front)
            .finish()
    }
}

impl<B, ResBody> AsyncAuthorizeRequest<B> for OtpAuthorizer<ResBody>
where
    B: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type RequestBody = B;
    type ResponseBody = ResBody;
    type Future = AuthorizeFuture<B, ResBody>;

    fn authorize(&mut self, request: Request<B>) -> Self::Future {
        AuthorizeFuture {
            future: Box::pin(authorize(self.front.clone(), request)),
        }
    }
}

async fn authorize<B, ResBody: From<Bytes>>(
    front: Front,
    mut request: Request<B>,
) -> Result<Request<B>, Response<ResBody>> {
    // An identity only ever comes from a token this gate verified.
    request.extensions_mut().remove::<Identity>();
    let refuse = |error: &GateError| Dialect::Generic.error(error).into_response();
    // The gate would read one of them, the app perhaps another.
    if request
        .headers()
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(refuse(&GateError::Unauthorized));
    }
    let Some(token) = front.token_in(request.headers()) else {
        return Err(refuse(&GateError::Unauthorized));
    };
    match front.gate().authenticate(token).await {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            Ok(request)
        }
        // The store could not rule out a revocation and the fallback is "deny": the
        // request waits for the store rather than guessing.
        Err(error @ GateError::StoreUnavailable(_)) => Err(refuse(&error)),
        Err(_) => Err(refuse(&GateError::Unauthorized)),
    }
}

type BoxAuthorize<B, ResBody> =
    Pin<Box<dyn Future<Output = Result<Request<B>, Response<ResBody>>> + Send>>;

/// The future of [`OtpAuthorizer`]'s check: the request to pass on, or the answer to give
/// instead.
pub struct AuthorizeFuture<B, ResBody> {
    future: BoxAuthorize<B, ResBody>,
}

impl<B, ResBody> Future for AuthorizeFuture<B, ResBody> {
    type Output = Result<Request<B>, Response<ResBody>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

impl<B, ResBody> std::fmt::Debug for AuthorizeFuture<B, ResBody> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeFuture").finish_non_exhaustive()
    }
}
