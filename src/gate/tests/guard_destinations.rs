//! Destination rules inside the engine: a refused destination is answered before the
//! store, the limits or the outbox see it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{UnreachableStore, gate_with, ip, send_to};
use crate::gate::{
    DestinationRefusal, Destinations, EmailDomains, GateError, IpLimits, SendRequest, Tenant,
};
use crate::identifier::Identifier;
use crate::otp::Rate;

/// SMS to GB numbers only, email anywhere but a disposable-mail domain.
fn strict_tenant() -> Tenant {
    Tenant {
        destinations: Destinations {
            sms_countries: Some(HashSet::from(["GB".to_owned()])),
            allow_voip: false,
            email_domains: EmailDomains::Except(Arc::new(HashSet::from([
                "mailinator.com".to_owned()
            ]))),
        },
        ..Tenant::new("default")
    }
}

fn refused() -> [(Identifier, DestinationRefusal); 4] {
    let phone = |n: &str| Identifier::phone(n).expect("a valid phone");
    [
        (phone("+14155552671"), DestinationRefusal::SmsCountry),
        (phone("+449012345678"), DestinationRefusal::NumberType),
        (phone("+447012345678"), DestinationRefusal::NumberType),
        (
            Identifier::email("pump@x.mailinator.com").expect("a valid email"),
            DestinationRefusal::EmailDomain,
        ),
    ]
}

#[tokio::test]
async fn a_refused_destination_is_answered_before_the_store() {
    // The store is down: a send that reached it (a limit counted, a cooldown started, a
    // code stored) would be StoreUnavailable.
    let mut fixture = gate_with(|builder| {
        builder
            .store(Arc::new(UnreachableStore))
            .tenant(strict_tenant())
    });
    for (identifier, refusal) in refused() {
        let sent = fixture.gate.send(send_to(&identifier)).await;
        assert!(
            matches!(sent, Err(GateError::DestinationRefused(r)) if r == refusal),
            "{identifier:?}: {sent:?}"
        );
    }
    // An allowed destination passes the rules and reaches the store.
    let allowed = Identifier::phone("+447400123456").expect("a valid phone");
    let sent = fixture.gate.send(send_to(&allowed)).await;
    assert!(
        matches!(sent, Err(GateError::StoreUnavailable(_))),
        "{sent:?}"
    );
    fixture.inbox.assert_empty();
}

#[tokio::test]
async fn a_refused_send_sends_nothing_and_counts_nothing() {
    let one_send = IpLimits {
        sends: Rate::new(1, Duration::from_secs(60)),
        ..IpLimits::default()
    };
    let mut fixture = gate_with(|builder| builder.ip_limits(one_send).tenant(strict_tenant()));
    let client = ip(1);
    for (identifier, refusal) in refused() {
        let sent = fixture
            .gate
            .send(SendRequest {
                client_ip: client,
                ..send_to(&identifier)
            })
            .await;
        assert!(
            matches!(sent, Err(GateError::DestinationRefused(r)) if r == refusal),
            "{identifier:?}: {sent:?}"
        );
        let status = sent.err().map(|error| error.status());
        assert_eq!(status, Some(http::StatusCode::BAD_REQUEST));
        fixture.inbox.assert_empty();
    }
    // The refusals used none of the client's one send: an allowed destination gets its
    // code, and only then is the client's budget spent.
    let allowed = Identifier::phone("+447400123456").expect("a valid phone");
    fixture
        .gate
        .send(SendRequest {
            client_ip: client,
            ..send_to(&allowed)
        })
        .await
        .expect("the allowed send is accepted");
    let message = fixture.inbox.next().await;
    assert_eq!(message.to, allowed);
    let other = Identifier::phone("+447400654321").expect("a valid phone");
    let again = fixture
        .gate
        .send(SendRequest {
            client_ip: client,
            ..send_to(&other)
        })
        .await;
    assert!(
        matches!(again, Err(GateError::RateLimited { .. })),
        "{again:?}"
    );
    fixture.inbox.assert_empty();
}
