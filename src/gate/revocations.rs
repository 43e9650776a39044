//! Which cached tokens still need a revocation check, so that a token seen before costs no
//! store read on each request.
//!
//! Every logout changes one value in the store ([`keys::revocation_epoch`]). Each gate
//! reads it at most once per poll interval, and counts a *generation* that moves on
//! whenever the value it read differs from the last one (or when this gate revokes
//! something itself). A token's cached claims remember the generation their last check
//! passed at; the token is looked up in the store again only once the generation moved.
//! So a logout on one gate is honoured by every gate sharing the store within one poll
//! interval (the value is read at the start of a poll, so a request that starts a full
//! interval after the logout returned always sees it), and on the gate that took it at
//! once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{SetMode, Store, StoreError, keys};

/// The default poll interval: the bound on how long another gate's logout takes to
/// reach this one.
pub const DEFAULT_REVOCATION_POLL: Duration = Duration::from_secs(1);

/// Marks that no poll has been made yet.
const NEVER: u64 = u64::MAX;

pub(super) struct Revocations {
    poll: Duration,
    started: Instant,
    generation: AtomicU64,
    // When the last poll started, in nanoseconds since `started`; `NEVER` before one.
    polled_at: AtomicU64,
    // The value the last poll read. The lock also makes concurrent requests that find
    // the poll stale wait for one read instead of each making their own.
    seen: tokio::sync::Mutex<Option<String>>,
}

impl Revocations {
    pub(super) fn new(poll: Duration) -> Revocations {
        Revocations {
            poll,
            started: Instant::now(),
            generation: AtomicU64::new(0),
            polled_at: AtomicU64::new(NEVER),
            seen: tokio::sync::Mutex::new(None),
        }
    }

    fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(NEVER - 1)
    }

    fn fresh(&self) -> Option<u64> {
        let polled_at = self.polled_at.load(Ordering::Acquire);
        let poll = u64::try_from(self.poll.as_nanos()).unwrap_or(NEVER);
        (polled_at != NEVER && self.elapsed_nanos().saturating_sub(polled_at) < poll)
            .then(|| self.generation.load(Ordering::Acquire))
    }

    /// The generation now: from memory while the last poll is younger than the
    /// interval, else after reading the store's value (one read for all the requests
    /// that wait on it).
    pub(super) async fn generation(&self, store: &dyn Store) -> Result<u64, StoreError> {
        if let Some(generation) = self.fresh() {
            return Ok(generation);
        }
        let mut seen = self.seen.lock().await;
        if let Some(generation) = self.fresh() {
            return Ok(generation);
        }
        // The start of the read is what counts: whatever was written before it is seen.
        let started = self.elapsed_nanos();
        let value = store.get_value(keys::revocation_epoch()).await?;
        if *seen != value {
            *seen = value;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.polled_at.store(started, Ordering::Release);
        Ok(self.generation.load(Ordering::Acquire))
    }

    /// Tells every gate sharing `store` that something was revoked: this gate checks
    /// its cached tokens again at once, the others at their next poll. `ttl` covers the
    /// longest-lived token (the value only has to outlive the tokens it concerns; one
    /// that expired reads as a change too, which only costs a check).
    pub(super) async fn announce(
        &self,
        store: &dyn Store,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        // This gate moves on first, whatever the store answers: its own logout holds here
        // even if the announcement to the others fails.
        self.generation.fetch_add(1, Ordering::AcqRel);
        let value = crate::util::random_id();
        store
            .set_value(keys::revocation_epoch(), &value, ttl, SetMode::Always)
            .await?;
        let mut seen = self.seen.lock().await;
        *seen = Some(value);
        // Anything another gate wrote between this write and this line is read at the
        // next poll: the value then differs from `seen`.
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}
