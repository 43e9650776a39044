//! The security rules of the engine, end to end through `Gate` with a real store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Inbox, StuckSender, capture, email_and_sms, email_subject, members_only, next_message, send_to,
    verify_for,
};
use otpgate::delivery::{Message, Senders};
use otpgate::directory::StaticDirectory;
use otpgate::identifier::Identifier;
use otpgate::otp::{CodePolicy, ManualClock};
use otpgate::{Gate, GateBuilder, GateError};
use tokio::sync::mpsc::UnboundedReceiver;

fn alice() -> Identifier {
    Identifier::email("alice@example.com").unwrap()
}

struct Setup {
    gate: Gate,
    clock: ManualClock,
    inbox: UnboundedReceiver<Message>,
}

fn setup(policy: CodePolicy) -> Setup {
    let (sender, inbox) = capture();
    let clock = ManualClock::starting_now();
    let gate = Gate::builder()
        .policy(policy)
        .clock(Arc::new(clock.clone()))
        .senders(email_and_sms(sender))
        .build()
        .unwrap();
    Setup { gate, clock, inbox }
}

impl Setup {
    async fn send(&mut self) -> Result<String, GateError> {
        self.gate.send(send_to(alice())).await?;
        Ok(self.inbox.next_code().await)
    }

    /// Verifies a wrong code: refused as invalid.
    async fn guess_wrong(&self, code: &str) {
        assert!(matches!(
            self.verify(&wrong(code)).await,
            Err(GateError::InvalidCode)
        ));
    }

    async fn verify(&self, code: &str) -> Result<(), GateError> {
        self.gate
            .verify(verify_for(alice(), code))
            .await
            .map(|_| ())
    }
}

fn wrong(code: &str) -> String {
    if code == "000000" {
        "000001".into()
    } else {
        "000000".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_1000_concurrent_verifies_of_one_code_wins() {
    let mut s = setup(CodePolicy::default());
    let code = s.send().await.unwrap();
    let gate = s.gate.clone();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let gate = gate.clone();
            let code = code.clone();
            tokio::spawn(async move { gate.verify(verify_for(alice(), &code)).await })
        })
        .collect();
    let mut wins = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            // The losers count as failures, so back-off soon refuses the rest outright.
            Err(GateError::InvalidCode | GateError::TooManyAttempts { .. }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(refused, 999);
}

#[tokio::test]
async fn the_attempt_cap_holds_even_for_the_right_code() {
    let mut s = setup(CodePolicy::default());
    let code = s.send().await.unwrap();
    for _ in 0..5 {
        s.guess_wrong(&code).await;
        // Step past the growing back-off so each guess is judged on the code alone.
        s.clock.advance(Duration::from_secs(2));
    }
    assert!(matches!(s.verify(&code).await, Err(GateError::InvalidCode)));
    // A resend does not reset the cap: it is refused outright while the code lives.
    assert!(matches!(
        s.send().await,
        Err(GateError::TooManyAttempts { .. })
    ));
}

#[tokio::test]
async fn the_failure_budget_holds_across_resends() {
    let policy = CodePolicy {
        failure_budget: 10,
        max_attempts: 3,
        ..CodePolicy::default()
    };
    let mut s = setup(policy);
    let mut failures = 0;
    let mut last_code = String::new();
    while failures < 10 {
        // Each round a fresh code, after the previous one has expired.
        s.clock.advance(Duration::from_secs(16 * 60));
        last_code = s.send().await.unwrap();
        for _ in 0..3 {
            if failures == 10 {
                break;
            }
            s.clock.advance(Duration::from_secs(60));
            s.guess_wrong(&last_code).await;
            failures += 1;
        }
    }
    // Budget spent: the right code is refused, and no new code is issued.
    s.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        s.verify(&last_code).await,
        Err(GateError::TooManyAttempts { .. })
    ));
    assert!(matches!(
        s.send().await,
        Err(GateError::TooManyAttempts { .. })
    ));
    // A day later the identity is free again.
    s.clock.advance(Duration::from_secs(24 * 3600));
    let code = s.send().await.unwrap();
    assert!(s.verify(&code).await.is_ok());
}

#[tokio::test]
async fn backoff_grows_between_failures() {
    let mut s = setup(CodePolicy::default());
    let code = s.send().await.unwrap();
    for _ in 0..5 {
        s.guess_wrong(&code).await;
    }
    // Five failures in a row: the sixth try must wait.
    match s.verify(&code).await {
        Err(GateError::TooManyAttempts { retry_after }) => {
            assert_eq!(retry_after, Duration::from_secs(1))
        }
        other => panic!("expected back-off, got {other:?}"),
    }
}

#[tokio::test]
async fn the_store_never_holds_a_plaintext_code() {
    let mut s = setup(CodePolicy::default());
    let code = s.send().await.unwrap();
    let key = otpgate::store::keys::code_record("default", &alice());
    let state = s
        .gate
        .store()
        .peek_code_state(&key)
        .await
        .unwrap()
        .expect("record stored");
    let serialized = serde_json::to_string(&state).unwrap();
    let debugged = format!("{state:?}");
    assert!(state.challenge.is_some());
    for form in [serialized, debugged] {
        assert!(
            !form.contains(&code),
            "plaintext code in store record: {form}"
        );
    }
    // The stored hash is keyed: it is not the SHA-256 of the code either.
    let plain_digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, code.as_bytes());
    assert_ne!(state.challenge.unwrap().code_hash.0, plain_digest.as_ref());
}

