//! The engine: send, verify and authenticate, tying the core, the store, the directory,
//! delivery and tokens together. It knows no HTTP: the front (`otpgate::http::Front`)
//! and the adapters call it.
//!
//! One sign-in, end to end, with a sender that hands codes to the example instead of a
//! mailbox:
//!
//! ```
//! use std::sync::Arc;
//! use otpgate::delivery::{DeliveryError, Message, Sender, Senders};
//! use otpgate::identifier::Identifier;
//! use otpgate::{Gate, SendRequest, VerifyRequest};
//!
//! struct Inbox(tokio::sync::mpsc::UnboundedSender<Message>);
//!
//! #[async_trait::async_trait]
//! impl Sender for Inbox {
//!     async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
//!         self.0.send(message.clone()).map_err(|e| DeliveryError::Failed(e.to_string()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (inbox, mut messages) = tokio::sync::mpsc::unbounded_channel();
//! let inbox: Arc<dyn Sender> = Arc::new(Inbox(inbox));
//! let gate = Gate::builder()
//!     .senders(Senders { email: Some(inbox.clone()), sms: Some(inbox), ..Senders::default() })
//!     .build()?;
//!
//! let alice = Identifier::email("alice@example.com")?;
//! gate.send(SendRequest { tenant: None, identifier: alice.clone(), client_ip: None, locale: None })
//!     .await?;
//! let code = messages.recv().await.expect("a message").code;
//!
//! let subject = gate
//!     .verify(VerifyRequest { tenant: None, identifier: alice, code: code.expose(), client_ip: None })
//!     .await?;
//! let session = gate.start_session(&subject)?;
//!
//! let caller = gate.authenticate(&session.access.token).await?;
//! assert_eq!(caller.email(), Some("alice@example.com"));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use crate::delivery::{DeliveryStats, Outbox, Templates};
use crate::directory::Directory;
use crate::identifier::Channel;
use crate::otp::{Clock, CodeHasher, CodePolicy};
use crate::store::Store;
use crate::token::Tokens;

pub mod audit;
mod builder;
mod codes;
mod error;
mod guard;
mod revocations;
mod seal;
mod second_factor;
mod sessions;
mod types;

#[cfg(test)]
mod tests;

pub use builder::{BuildError, GateBuilder, RevocationFallback, validate_policy};
pub use error::GateError;
pub use guard::{
    Challenge, ChallengeMode, ChallengePolicy, DestinationRefusal, Destinations, EmailDomains,
    SmsGuard, ThrottleReason, payload_for as challenge_payload, solve as solve_challenge,
};
pub use revocations::DEFAULT_REVOCATION_POLL;
pub use second_factor::PendingSecondFactor;
pub use types::{
    Identity, IpLimits, SendOptions, SendOutcome, SendRequest, Session, Tenant, VerifyRequest,
};

struct Inner {
    policy: CodePolicy,
    hasher: CodeHasher,
    store: Arc<dyn Store>,
    tokens: Tokens,
    outbox: Outbox,
    templates: Templates,
    directory: Arc<dyn Directory>,
    tenants: HashMap<String, Tenant>,
    default_tenant: String,
    ip_limits: IpLimits,
    clock: Arc<dyn Clock>,
    revocation_fallback: RevocationFallback,
    revocations: revocations::Revocations,
    sms_guard: Arc<SmsGuard>,
    guard_alert: guard::Alert,
}

/// The engine. Cheap to clone; all clones share one state. See the [module docs](self)
/// for a whole sign-in.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.inner.policy)
            .field("tokens", &self.inner.tokens)
            .field("tenants", &self.inner.tenants)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A builder with development defaults.
    pub fn builder() -> GateBuilder {
        GateBuilder::default()
    }

    /// The channels tenant `id` (the default one when `None`) offers; `None` when there
    /// is no such tenant.
    pub fn tenant_channels(&self, id: Option<&str>) -> Option<Vec<Channel>> {
        self.inner
            .tenants
            .get(id.unwrap_or(&self.inner.default_tenant))
            .map(|tenant| tenant.channels.clone())
    }

    /// The engine's clock's time now.
    pub fn now(&self) -> crate::otp::Timestamp {
        self.inner.clock.now()
    }

    /// The token minter and verifier.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The OTP policy.
    pub fn policy(&self) -> &CodePolicy {
        &self.inner.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Messages in the outbox now: queued, or being delivered.
    pub fn outbox_depth(&self) -> usize {
        self.inner.outbox.depth()
    }

    /// Delivery counters since start: sent, failed, retried, failed over.
    pub fn delivery_stats(&self) -> DeliveryStats {
        self.inner.outbox.stats()
    }

    /// Messages for unknown accounts, queued like any other and dropped unsent by the
    /// outbox worker, since start.
    pub fn decoys_dropped(&self) -> u64 {
        self.inner.outbox.decoys_dropped()
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.inner.directory
    }

    /// The tenant of requests that name none.
    pub fn default_tenant(&self) -> &str {
        &self.inner.default_tenant
    }

    /// Whether the gate can serve sign-ins now: the store answers ([`Store::ping`]) and
    /// so does the directory ([`Directory::ping`]). Both are asked on every call, at
    /// once; nothing is cached, so a part that comes back is seen at the next call.
    /// Otherwise [`GateError::NotReady`] names the store, else the directory.
    pub async fn readiness(&self) -> Result<(), GateError> {
        let (store, directory) = tokio::join!(self.inner.store.ping(), self.inner.directory.ping());
        if let Err(error) = store {
            return Err(GateError::NotReady {
                part: "store",
                detail: error.to_string(),
            });
        }
        directory.map_err(|error| GateError::NotReady {
            part: "directory",
            detail: error.to_string(),
        })
    }

    /// The tenant `id` (the default one when `None`), if it offers `channel`.
    fn tenant(&self, id: Option<&str>, channel: Channel) -> Result<&Tenant, GateError> {
        let tenant = self
            .inner
            .tenants
            .get(id.unwrap_or(&self.inner.default_tenant))
            .ok_or(GateError::UnknownTenant)?;
        if !tenant.channels.contains(&channel) {
            return Err(GateError::ChannelDisabled(channel));
        }
        Ok(tenant)
    }
}
