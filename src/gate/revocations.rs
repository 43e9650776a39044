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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    // How long the epoch value lives: past the longest-lived token it concerns (one that
    // expired reads as a change too, which only costs a check).
    epoch_ttl: Duration,
    started: Instant,
    generation: AtomicU64,
    // When the last poll started, in nanoseconds since `started`; `NEVER` before one.
    // A failed poll counts too: for one interval its failure is the answer, so that with
    // the store down requests do not queue behind one timed-out read after another.
    polled_at: AtomicU64,
    failed: AtomicBool,
    // A logout of this gate whose announcement did not reach the store: made at the next
    // poll, so that the other gates still learn of it.
    unannounced: AtomicBool,
    // The value the last poll read, and why the last poll failed. The lock also makes
    // concurrent requests that find the poll stale wait for one read instead of each
    // making their own.
    seen: tokio::sync::Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    value: Option<String>,
    failure: String,
}

impl Revocations {
    pub(super) fn new(poll: Duration, epoch_ttl: Duration) -> Revocations {
        Revocations {
            poll,
            epoch_ttl,
            started: Instant::now(),
            generation: AtomicU64::new(0),
            polled_at: AtomicU64::new(NEVER),
            failed: AtomicBool::new(false),
            unannounced: AtomicBool::new(false),
            seen: tokio::sync::Mutex::new(Seen::default()),
        }
    }

    fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(NEVER - 1)
    }

    /// Whether the last poll is younger than the interval.
    fn fresh(&self) -> bool {
        let polled_at = self.polled_at.load(Ordering::Acquire);
        let poll = u64::try_from(self.poll.as_nanos()).unwrap_or(NEVER);
        polled_at != NEVER && self.elapsed_nanos().saturating_sub(polled_at) < poll
    }

    fn answer(&self, seen: &Seen) -> Result<u64, StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(seen.failure.clone()));
        }
        Ok(self.generation.load(Ordering::Acquire))
    }

    /// The generation now: from memory while the last poll is younger than the
    /// interval, else after reading the store's value (one read for all the requests
    /// that wait on it). A failed poll answers its failure for one interval.
    pub(super) async fn generation(&self, store: &dyn Store) -> Result<u64, StoreError> {
        if self.fresh() && !self.failed.load(Ordering::Acquire) {
            return Ok(self.generation.load(Ordering::Acquire));
        }
        let mut seen = self.seen.lock().await;
        if self.fresh() {
            return self.answer(&seen);
        }
        // The start of the read is what counts: whatever was written before it is seen.
        let started = self.elapsed_nanos();
        let polled = self.poll_store(store, &mut seen).await;
        if let Err(error) = &polled {
            seen.failure = format!("the revocation poll failed: {error}");
        }
        self.failed.store(polled.is_err(), Ordering::Release);
        self.polled_at.store(started, Ordering::Release);
        polled.map(|()| self.generation.load(Ordering::Acquire))
    }

    async fn poll_store(&self, store: &dyn Store, seen: &mut Seen) -> Result<(), StoreError> {
        if self.unannounced.load(Ordering::Acquire) {
            self.write_epoch(store, seen).await?;
            self.unannounced.store(false, Ordering::Release);
            return Ok(());
        }
        let value = store.get_value(keys::revocation_epoch()).await?;
        if seen.value != value {
            seen.value = value;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Writes a new epoch value; this gate moves on too.
    async fn write_epoch(&self, store: &dyn Store, seen: &mut Seen) -> Result<(), StoreError> {
        let value = crate::util::random_id();
        store
            .set_value(
                keys::revocation_epoch(),
                &value,
                self.epoch_ttl,
                SetMode::Always,
            )
            .await?;
        seen.value = Some(value);
        // Anything another gate wrote before this write is covered: every cached token
        // is checked again. Anything written after it differs from `seen` at the next poll.
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Tells every gate sharing `store` that something was revoked: this gate checks
    /// its cached tokens again at once, the others at their next poll. When the store
    /// does not take the announcement, the next poll makes it.
    pub(super) async fn announce(&self, store: &dyn Store) -> Result<(), StoreError> {
        // This gate moves on first, whatever the store answers: its own logout holds here
        // even if the announcement to the others fails.
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut seen = self.seen.lock().await;
        let written = self.write_epoch(store, &mut seen).await;
        if written.is_err() {
            self.unannounced.store(true, Ordering::Release);
            // Due now: the next request polls, and so retries the announcement.
            self.polled_at.store(NEVER, Ordering::Release);
        }
        written
    }
}
