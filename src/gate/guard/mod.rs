//! The send guard: what stops SMS pumping (toll fraud) and send floods that the per-IP
//! and per-destination limits cannot, because they spread over thousands of numbers and
//! addresses. It runs inside [`Gate::send`](super::Gate::send), so every dialect and both
//! forms get it, and keeps all its state in the store, so gates sharing Redis share one
//! view.
//!
//! - [`Destinations`] (per tenant): destinations that are never a person's, refused before
//!   anything is counted: SMS countries a tenant does not serve, number types no person
//!   receives codes on (premium rate, shared cost, ...), email domains off its list.
//! - [`SmsGuard`] (per gate): sends per country calling code and per number prefix in
//!   sliding windows, a global SMS budget per hour and per day (messages and estimated
//!   cost), and the pumping signature: a prefix whose codes are sent but not verified is
//!   throttled for a cool-down.
//! - [`ChallengePolicy`] (per tenant): a proof-of-work challenge a send must carry, which
//!   makes every message cost the sender CPU time.

use super::{Gate, GateError, Tenant};
use crate::identifier::Identifier;

mod alert;
mod challenge;
mod destinations;
mod velocity;

pub(super) use alert::Alert;
pub(super) use challenge::ChallengeCheck;
pub use challenge::{Challenge, ChallengeMode, ChallengePolicy, payload_for, solve};
pub use destinations::{DestinationRefusal, Destinations, EmailDomains};
pub use velocity::{SmsGuard, ThrottleReason};

impl Gate {
    /// Refuses a send to a destination the tenant does not serve, or without the solved
    /// challenge the tenant requires. Runs before the code record is touched, so a refused
    /// send starts no cooldown and sends nothing. The
    /// [`SmsGuard`]'s counts ride on the send's first store round trip instead (see
    /// `Gate::open`), and its verdict comes before the code record is touched too.
    pub(super) async fn admit_send(
        &self,
        tenant: &Tenant,
        identifier: &Identifier,
        challenge: ChallengeCheck<'_>,
    ) -> Result<(), GateError> {
        tenant.destinations.check(identifier)?;
        // After the destination check: a refused destination spends no solved challenge.
        self.admit_challenge(&tenant.challenge, challenge).await?;
        Ok(())
    }

    /// Tells the guard a code sent to `identifier` was verified: verified sends are what
    /// tells a prefix of real people from a pumped one.
    pub(super) fn record_verified(&self, identifier: &Identifier) {
        if let Identifier::Phone(phone) = identifier {
            self.inner.sms_guard.verified(phone, self.inner.clock.now());
        }
    }
}
