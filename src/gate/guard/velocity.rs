//! Velocity, budgets and the pumping signature, for SMS sends, over the store.

use std::sync::Arc;
use std::time::Duration;

use crate::identifier::Identifier;

use super::super::{Gate, GateError};

/// The gate-wide SMS guard. The default guards nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SmsGuard {}

/// Which cap a throttled send hit; each has its own stable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleReason {
    /// Sends to one country calling code.
    Country,
    /// Sends to one number prefix.
    Prefix,
    /// A prefix whose codes are sent but not verified (SMS pumping), cooling down.
    Pumping,
    /// The gate-wide SMS budget (messages or estimated cost) for the hour or the day.
    Budget,
}

impl ThrottleReason {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self {
            ThrottleReason::Country | ThrottleReason::Prefix | ThrottleReason::Pumping => {
                "destination_throttled"
            }
            ThrottleReason::Budget => "sms_budget_exhausted",
        }
    }

    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ThrottleReason::Country => "country",
            ThrottleReason::Prefix => "prefix",
            ThrottleReason::Pumping => "pumping",
            ThrottleReason::Budget => "budget",
        }
    }
}

/// Counts an SMS send, or refuses it while a cap holds.
pub(super) async fn admit(
    gate: &Gate,
    guard: Arc<SmsGuard>,
    phone: &Identifier,
) -> Result<(), GateError> {
    let _ = (gate, guard, phone, Duration::ZERO);
    Ok(())
}

/// Counts a verified SMS code.
pub(super) async fn record_verified(gate: &Gate, guard: &SmsGuard, phone: &Identifier) {
    let _ = (gate, guard, phone);
}
