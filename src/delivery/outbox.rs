use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use super::{DeliveryError, Message, Sender, Senders};

/// The outbox is full: deliveries are not keeping up.
#[derive(Debug, thiserror::Error)]
#[error("the delivery outbox is full")]
pub struct OutboxFull;

/// How hard the outbox tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxPolicy {
    /// Messages waiting at most; past that, sends are refused (503), never dropped.
    pub capacity: usize,
    /// Deliveries running at once.
    pub concurrency: usize,
    /// Tries per provider before the fallback takes over.
    pub attempts: u32,
    /// Wait before the first retry; it doubles for each further one.
    pub backoff: Duration,
    /// Longest wait for one try.
    pub timeout: Duration,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        OutboxPolicy {
            capacity: 10_000,
            concurrency: 64,
            attempts: 3,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Delivery counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Messages delivered.
    pub sent: u64,
    /// Messages that no provider could deliver.
    pub failed: u64,
    /// Tries repeated after a failure.
    pub retried: u64,
    /// Messages handed from a primary provider to its fallback.
    pub failed_over: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    failed_over: AtomicU64,
    decoys_dropped: AtomicU64,
}

/// A message in the queue, and whether the worker is to deliver it.
struct Queued {
    message: Message,
    deliver: bool,
}

/// A bounded queue drained by a background task, so that an HTTP answer never waits
/// for, and is never timed by, a delivery. Each message is tried on its channel's primary
/// provider with retries and a timeout, then on the fallback provider.
///
/// A message can also be queued as a decoy: the worker drops it unsent. The gate queues
/// one for a send to an unknown account, so that the request does the same work whether
/// or not the account exists, and only the worker, off the request path, tells them apart.
///
/// The worker starts on the first message, inside whatever tokio runtime serves the
/// request, so an outbox can be built outside any runtime.
pub struct Outbox {
    senders: Senders,
    policy: OutboxPolicy,
    counters: Arc<Counters>,
    queue: OnceLock<mpsc::Sender<Queued>>,
}

impl Outbox {
    /// An outbox delivering through `senders` under `policy`.
    pub fn new(senders: Senders, policy: OutboxPolicy) -> Outbox {
        Outbox {
            senders,
            policy: OutboxPolicy {
                capacity: policy.capacity.max(1),
                concurrency: policy.concurrency.max(1),
                attempts: policy.attempts.max(1),
                ..policy
            },
            counters: Arc::default(),
            queue: OnceLock::new(),
        }
    }

    /// The senders.
    pub fn senders(&self) -> &Senders {
        &self.senders
    }

    /// The counters so far.
    pub fn stats(&self) -> DeliveryStats {
        let c = &self.counters;
        DeliveryStats {
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            failed_over: c.failed_over.load(Ordering::Relaxed),
        }
    }

    /// Decoys dropped unsent since start: messages for unknown accounts. They are
    /// neither sent nor failed, so [`DeliveryStats`] leaves them out.
    pub fn decoys_dropped(&self) -> u64 {
        self.counters.decoys_dropped.load(Ordering::Relaxed)
    }

    /// Holds a place in the queue without waiting, so that a caller can refuse a request
    /// before it changes anything, rather than after. Must be called within a tokio
    /// runtime.
    pub fn reserve(&self) -> Result<OutboxSlot<'_>, OutboxFull> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.policy.capacity);
            tokio::spawn(drain(
                rx,
                self.senders.clone(),
                self.policy,
                Arc::clone(&self.counters),
            ));
            tx
        });
        queue.try_reserve().map(OutboxSlot).map_err(|_| OutboxFull)
    }

    /// Queues `message` without waiting. Must be called within a tokio runtime.
    pub fn enqueue(&self, message: Message) -> Result<(), OutboxFull> {
        self.reserve()?.send(message);
        Ok(())
    }
}

/// A place held in the outbox; dropping it gives the place back.
pub struct OutboxSlot<'a>(mpsc::Permit<'a, Queued>);

impl OutboxSlot<'_> {
    /// Queues `message` in the place held, for delivery.
    pub fn send(self, message: Message) {
        self.queue(message, true);
    }

    /// Queues `message` in the place held; with `deliver` false, as a decoy that the
    /// worker drops unsent. Either way the caller does the same work, in one queue op.
    pub fn queue(self, message: Message, deliver: bool) {
        self.0.send(Queued { message, deliver });
    }
}

impl std::fmt::Debug for OutboxSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxSlot")
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("senders", &self.senders)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

async fn drain(
    mut rx: mpsc::Receiver<Queued>,
    senders: Senders,
    policy: OutboxPolicy,
    counters: Arc<Counters>,
) {
    let permits = Arc::new(Semaphore::new(policy.concurrency));
    while let Some(queued) = rx.recv().await {
        let message = queued.message;
        if !queued.deliver {
            // A decoy held its place in the queue like any message, so a full outbox
            // refused known and unknown accounts alike; it reaches no provider, and is
            // neither sent nor failed. Logged without its destination, like every log.
            counters.decoys_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(channel = %message.channel(), tenant = %message.tenant, "no such account: code not delivered");
            continue;
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let channel = message.channel();
        let providers: Vec<Arc<dyn Sender>> =
            [senders.for_channel(channel), senders.fallback_for(channel)]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            deliver(&message, &providers, policy, &counters).await;
            drop(permit);
        });
    }
}

async fn deliver(
    message: &Message,
    providers: &[Arc<dyn Sender>],
    policy: OutboxPolicy,
    counters: &Counters,
) {
    let (channel, to, tenant) = (message.channel(), message.to.masked(), &message.tenant);
    for (index, provider) in providers.iter().enumerate() {
        if index > 0 {
            counters.failed_over.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%channel, %to, %tenant, "primary provider failed; trying the fallback");
        }
        let mut delay = policy.backoff;
        for attempt in 0..policy.attempts {
            if attempt > 0 {
                counters.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            match tokio::time::timeout(policy.timeout, provider.send(message)).await {
                Ok(Ok(())) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%channel, %to, %tenant, provider = index, "code delivered");
                    return;
                }
                Ok(Err(DeliveryError::Rejected(reason))) => {
                    // Scrubbed again: a `Sender` of the app's own may quote the destination.
                    let reason = super::scrub::provider_text(&reason, message);
                    // The provider refused this message; asking it again will not help.
                    tracing::warn!(%channel, %to, %tenant, provider = index, %reason, "delivery rejected");
                    break;
                }
                Ok(Err(DeliveryError::Failed(reason))) => {
                    let reason = super::scrub::provider_text(&reason, message);
                    tracing::warn!(%channel, %to, %tenant, provider = index, attempt, %reason, "delivery failed");
                }
                Err(_) => {
                    tracing::warn!(%channel, %to, %tenant, provider = index, attempt, "delivery timed out");
                }
            }
        }
    }
    counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::error!(%channel, %to, %tenant, "code could not be delivered by any provider");
}
