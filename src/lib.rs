#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![doc = include_str!("../README.md")]

pub mod config;
pub mod delivery;
pub mod directory;
pub mod gate;
pub mod http;
pub mod identifier;
pub mod metrics;
pub mod otp;
#[cfg(feature = "proxy")]
pub mod pingora;
pub mod store;
pub mod token;
pub mod tower;
mod util;

pub use gate::GateError;
pub use gate::{
    BuildError, DEFAULT_REVOCATION_POLL, Gate, GateBuilder, Identity, IpLimits, RevocationFallback,
    SendOptions, SendOutcome, SendRequest, Session, Tenant, VerifyRequest,
};
