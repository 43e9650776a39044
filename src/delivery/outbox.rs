use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, mpsc};

use super::{Message, Senders};

/// The outbox is full: deliveries are not keeping up.
#[derive(Debug, thiserror::Error)]
#[error("the delivery outbox is full")]
pub struct OutboxFull;

/// A bounded queue drained by a background task, so that an HTTP answer never waits
/// for, and is never timed by, a delivery.
///
/// The worker starts on the first message, inside whatever tokio runtime serves the
/// request, so an outbox can be built outside any runtime.
pub struct Outbox {
    senders: Senders,
    capacity: usize,
    concurrency: usize,
    queue: OnceLock<mpsc::Sender<Message>>,
}

impl Outbox {
    /// An outbox delivering through `senders`, holding at most `capacity` waiting
    /// messages and running at most `concurrency` deliveries at once.
    pub fn new(senders: Senders, capacity: usize, concurrency: usize) -> Outbox {
        Outbox {
            senders,
            capacity: capacity.max(1),
            concurrency: concurrency.max(1),
            queue: OnceLock::new(),
        }
    }

    /// The senders.
    pub fn senders(&self) -> &Senders {
        &self.senders
    }

    /// Queues `message` without waiting. Must be called within a tokio runtime.
    pub fn enqueue(&self, message: Message) -> Result<(), OutboxFull> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.capacity);
            tokio::spawn(drain(rx, self.senders.clone(), self.concurrency));
            tx
        });
        queue.try_send(message).map_err(|_| OutboxFull)
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("senders", &self.senders)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

async fn drain(mut rx: mpsc::Receiver<Message>, senders: Senders, concurrency: usize) {
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some(message) = rx.recv().await {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let Some(sender) = senders.for_channel(message.channel()).cloned() else {
            tracing::error!(channel = %message.channel(), to = %message.to.masked(), "no sender configured for channel");
            continue;
        };
        tokio::spawn(async move {
            match sender.send(&message).await {
                Ok(()) => {
                    tracing::info!(channel = %message.channel(), to = %message.to.masked(), tenant = %message.tenant, "code delivered")
                }
                Err(error) => {
                    tracing::warn!(channel = %message.channel(), to = %message.to.masked(), tenant = %message.tenant, %error, "code delivery failed")
                }
            }
            drop(permit);
        });
    }
}
