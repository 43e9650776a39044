//! Revocations across gates sharing one store: a token seen before costs no store read
//! between two polls, a logout on one gate is honoured by another within one poll
//! interval and on its own gate at once, and an outage still fails as the fallback says.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{UnreachableStore, builder};
use crate::gate::{Gate, GateError, RevocationFallback};
use crate::otp::{CodeState, Timestamp};
use crate::store::{CodeStateUpdate, MemoryStore, SetMode, Store, StoreError, WindowCount};
use crate::token::{SigningKey, Subject};

const POLL: Duration = Duration::from_millis(500);

/// A memory store that counts reads and can be taken down.
#[derive(Default)]
struct Watched {
    store: MemoryStore,
    reads: AtomicUsize,
    down: AtomicBool,
    // Refuses writes of the revocation epoch only: a logout whose mark lands but whose
    // announcement does not.
    epoch_down: AtomicBool,
}

impl Watched {
    fn outage(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Watched {
    async fn update_code_state(
        &self,
        key: &str,
        update: &mut CodeStateUpdate<'_>,
    ) -> Result<(), StoreError> {
        self.outage()?;
        self.store.update_code_state(key, update).await
    }

    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> Result<WindowCount, StoreError> {
        self.outage()?;
        self.store.hit(key, window, now).await
    }

    async fn peek_code_state(&self, key: &str) -> Result<Option<CodeState>, StoreError> {
        self.outage()?;
        self.store.peek_code_state(key).await
    }

    async fn set_value(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<bool, StoreError> {
        self.outage()?;
        if key == crate::store::keys::revocation_epoch() && self.epoch_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection reset".into()));
        }
        self.store.set_value(key, value, ttl, mode).await
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.outage()?;
        self.store.get_value(key).await
    }
}

fn member() -> Subject {
    Subject {
        id: "member-1".into(),
        email: Some("member@example.com".into()),
        phone: None,
        tenant: "default".into(),
    }
}

/// Two gates on one store with one signing key, as two instances behind Redis are.
fn two_gates(store: Arc<Watched>, fallback: RevocationFallback) -> (Gate, Gate) {
    let key = SigningKey::from_hmac_secret(b"fedcba9876543210fedcba9876543210").unwrap();
    let gate = || {
        builder()
            .0
            .store(store.clone())
            .signing_key(key.clone())
            .revocation_poll(POLL)
            .revocation_fallback(fallback)
            .build()
            .expect("the gate builds")
    };
    (gate(), gate())
}

#[tokio::test(start_paused = true)]
async fn a_token_seen_before_costs_no_store_read_until_the_next_poll() {
    let store = Arc::new(Watched::default());
    let (gate, _) = two_gates(store.clone(), RevocationFallback::Deny);
    let session = gate.start_session(&member()).unwrap();
    gate.authenticate(&session.access.token).await.unwrap();
    let after_first = store.reads.load(Ordering::SeqCst);
    assert!(after_first >= 1, "the first request checks the store");
    for _ in 0..100 {
        gate.authenticate(&session.access.token).await.unwrap();
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), after_first);
    // One poll per interval, and no lookup of the token while nothing was revoked.
    tokio::time::advance(POLL).await;
    for _ in 0..100 {
        gate.authenticate(&session.access.token).await.unwrap();
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), after_first + 1);
}

