//! The engine's own tests, one file per concern, on a manual clock, a memory store and
//! senders that hand every message to the test.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Gate, GateBuilder, SendRequest, VerifyRequest};
use crate::delivery::{DeliveryError, Message, Sender, Senders};
use crate::identifier::Identifier;
use crate::otp::{ManualClock, ServerSecret, Timestamp};
use crate::store::MemoryStore;
use crate::token::Subject;

mod builder;
mod codes;
mod guard_challenge;
mod guard_destinations;
mod guard_velocity;
mod revocations;
mod second_factor;
mod sessions;

/// Where the test clock starts: a fixed instant, so every run sees the same times.
const START: Timestamp = Timestamp(1_700_000_000_000);

/// How long a test waits for a message before deciding none is coming. Only reached
/// when a test is about to fail.
const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// A sender that hands each message to the test's [`Inbox`].
struct Capture(mpsc::UnboundedSender<Message>);

#[async_trait]
impl Sender for Capture {
    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        self.0
            .send(message.clone())
            .map_err(|e| DeliveryError::Failed(e.to_string()))
    }
}

/// The messages the gate delivered, in order.
pub(super) struct Inbox(mpsc::UnboundedReceiver<Message>);

impl Inbox {
    /// The next delivered message; fails the test when none comes.
    pub(super) async fn next(&mut self) -> Message {
        tokio::time::timeout(DELIVERY_WAIT, self.0.recv())
            .await
            .expect("a message is delivered")
            .expect("the sender is alive")
    }

    /// The code of the next delivered message.
    pub(super) async fn code(&mut self) -> String {
        self.next().await.code.expose().to_owned()
    }

    /// Fails the test when a message was delivered.
    pub(super) fn assert_empty(&mut self) {
        if let Ok(message) = self.0.try_recv() {
            panic!("unexpected message to {}", message.to.as_str());
        }
    }
}

/// A sender for every channel and the inbox it delivers into.
pub(super) fn capture() -> (Senders, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender: Arc<dyn Sender> = Arc::new(Capture(tx));
    let senders = Senders {
        email: Some(sender.clone()),
        sms: Some(sender),
        ..Senders::default()
    };
    (senders, Inbox(rx))
}

/// A gate under test, its clock and the messages it delivered.
pub(super) struct Fixture {
    pub(super) gate: Gate,
    pub(super) clock: ManualClock,
    pub(super) inbox: Inbox,
}

impl Fixture {
    /// Sends a code to `identifier` in the default tenant and returns it as delivered.
    pub(super) async fn send_code(&mut self, identifier: &Identifier) -> String {
        self.gate
            .send(send_to(identifier))
            .await
            .expect("the send is accepted");
        self.inbox.code().await
    }

    /// Waits until the outbox has dropped `count` decoys in all; fails the test when it
    /// does not.
    pub(super) async fn decoys_dropped(&self, count: u64) {
        let dropped = async {
            while self.gate.decoys_dropped() < count {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(DELIVERY_WAIT, dropped)
            .await
            .expect("the decoys are dropped");
    }

    /// Signs `identifier` in with a delivered code and returns who it proved to be.
    pub(super) async fn sign_in(&mut self, identifier: &Identifier) -> Subject {
        let code = self.send_code(identifier).await;
        self.gate
            .verify(verify_with(identifier, &code))
            .await
            .expect("the delivered code verifies")
    }
}

/// A builder on a manual clock, a memory store, a fixed secret and capturing senders,
/// with every other part at its default; the clock and inbox come back beside it.
pub(super) fn builder() -> (GateBuilder, ManualClock, Inbox) {
    let clock = ManualClock::starting_at(START);
    let (senders, inbox) = capture();
    let builder = Gate::builder()
        .clock(Arc::new(clock.clone()))
        .store(Arc::new(MemoryStore::new(10_000)))
        .secret(ServerSecret::new(vec![7; 32]).expect("a 32-byte secret"))
        .senders(senders);
    (builder, clock, inbox)
}

/// A gate from [`builder`] with `configure` applied.
pub(super) fn gate_with(configure: impl FnOnce(GateBuilder) -> GateBuilder) -> Fixture {
    let (builder, clock, inbox) = builder();
    let gate = configure(builder).build().expect("the gate builds");
    Fixture { gate, clock, inbox }
}

/// A gate from [`builder`] as it is.
pub(super) fn gate() -> Fixture {
    gate_with(|builder| builder)
}

/// A send to `identifier` in the default tenant, from no known address.
pub(super) fn send_to(identifier: &Identifier) -> SendRequest<'static> {
    SendRequest {
        tenant: None,
        identifier: identifier.clone(),
        client_ip: None,
        locale: None,
    }
}

/// A verify of `code` for `identifier` in the default tenant, from no known address.
pub(super) fn verify_with<'a>(identifier: &Identifier, code: &'a str) -> VerifyRequest<'a> {
    VerifyRequest {
        tenant: None,
        identifier: identifier.clone(),
        code,
        client_ip: None,
    }
}

/// A code of the same shape as `code` that is certainly not it.
pub(super) fn wrong(code: &str) -> String {
    let mut chars = code.chars();
    let first = if chars.next() == Some('0') { '1' } else { '0' };
    std::iter::once(first).chain(chars).collect()
}

pub(super) fn alice() -> Identifier {
    Identifier::email("alice@example.com").expect("a valid email")
}

pub(super) fn phone() -> Identifier {
    Identifier::phone("+14155552671").expect("a valid phone")
}

pub(super) fn ip(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([203, 0, 113, last]))
}

pub(super) use crate::store::conformance::UnreachableStore;
