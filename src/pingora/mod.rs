//! The edge proxy: otpgate on pingora, in front of any HTTP app.
//!
//! [`OtpFilter`] holds the gate's steps as functions that any
//! [`ProxyHttp`](::pingora::proxy::ProxyHttp) can call (see `examples/pingora_filter.rs`);
//! [`OtpProxy`] is the ready proxy that the `otpgate run` command [`serve`]s, behind
//! [`GuardedApp`]'s connection bounds. Both only translate between pingora's session and
//! the framework-neutral [`crate::http`] front: every decision is the tower layer's too.
//!
//! Request and response bodies of proxied requests stream through unbuffered, and
//! upgrades (websockets) pass; only the gate's own endpoints read a body, up to the limit.
//! The one request the gate sends the app itself, a mediated login whose answer it must
//! read, goes through one client per filter under the [`UpstreamTimeouts`].

mod app_client;
mod balance;
mod filter;
mod guard;
mod limits;
mod proxy;
mod serve;
mod settings;
mod tls;
mod upstream_tls;

pub use balance::{Balance, InFlight, UpstreamPool};
pub use filter::{FrontCell, OtpCtx, OtpFilter};
pub use guard::{GuardedApp, HeadDeadline};
pub use limits::ConnectionLimits;
pub use proxy::{OtpProxy, ProxyCtx};
pub use serve::{Reloader, check_listen, serve, serve_reloadable, server_conf};
pub use settings::{ProxySettings, Upstream, UpstreamTimeouts};
pub use tls::{Certificate, CertificateError, Certificates, TlsListener, install_crypto_provider};
pub use upstream_tls::{UpstreamTls, UpstreamTlsError};