#[tokio::test]
async fn a_resend_invalidates_the_previous_code() {
    let mut s = setup(CodePolicy::default());
    let first = s.send().await.unwrap();
    s.clock.advance(Duration::from_secs(30));
    let second = s.send().await.unwrap();
    if first != second {
        assert!(matches!(
            s.verify(&first).await,
            Err(GateError::InvalidCode)
        ));
    }
    assert!(s.verify(&second).await.is_ok());
}

#[tokio::test]
async fn a_revocation_is_seen_by_every_gate_on_the_store_within_one_poll() {
    use otpgate::store::MemoryStore;
    use otpgate::token::{SigningAlgorithm, SigningKey};
    const POLL: std::time::Duration = std::time::Duration::from_millis(50);
    // Two gates on one memory store and one key, as an app embedding two layers would.
    let store = Arc::new(MemoryStore::default());
    let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let gate = |store: &Arc<MemoryStore>| {
        Gate::builder()
            .store(store.clone())
            .signing_key(key.clone())
            .revocation_poll(POLL)
            .build()
            .unwrap()
    };
    let (a, b) = (gate(&store), gate(&store));
    let session = a
        .start_session(&email_subject("u-1", "alice@example.com"))
        .unwrap();
    let token = &session.access.token;
    // Checked twice through each gate (and so answered from the verified-token cache)...
    for _ in 0..2 {
        a.authenticate(token).await.unwrap();
        b.authenticate(token).await.unwrap();
    }
    // ...a revocation holds at once on the gate that made it, and on the other once it
    // polled the store again: within one interval.
    b.revoke_access(&session.access.claims).await.unwrap();
    assert!(matches!(
        b.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
    tokio::time::sleep(POLL).await;
    assert!(matches!(
        a.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
    assert!(matches!(
        b.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
}

/// A gate whose default tenant serves only the accounts of `members`, delivering through
/// `senders`.
fn members_only_gate(members: StaticDirectory, senders: Senders) -> GateBuilder {
    Gate::builder()
        .directory(Arc::new(members))
        .tenant(members_only())
        .senders(senders)
}

#[tokio::test]
async fn an_unknown_account_gets_a_message_queued_and_dropped_never_sent() {
    let (sender, mut inbox) = capture();
    let members = StaticDirectory::new().with_account("default", alice(), "alice-1");
    let gate = members_only_gate(members, email_and_sms(sender))
        .build()
        .unwrap();
    let stranger = Identifier::email("mallory@example.com").unwrap();
    let unknown = gate.send(send_to(stranger)).await.unwrap();
    let known = gate.send(send_to(alice())).await.unwrap();
    // The same answer for both: the tenant does not reveal accounts.
    assert_eq!(unknown, known);

    // Only the member's message reaches a sender.
    let delivered = next_message(&mut inbox).await;
    assert_eq!(delivered.to, alice());
    // The stranger's message was queued (it went through the worker) and dropped there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gate.decoys_dropped() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the decoy never left the queue"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(inbox.try_recv().is_err(), "the decoy reached a sender");
    assert_eq!(gate.decoys_dropped(), 1);
    // Neither a delivery nor a failure.
    let stats = gate.delivery_stats();
    assert_eq!((stats.sent, stats.failed, stats.retried), (1, 0, 0));
}

#[tokio::test]
async fn a_full_outbox_refuses_known_and_unknown_accounts_alike() {
    let member = |i: usize| Identifier::email(&format!("member{i}@example.com")).unwrap();
    let members = (0..20).fold(StaticDirectory::new(), |d, i| {
        d.with_account("default", member(i), &format!("m{i}"))
    });
    let gate = members_only_gate(members, email_and_sms(Arc::new(StuckSender::default())))
        .outbox_policy(otpgate::delivery::OutboxPolicy {
            capacity: 1,
            concurrency: 1,
            ..Default::default()
        })
        .build()
        .unwrap();
    let send = async |identifier: Identifier| gate.send(send_to(identifier)).await;
    // Members' messages fill the outbox: one stuck in delivery, one waiting for it, one
    // queued; nothing leaves after that.
    let mut next = 0;
    loop {
        assert!(next < 18, "the outbox never filled");
        match send(member(next)).await {
            Ok(_) => next += 1,
            Err(GateError::DeliveryUnavailable) => break,
            Err(other) => panic!("unexpected {other:?}"),
        }
        tokio::task::yield_now().await;
    }
    let stranger = Identifier::email("mallory@example.com").unwrap();
    assert!(matches!(
        send(stranger).await,
        Err(GateError::DeliveryUnavailable)
    ));
    assert!(matches!(
        send(member(next + 1)).await,
        Err(GateError::DeliveryUnavailable)
    ));
}
