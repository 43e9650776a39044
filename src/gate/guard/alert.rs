//! Whether the SMS guard has refused sends lately, as every gate sharing the store sees
//! it: what `challenge = "under_attack"` asks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::store::{SetMode, keys};

use super::super::Gate;

/// How long a gate goes by what it last read of the alert: a trip on another gate asks
/// for challenges here at most this much later.
const ALERT_POLL: Duration = Duration::from_secs(1);

/// This gate's last reading of the alert.
#[derive(Default)]
pub(in crate::gate) struct Alert {
    // When it was last read, in milliseconds on the gate's clock; 0: never.
    read_at: AtomicU64,
    raised: AtomicBool,
}

impl Gate {
    /// Whether the SMS guard refused sends lately: read from the store at most once per
    /// second. A store that cannot answer counts as an attack: a challenge costs a person
    /// a moment, a missed alert costs messages.
    pub(in crate::gate) async fn under_attack(&self) -> bool {
        let alert = &self.inner.guard_alert;
        let now = self.inner.clock.now().0;
        let read_at = alert.read_at.load(Ordering::Acquire);
        if read_at != 0 && now.saturating_sub(read_at) < ALERT_POLL.as_millis() as u64 {
            return alert.raised.load(Ordering::Acquire);
        }
        let raised = match self.inner.store.get_value(keys::sms_guard_alert()).await {
            Ok(value) => value.is_some(),
            Err(error) => {
                tracing::warn!(%error, "could not read the SMS guard's alert; asking for challenges");
                true
            }
        };
        alert.raised.store(raised, Ordering::Release);
        alert.read_at.store(now.max(1), Ordering::Release);
        raised
    }

    /// Tells every gate sharing the store that the SMS guard refused sends, for `ttl`.
    pub(in crate::gate) async fn raise_alert(&self, ttl: Duration) {
        let alert = &self.inner.guard_alert;
        alert.raised.store(true, Ordering::Release);
        alert
            .read_at
            .store(self.inner.clock.now().0.max(1), Ordering::Release);
        let written = self
            .inner
            .store
            .set_value(keys::sms_guard_alert(), "1", ttl, SetMode::Always)
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "could not raise the SMS guard's alert for the other gates");
        }
    }
}