#[tokio::test(start_paused = true)]
async fn a_logout_on_one_gate_is_honoured_by_the_other_within_one_poll() {
    let store = Arc::new(Watched::default());
    let (a, b) = two_gates(store, RevocationFallback::Deny);
    let session = a.start_session(&member()).unwrap();
    let token = &session.access.token;
    let identity = b.authenticate(token).await.unwrap();
    a.authenticate(token).await.unwrap();

    a.revoke_access(&identity.claims).await.unwrap();
    // At once on the gate that took the logout.
    assert!(matches!(
        a.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
    // On the other, within one interval: before it the cached check may still answer.
    tokio::time::advance(POLL).await;
    assert!(matches!(
        b.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
    // And for good, without the store.
    for _ in 0..3 {
        tokio::time::advance(POLL).await;
        assert!(matches!(
            b.authenticate(token).await,
            Err(GateError::Unauthorized)
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn a_logout_elsewhere_rechecks_every_cached_token_but_revokes_only_its_own() {
    let store = Arc::new(Watched::default());
    let (a, b) = two_gates(store, RevocationFallback::Deny);
    let kept = a.start_session(&member()).unwrap();
    let ended = a.start_session(&member()).unwrap();
    b.authenticate(&kept.access.token).await.unwrap();
    let ended_identity = b.authenticate(&ended.access.token).await.unwrap();
    a.revoke_access(&ended_identity.claims).await.unwrap();
    tokio::time::advance(POLL).await;
    b.authenticate(&kept.access.token).await.unwrap();
    assert!(matches!(
        b.authenticate(&ended.access.token).await,
        Err(GateError::Unauthorized)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_outage_after_the_last_poll_fails_as_the_fallback_says() {
    let store = Arc::new(Watched::default());
    let (deny, _) = two_gates(store.clone(), RevocationFallback::Deny);
    let session = deny.start_session(&member()).unwrap();
    deny.authenticate(&session.access.token).await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    // Within the interval the last poll stands; after it, the store must answer.
    tokio::time::advance(POLL).await;
    assert!(matches!(
        deny.authenticate(&session.access.token).await,
        Err(GateError::StoreUnavailable(_))
    ));
    let allow = builder()
        .0
        .store(Arc::new(UnreachableStore))
        .revocation_fallback(RevocationFallback::Allow)
        .build()
        .unwrap();
    let session = allow.start_session(&member()).unwrap();
    allow.authenticate(&session.access.token).await.unwrap();
    store.down.store(false, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn a_logout_the_store_did_not_take_fails_and_can_be_repeated() {
    let store = Arc::new(Watched::default());
    let (gate, _) = two_gates(store.clone(), RevocationFallback::Allow);
    let session = gate.start_session(&member()).unwrap();
    let identity = gate.authenticate(&session.access.token).await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    let logout = gate.revoke_access(&identity.claims).await;
    assert!(
        matches!(logout, Err(GateError::StoreUnavailable(_))),
        "{logout:?}"
    );
    store.down.store(false, Ordering::SeqCst);
    // The revoked mark never reached the store, so the logout failed as a whole: the
    // client is told, and may log out again.
    assert!(gate.authenticate(&session.access.token).await.is_ok());
    gate.revoke_access(&identity.claims).await.unwrap();
    assert!(matches!(
        gate.authenticate(&session.access.token).await,
        Err(GateError::Unauthorized)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_logout_whose_announcement_failed_is_announced_at_the_next_poll() {
    let store = Arc::new(Watched::default());
    let (a, b) = two_gates(store.clone(), RevocationFallback::Deny);
    let session = a.start_session(&member()).unwrap();
    let token = &session.access.token;
    b.authenticate(token).await.unwrap();
    let identity = a.authenticate(token).await.unwrap();
    store.epoch_down.store(true, Ordering::SeqCst);
    let logout = a.revoke_access(&identity.claims).await;
    assert!(
        matches!(logout, Err(GateError::StoreUnavailable(_))),
        "{logout:?}"
    );
    // The mark landed: the gate that took the logout refuses the token at once.
    assert!(matches!(
        a.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
    store.epoch_down.store(false, Ordering::SeqCst);
    // Any request on that gate polls, and so announces; the other gate follows within
    // one interval, though the client's retried logout would find nothing left to do.
    let other = a.start_session(&member()).unwrap();
    a.authenticate(&other.access.token).await.unwrap();
    tokio::time::advance(POLL).await;
    assert!(matches!(
        b.authenticate(token).await,
        Err(GateError::Unauthorized)
    ));
}

#[tokio::test(start_paused = true)]
async fn with_the_store_down_one_read_per_interval_answers_every_request() {
    let store = Arc::new(Watched::default());
    let (gate, _) = two_gates(store.clone(), RevocationFallback::Deny);
    let session = gate.start_session(&member()).unwrap();
    gate.authenticate(&session.access.token).await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    tokio::time::advance(POLL).await;
    let before = store.reads.load(Ordering::SeqCst);
    for _ in 0..50 {
        assert!(matches!(
            gate.authenticate(&session.access.token).await,
            Err(GateError::StoreUnavailable(_))
        ));
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), before + 1);
    // Back up: within one interval the gate reads again, and passes.
    store.down.store(false, Ordering::SeqCst);
    tokio::time::advance(POLL).await;
    gate.authenticate(&session.access.token).await.unwrap();
}
