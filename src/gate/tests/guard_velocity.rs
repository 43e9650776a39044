//! The SMS guard inside the engine, on the memory store: what it counts (only messages
//! handed to the sender), the pumping signature, the velocity caps and the budget.

use std::time::Duration;

use super::{Fixture, gate_with, send_to};
use crate::gate::{GateError, SmsGuard, Tenant, ThrottleReason};
use crate::identifier::Identifier;

fn number(prefix: &str, rest: u32) -> Identifier {
    Identifier::phone(&format!("+{prefix}{rest:04}")).expect("a valid phone")
}

/// The throttle of a refused send, or a failure.
async fn throttled(fixture: &Fixture, to: &Identifier) -> (ThrottleReason, Duration) {
    match fixture.gate.send(send_to(to)).await {
        Err(GateError::SendsThrottled {
            reason,
            retry_after,
        }) => (reason, retry_after),
        other => panic!("a throttled send to {}: {other:?}", to.as_str()),
    }
}

#[tokio::test]
async fn a_prefix_whose_codes_go_unverified_cools_down_and_others_do_not() {
    let cool_down = Duration::from_secs(600);
    let mut fixture =
        gate_with(|b| b.sms_guard(SmsGuard::recommended().with_pumping(5, 0.5, cool_down)));
    // Real users in +1 415 555: every code typed.
    for n in 0..8 {
        fixture.sign_in(&number("1415555", 2600 + n)).await;
    }
    // Five codes to +1 212 555 that nobody types: then its sixth is refused.
    for n in 0..5 {
        fixture.send_code(&number("1212555", 1000 + n)).await;
    }
    let (reason, retry_after) = throttled(&fixture, &number("1212555", 1100)).await;
    assert_eq!(reason, ThrottleReason::Pumping);
    assert_eq!(retry_after, cool_down);
    assert_eq!(reason.code(), "destination_throttled");
    // The whole prefix cools down, for what is left of the cool-down.
    fixture.clock.advance(Duration::from_secs(60));
    let (_, retry_after) = throttled(&fixture, &number("1212555", 1200)).await;
    assert_eq!(retry_after, cool_down - Duration::from_secs(60));
    fixture.inbox.assert_empty();
    // The healthy prefix is untouched, and so is a new one.
    fixture.send_code(&number("1415555", 2700)).await;
    fixture.send_code(&number("1646555", 1000)).await;
    // A verify is no send: it is never refused by the guard.
    fixture.clock.advance(Duration::from_secs(60));
    fixture.sign_in(&number("1415555", 2600)).await;
}

#[tokio::test]
async fn only_messages_handed_to_the_sender_count() {
    // A tenant of members only: codes to strangers are never delivered.
    let fixture = gate_with(|b| {
        b.tenant(Tenant {
            auto_create: false,
            ..Tenant::new("default")
        })
        .sms_guard(SmsGuard::recommended().with_prefix_cap(3))
    });
    for n in 0..10 {
        fixture
            .gate
            .send(send_to(&number("1415555", 2600 + n)))
            .await
            .expect("a stranger's send is answered like a member's");
    }
    fixture.decoys_dropped(10).await;

    let mut fixture = gate_with(|b| b.sms_guard(SmsGuard::recommended().with_prefix_cap(3)));
    let alice = number("1415555", 2671);
    fixture.send_code(&alice).await;
    // Inside the resend cooldown: refused by the code's own limit, not counted.
    for _ in 0..5 {
        assert!(matches!(
            fixture.gate.send(send_to(&alice)).await,
            Err(GateError::RateLimited { .. })
        ));
    }
    fixture.send_code(&number("1415555", 2672)).await;
    fixture.send_code(&number("1415555", 2673)).await;
    let (reason, _) = throttled(&fixture, &number("1415555", 2674)).await;
    assert_eq!(reason, ThrottleReason::Prefix);
    // Refused sends are not counted either: once the window has slid past the three
    // messages, sends go again.
    for _ in 0..20 {
        throttled(&fixture, &number("1415555", 2675)).await;
    }
    let (_, retry_after) = throttled(&fixture, &number("1415555", 2675)).await;
    fixture.clock.advance(retry_after);
    fixture.send_code(&number("1415555", 2676)).await;
}

#[tokio::test]
async fn a_country_cap_holds_with_its_retry_after() {
    let mut fixture = gate_with(|b| {
        b.sms_guard(
            SmsGuard::default()
                .with_window(Duration::from_secs(600))
                .with_country_cap(2),
        )
    });
    fixture.send_code(&number("1415555", 2600)).await;
    fixture.send_code(&number("1646555", 2600)).await;
    let (reason, retry_after) = throttled(&fixture, &number("1212555", 2600)).await;
    assert_eq!(reason, ThrottleReason::Country);
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1200));
    // Another country is another count.
    fixture
        .send_code(&Identifier::phone("+447400123456").unwrap())
        .await;
    fixture.clock.advance(retry_after);
    fixture.send_code(&number("1212555", 2600)).await;
}

#[tokio::test]
async fn budgets_hold_until_their_window_frees() {
    let mut fixture = gate_with(|b| b.sms_guard(SmsGuard::default().with_hourly_messages(2)));
    let now = fixture.gate.now();
    fixture.send_code(&number("1415555", 2600)).await;
    fixture.send_code(&number("1646555", 2600)).await;
    let (reason, retry_after) = throttled(&fixture, &number("1212555", 2600)).await;
    assert_eq!(reason, ThrottleReason::Budget);
    assert_eq!(reason.code(), "sms_budget_exhausted");
    // Until the UTC hour ends.
    let hour = 3_600_000;
    assert_eq!(
        retry_after.as_millis() as u64,
        hour - now.0 % hour,
        "until the hour's end"
    );
    // Email is never counted.
    fixture
        .send_code(&Identifier::email("a@example.com").unwrap())
        .await;
    fixture.clock.advance(retry_after);
    fixture.send_code(&number("1212555", 2600)).await;

    // In estimated cost: two messages of 0.05 fit in 0.10, a third does not.
    let mut fixture = gate_with(|b| {
        b.sms_guard(
            SmsGuard::default()
                .with_hourly_cost(0.10)
                .with_default_price(0.05),
        )
    });
    fixture.send_code(&number("1415555", 2600)).await;
    fixture.send_code(&number("1646555", 2600)).await;
    let (reason, _) = throttled(&fixture, &number("1212555", 2600)).await;
    assert_eq!(reason, ThrottleReason::Budget);
}
