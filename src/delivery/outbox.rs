use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Messages the worker has taken off the queue and not yet finished with.
    in_hand: AtomicUsize,
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
        // Each configured provider's series show from the start, at 0.
        for sender in [
            &senders.email,
            &senders.sms,
            &senders.email_fallback,
            &senders.sms_fallback,
        ]
        .into_iter()
        .flatten()
        {
            crate::metrics::delivery_provider(sender.provider());
        }
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

    /// Messages queued or in delivery now: places held in the queue, plus messages the
    /// worker has taken and not finished (waiting for a delivery slot, or being sent).
    /// Decoys count while they wait in the queue, like any message.
    pub fn depth(&self) -> usize {
        let queued = self
            .queue
            .get()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity());
        queued + self.counters.in_hand.load(Ordering::Relaxed)
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
        counters.in_hand.fetch_add(1, Ordering::Relaxed);
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
            counters.in_hand.fetch_sub(1, Ordering::Relaxed);
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
            // Counted under the provider that failed and handed the message on.
            crate::metrics::delivery_attempt(providers[index - 1].provider(), "failed_over");
            tracing::warn!(%channel, %to, %tenant, "primary provider failed; trying the fallback");
        }
        let mut delay = policy.backoff;
        for attempt in 0..policy.attempts {
            if attempt > 0 {
                counters.retried.fetch_add(1, Ordering::Relaxed);
                crate::metrics::delivery_attempt(provider.provider(), "retried");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            match tokio::time::timeout(policy.timeout, provider.send(message)).await {
                Ok(Ok(())) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::delivery_attempt(provider.provider(), "sent");
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
    // Counted under the last provider tried: the fallback, when there is one.
    if let Some(last) = providers.last() {
        crate::metrics::delivery_attempt(last.provider(), "failed");
    }
    tracing::error!(%channel, %to, %tenant, "code could not be delivered by any provider");
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::delivery::Rendered;
    use crate::identifier::Identifier;
    use crate::otp::CodeFormat;

    fn message() -> Message {
        Message {
            to: Identifier::email("ada@example.com").unwrap(),
            code: CodeFormat::default().generate(),
            link: None,
            tenant: "default".to_owned(),
            expires_in: Duration::from_secs(300),
            content: Rendered::default(),
        }
    }

    fn quick(capacity: usize) -> OutboxPolicy {
        OutboxPolicy {
            capacity,
            concurrency: 1,
            attempts: 1,
            backoff: Duration::from_millis(1),
            timeout: Duration::from_secs(30),
        }
    }

    /// A sender that fails or succeeds, and tells when it has sent.
    struct Fixed {
        provider: &'static str,
        ok: bool,
        done: Arc<Notify>,
    }

    #[async_trait]
    impl Sender for Fixed {
        async fn send(&self, _: &Message) -> Result<(), DeliveryError> {
            if self.ok {
                self.done.notify_one();
                Ok(())
            } else {
                Err(DeliveryError::Failed("down".to_owned()))
            }
        }

        fn provider(&self) -> &'static str {
            self.provider
        }
    }

    /// A sender that waits until released.
    struct Held(Arc<Notify>);

    #[async_trait]
    impl Sender for Held {
        async fn send(&self, _: &Message) -> Result<(), DeliveryError> {
            self.0.notified().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failover_counts_under_the_primary_and_the_send_under_the_fallback() {
        // Names of this test's own, so that other tests' counts do not mix in.
        let (primary, fallback) = ("test_failover_primary", "test_failover_fallback");
        let done = Arc::new(Notify::new());
        let senders = Senders {
            email: Some(Arc::new(Fixed {
                provider: primary,
                ok: false,
                done: Arc::clone(&done),
            })),
            email_fallback: Some(Arc::new(Fixed {
                provider: fallback,
                ok: true,
                done: Arc::clone(&done),
            })),
            ..Senders::default()
        };
        let outbox = Outbox::new(senders, quick(8));
        // Configured providers show at 0 before anything is sent.
        assert_eq!(crate::metrics::delivery_attempts(fallback, "sent"), 0);
        outbox.enqueue(message()).unwrap();
        done.notified().await;
        // The counter moves right after the send returns: wait for the worker to finish.
        while outbox.depth() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(crate::metrics::delivery_attempts(primary, "failed_over"), 1);
        assert_eq!(crate::metrics::delivery_attempts(primary, "sent"), 0);
        assert_eq!(crate::metrics::delivery_attempts(fallback, "sent"), 1);
        assert_eq!(crate::metrics::delivery_attempts(fallback, "failed"), 0);
        assert_eq!(outbox.stats().failed_over, 1);
        let text = crate::metrics::render(None);
        assert!(
            text.contains(
                "otpgate_delivery_attempts_total{provider=\"test_failover_fallback\",outcome=\"sent\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn depth_counts_messages_queued_and_in_delivery() {
        let release = Arc::new(Notify::new());
        let senders = Senders {
            email: Some(Arc::new(Held(Arc::clone(&release)))),
            ..Senders::default()
        };
        let outbox = Outbox::new(senders, quick(8));
        assert_eq!(outbox.depth(), 0);
        for _ in 0..3 {
            outbox.enqueue(message()).unwrap();
        }
        assert_eq!(outbox.depth(), 3);
        // Once the worker has run, one is being sent (held) and one waits for a delivery
        // slot, both taken off the queue: all three are still in the outbox.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(outbox.counters.in_hand.load(Ordering::Relaxed), 2);
        assert_eq!(outbox.depth(), 3);
        let text = crate::metrics::render_with_depth(None, Some(outbox.depth()));
        assert!(text.contains("otpgate_outbox_depth 3"), "{text}");
        // Released one at a time, the depth goes back to 0.
        while outbox.depth() > 0 {
            release.notify_one();
            tokio::task::yield_now().await;
        }
        assert_eq!(outbox.stats().sent, 3);
    }
}
