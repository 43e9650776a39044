//! The drop-in tower middleware: [`OtpLayer`] wraps any tower service (an axum
//! `Router`, a hyper service) with OTP sign-in.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use http::header::{AUTHORIZATION, COOKIE};
//! use otpgate::{Gate, Identity, tower::OtpLayer};
//! use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let gate = Gate::builder().build()?;
//!
//! let app = Router::new()
//!     .route("/api/me", get(|identity: Identity| async move { identity.subject().to_owned() }))
//!     .layer(OtpLayer::with_defaults(gate).protect("/api/"))
//!     // Credentials are marked sensitive, so that no trace layer ever prints them.
//!     .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION, COOKIE]));
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
//! A whole deployment's settings come from a [`Front`](crate::http::Front), e.g. one
//! built from a config file: `OtpLayer::new(Config::from_file(path)?.build()?)`.
//!
//! For routes that only need a signed-in caller, [`OtpAuthorizer`] plugs the same
//! token check into tower-http's
//! [`AsyncRequireAuthorizationLayer`](tower_http::auth::AsyncRequireAuthorizationLayer).
//!
//! [`Identity`]: crate::Identity

mod authorize;
mod body;
#[cfg(feature = "axum")]
mod extract;
mod future;
mod layer;
mod service;

pub use authorize::{AuthorizeFuture, OtpAuthorizer};
pub use body::OtpBody;
pub use future::ResponseFuture;
pub use layer::OtpLayer;
pub use service::OtpService;
