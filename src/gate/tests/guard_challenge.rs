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
