//! The proof-of-work challenge inside the engine: a tenant that requires one refuses
//! sends without a valid, unspent, solved challenge, and sends nothing for them.

use super::{alice, gate_with, send_to};
use crate::gate::{
    ChallengeMode, ChallengePolicy, GateError, SendOptions, Tenant, solve_challenge,
};

fn challenged_tenant() -> Tenant {
    Tenant {
        challenge: ChallengePolicy {
            mode: ChallengeMode::Always,
            max_number: 2_000,
            ..ChallengePolicy::default()
        },
        ..Tenant::new("default")
    }
}

fn with(challenge: Option<&str>) -> SendOptions<'_> {
    SendOptions {
        challenge,
        ..SendOptions::default()
    }
}

#[tokio::test]
async fn a_tenant_that_requires_a_challenge_refuses_sends_without_a_solved_one() {
    let mut fixture = gate_with(|builder| builder.tenant(challenged_tenant()));
    let gate = &fixture.gate;
    let sent = gate.send(send_to(&alice())).await;
    assert!(
        matches!(sent, Err(GateError::ChallengeRequired)),
        "{sent:?}"
    );
    let sent = gate
        .send_with(send_to(&alice()), with(Some("bm90IGEgY2hhbGxlbmdl")))
        .await;
    assert!(matches!(sent, Err(GateError::ChallengeInvalid)), "{sent:?}");
    fixture.inbox.assert_empty();

    let challenge = gate.issue_challenge(None).expect("a challenge");
    let solved = solve_challenge(&challenge).expect("solvable");
    gate.send_with(send_to(&alice()), with(Some(&solved)))
        .await
        .expect("a solved challenge lets the send through");
    let message = fixture.inbox.next().await;
    assert_eq!(message.to.as_str(), "alice@example.com");

    // Spent: the same solution does not send again.
    let again = gate.send_with(send_to(&alice()), with(Some(&solved))).await;
    assert!(
        matches!(again, Err(GateError::ChallengeInvalid)),
        "{again:?}"
    );
    fixture.inbox.assert_empty();
}

#[tokio::test]
async fn a_tenant_without_challenges_ignores_one() {
    let mut fixture = gate_with(|builder| builder);
    fixture
        .gate
        .send_with(send_to(&alice()), with(Some("anything")))
        .await
        .expect("no challenge needed");
    fixture.inbox.next().await;
}

/// `under_attack`: no challenge while the SMS guard is quiet; one on every send once any
/// gate sharing the store raised its alert (read at most once a second).
#[tokio::test]
async fn an_under_attack_tenant_asks_for_challenges_only_while_the_guard_has_tripped() {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::store::{MemoryStore, SetMode, Store, keys};

    let store = Arc::new(MemoryStore::default());
    let tenant = Tenant {
        challenge: ChallengePolicy {
            mode: ChallengeMode::UnderAttack,
            max_number: 2_000,
            ..ChallengePolicy::default()
        },
        ..Tenant::new("default")
    };
    let mut fixture = gate_with(|builder| builder.store(store.clone()).tenant(tenant));
    let person =
        |n: u32| crate::identifier::Identifier::email(&format!("p{n}@example.com")).unwrap();
    fixture
        .gate
        .send(send_to(&person(1)))
        .await
        .expect("quiet: no challenge");
    fixture.inbox.next().await;

    // Another gate's guard tripped: it raised the alert in the shared store.
    store
        .set_value(
            keys::sms_guard_alert(),
            "1",
            Duration::from_secs(3600),
            SetMode::Always,
        )
        .await
        .unwrap();
    fixture.clock.advance(Duration::from_secs(1));
    let sent = fixture.gate.send(send_to(&person(2))).await;
    assert!(
        matches!(sent, Err(GateError::ChallengeRequired)),
        "{sent:?}"
    );
    let challenge = fixture.gate.issue_challenge(None).unwrap();
    let solved = solve_challenge(&challenge).unwrap();
    fixture
        .gate
        .send_with(send_to(&person(2)), with(Some(&solved)))
        .await
        .expect("a solved challenge passes");
    fixture.inbox.next().await;

    // The alert lapses with its cool-down: quiet again.
    store
        .set_value(
            keys::sms_guard_alert(),
            "1",
            Duration::from_millis(1),
            SetMode::Always,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    fixture.clock.advance(Duration::from_secs(1));
    fixture
        .gate
        .send(send_to(&person(3)))
        .await
        .expect("quiet again: no challenge");
}
