//! Sending and verifying codes: what a code proves, how long and how often it works, the
//! limits around it, unknown accounts, and refusals before and after the store.

use std::sync::Arc;
use std::time::Duration;

use super::{UnreachableStore, alice, gate, gate_with, ip, phone, send_to, verify_with, wrong};
use crate::delivery::Link;
use crate::directory::StaticDirectory;
use crate::gate::GateError;
use crate::gate::{IpLimits, SendRequest, Tenant, VerifyRequest};
use crate::identifier::{Channel, Identifier};
use crate::otp::{Backoff, CodePolicy, Rate};
use crate::token::Subject;

fn person(n: u8) -> Identifier {
    Identifier::email(&format!("person{n}@example.com")).expect("a valid email")
}

/// A default tenant that creates no accounts, and says so when `reveal_account`.
fn closed_tenant(reveal_account: bool) -> Tenant {
    Tenant {
        auto_create: false,
        reveal_account,
        ..Tenant::new("default")
    }
}

/// A directory that knows one person: `known` in the default tenant, as `member-1`.
fn directory_with(known: &Identifier) -> Arc<StaticDirectory> {
    Arc::new(StaticDirectory::new().with_account("default", known.clone(), "member-1"))
}

#[tokio::test]
async fn a_delivered_email_code_proves_the_email() {
    let mut fixture = gate();
    fixture.gate.send(send_to(&alice())).await.expect("sent");
    let message = fixture.inbox.next().await;
    assert_eq!(message.to, alice());
    assert_eq!(message.tenant, "default");
    assert_eq!(message.expires_in, fixture.gate.policy().ttl);

    let subject = fixture
        .gate
        .verify(verify_with(&alice(), message.code.expose()))
        .await
        .expect("the delivered code verifies");
    assert_eq!(
        subject,
        Subject {
            id: "alice@example.com".into(),
            email: Some("alice@example.com".into()),
            phone: None,
            tenant: "default".into(),
        }
    );
}

#[tokio::test]
async fn a_delivered_sms_code_proves_the_phone() {
    let mut fixture = gate();
    let subject = fixture.sign_in(&phone()).await;
    assert_eq!(
        subject,
        Subject {
            id: "+14155552671".into(),
            email: None,
            phone: Some("+14155552671".into()),
            tenant: "default".into(),
        }
    );
}

#[tokio::test]
async fn a_wrong_code_is_invalid_and_leaves_the_right_one_usable() {
    let mut fixture = gate();
    let code = fixture.send_code(&alice()).await;
    let refused = fixture
        .gate
        .verify(verify_with(&alice(), &wrong(&code)))
        .await;
    assert!(
        matches!(refused, Err(GateError::InvalidCode)),
        "{refused:?}"
    );
    let accepted = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(accepted.is_ok(), "{accepted:?}");
}

#[tokio::test]
async fn a_code_is_typed_with_spaces_and_dashes() {
    let mut fixture = gate();
    let code = fixture.send_code(&alice()).await;
    let (head, tail) = code.split_at(3);
    let typed = format!(" {head} - {tail} ");
    let accepted = fixture.gate.verify(verify_with(&alice(), &typed)).await;
    assert!(accepted.is_ok(), "{accepted:?}");
}

#[tokio::test]
async fn a_code_works_once() {
    let mut fixture = gate();
    let code = fixture.send_code(&alice()).await;
    let first = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(first.is_ok(), "{first:?}");
    let again = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(matches!(again, Err(GateError::InvalidCode)), "{again:?}");
}

#[tokio::test]
async fn a_code_works_until_its_ttl_and_not_after() {
    let mut fixture = gate();
    let ttl = fixture.gate.policy().ttl;

    let code = fixture.send_code(&alice()).await;
    fixture.clock.advance(ttl - Duration::from_secs(1));
    let in_time = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(in_time.is_ok(), "{in_time:?}");

    let code = fixture.send_code(&phone()).await;
    fixture.clock.advance(ttl);
    let late = fixture.gate.verify(verify_with(&phone(), &code)).await;
    assert!(matches!(late, Err(GateError::InvalidCode)), "{late:?}");
}

#[tokio::test]
async fn a_resend_waits_for_the_cooldown_and_replaces_the_code() {
    let mut fixture = gate();
    let cooldown = fixture.gate.policy().resend_cooldown;
    let first = fixture.send_code(&alice()).await;

    let early = fixture.gate.send(send_to(&alice())).await;
    assert!(
        matches!(early, Err(GateError::RateLimited { retry_after }) if retry_after == cooldown),
        "{early:?}"
    );
    fixture.clock.advance(Duration::from_secs(10));
    let still_early = fixture.gate.send(send_to(&alice())).await;
    assert!(
        matches!(still_early, Err(GateError::RateLimited { retry_after })
            if retry_after == cooldown - Duration::from_secs(10)),
        "{still_early:?}"
    );
    fixture.inbox.assert_empty();

    fixture.clock.advance(cooldown);
    let second = fixture.send_code(&alice()).await;
    if first != second {
        let replaced = fixture.gate.verify(verify_with(&alice(), &first)).await;
        assert!(
            matches!(replaced, Err(GateError::InvalidCode)),
            "{replaced:?}"
        );
    }
    let accepted = fixture.gate.verify(verify_with(&alice(), &second)).await;
    assert!(accepted.is_ok(), "{accepted:?}");
}

#[tokio::test]
async fn wrong_guesses_past_max_attempts_spend_the_code() {
    let mut fixture = gate();
    let policy = fixture.gate.policy().clone();
    let code = fixture.send_code(&alice()).await;
    for _ in 0..policy.max_attempts {
        let refused = fixture
            .gate
            .verify(verify_with(&alice(), &wrong(&code)))
            .await;
        assert!(
            matches!(refused, Err(GateError::InvalidCode)),
            "{refused:?}"
        );
    }
    // Past the free failures a backoff applies; wait it out to reach the code itself.
    fixture
        .clock
        .advance(policy.backoff.delay(policy.max_attempts));
    let spent = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(matches!(spent, Err(GateError::InvalidCode)), "{spent:?}");
    // A spent code cannot be swapped for a fresh one to reset the guesses.
    let resend = fixture.gate.send(send_to(&alice())).await;
    assert!(
        matches!(resend, Err(GateError::TooManyAttempts { .. })),
        "{resend:?}"
    );
}

#[tokio::test]
async fn the_failure_budget_locks_the_destination() {
    let memory = Duration::from_secs(3600);
    let mut fixture = gate_with(|builder| {
        builder.policy(CodePolicy {
            max_attempts: 10,
            failure_budget: 3,
            backoff: Backoff {
                free_failures: 10,
                ..CodePolicy::default().backoff
            },
            failure_memory: memory,
            ..CodePolicy::default()
        })
    });
    let code = fixture.send_code(&alice()).await;
    for _ in 0..3 {
        let refused = fixture
            .gate
            .verify(verify_with(&alice(), &wrong(&code)))
            .await;
        assert!(
            matches!(refused, Err(GateError::InvalidCode)),
            "{refused:?}"
        );
    }

    let locked = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(
        matches!(locked, Err(GateError::TooManyAttempts { retry_after }) if retry_after == memory),
        "the right code is refused too while locked: {locked:?}"
    );
    fixture.clock.advance(Duration::from_secs(60));
    let resend = fixture.gate.send(send_to(&alice())).await;
    assert!(
        matches!(resend, Err(GateError::TooManyAttempts { retry_after })
            if retry_after == memory - Duration::from_secs(60)),
        "{resend:?}"
    );
    // Another destination is not locked with it.
    fixture.send_code(&phone()).await;

    fixture.clock.advance(memory);
    let code = fixture.send_code(&alice()).await;
    let accepted = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(accepted.is_ok(), "{accepted:?}");
}

fn tight_ip_limits() -> IpLimits {
    IpLimits {
        sends: Rate::new(2, Duration::from_secs(60)),
        verifies: Rate::new(2, Duration::from_secs(60)),
    }
}

#[tokio::test]
async fn sends_from_one_address_are_limited() {
    let fixture = gate_with(|builder| builder.ip_limits(tight_ip_limits()));
    let from = |n: u8, last: u8| SendRequest {
        client_ip: ip(last),
        ..send_to(&person(n))
    };
    for n in 0..2 {
        let sent = fixture.gate.send(from(n, 1)).await;
        assert!(sent.is_ok(), "{sent:?}");
    }
    let limited = fixture.gate.send(from(2, 1)).await;
    assert!(
        matches!(limited, Err(GateError::RateLimited { retry_after }) if retry_after == Duration::from_secs(60)),
        "{limited:?}"
    );
    let elsewhere = fixture.gate.send(from(3, 2)).await;
    assert!(
        elsewhere.is_ok(),
        "another address has its own count: {elsewhere:?}"
    );

    fixture.clock.advance(Duration::from_secs(60));
    let next_window = fixture.gate.send(from(4, 1)).await;
    assert!(next_window.is_ok(), "{next_window:?}");
}

/// A directory that counts its lookups.
#[derive(Default)]
struct CountingDirectory(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl crate::directory::Directory for CountingDirectory {
    async fn find(
        &self,
        _tenant: &str,
        _identifier: &Identifier,
    ) -> Result<Option<crate::directory::Account>, crate::directory::DirectoryError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(None)
    }

    async fn find_by_id(
        &self,
        _tenant: &str,
        _id: &str,
    ) -> Result<Option<crate::directory::Account>, crate::directory::DirectoryError> {
        Ok(None)
    }
}

/// The directory may be the app itself, over HTTP: a client over its limit, or guessing
/// codes, makes the gate ask it nothing.
#[tokio::test]
async fn limited_sends_and_wrong_codes_never_ask_the_directory() {
    let directory = Arc::new(CountingDirectory::default());
    let fixture = gate_with(|builder| {
        builder
            .ip_limits(tight_ip_limits())
            .directory(directory.clone())
    });
    let lookups = || directory.0.load(std::sync::atomic::Ordering::SeqCst);
    let from = |n: u8| SendRequest {
        client_ip: ip(1),
        ..send_to(&person(n))
    };
    for n in 0..2 {
        fixture.gate.send(from(n)).await.unwrap();
    }
    assert_eq!(lookups(), 2, "each send within the limit asks once");
    let limited = fixture.gate.send(from(2)).await;
    assert!(
        matches!(limited, Err(GateError::RateLimited { .. })),
        "{limited:?}"
    );
    assert_eq!(lookups(), 2, "a limited send asks nothing");
    let wrong_code = fixture
        .gate
        .verify(VerifyRequest {
            client_ip: ip(2),
            ..verify_with(&person(0), "000000")
        })
        .await;
    assert!(
        matches!(wrong_code, Err(GateError::InvalidCode)),
        "{wrong_code:?}"
    );
    assert_eq!(lookups(), 2, "a wrong code asks nothing");
}

#[tokio::test]
async fn verifies_from_one_address_are_limited() {
    let fixture = gate_with(|builder| builder.ip_limits(tight_ip_limits()));
    let from = |n: u8, last: u8| VerifyRequest {
        client_ip: ip(last),
        ..verify_with(&person(n), "123456")
    };
    for n in 0..2 {
        let refused = fixture.gate.verify(from(n, 1)).await;
        assert!(
            matches!(refused, Err(GateError::InvalidCode)),
            "{refused:?}"
        );
    }
    let limited = fixture.gate.verify(from(2, 1)).await;
    assert!(
        matches!(limited, Err(GateError::RateLimited { .. })),
        "{limited:?}"
    );
    let elsewhere = fixture.gate.verify(from(3, 2)).await;
    assert!(
        matches!(elsewhere, Err(GateError::InvalidCode)),
        "another address has its own count: {elsewhere:?}"
    );
}

#[tokio::test]
async fn an_unknown_tenant_is_refused() {
    let fixture = gate();
    let sent = fixture
        .gate
        .send(SendRequest {
            tenant: Some("nope"),
            ..send_to(&alice())
        })
        .await;
    assert!(matches!(sent, Err(GateError::UnknownTenant)), "{sent:?}");
    let verified = fixture
        .gate
        .verify(VerifyRequest {
            tenant: Some("nope"),
            ..verify_with(&alice(), "123456")
        })
        .await;
    assert!(
        matches!(verified, Err(GateError::UnknownTenant)),
        "{verified:?}"
    );
}

#[tokio::test]
async fn a_channel_the_tenant_does_not_offer_is_refused() {
    let mut fixture = gate_with(|builder| {
        builder.tenant(Tenant {
            channels: vec![Channel::Email],
            ..Tenant::new("default")
        })
    });
    let sent = fixture.gate.send(send_to(&phone())).await;
    assert!(
        matches!(sent, Err(GateError::ChannelDisabled(Channel::Sms))),
        "{sent:?}"
    );
    let verified = fixture.gate.verify(verify_with(&phone(), "123456")).await;
    assert!(
        matches!(verified, Err(GateError::ChannelDisabled(Channel::Sms))),
        "{verified:?}"
    );
    fixture.inbox.assert_empty();
    let email = fixture.gate.send(send_to(&alice())).await;
    assert!(email.is_ok(), "{email:?}");
}

#[tokio::test]
async fn an_unknown_account_gets_a_decoy_that_is_never_delivered() {
    let member = person(1);
    let mut fixture = gate_with(|builder| {
        builder
            .tenant(closed_tenant(false))
            .directory(directory_with(&member))
    });
    let outcome = fixture
        .gate
        .send(send_to(&alice()))
        .await
        .expect("the answer does not tell the account is unknown");
    assert_eq!(outcome.account_exists, None);
    fixture.decoys_dropped(1).await;

    // The member's code is the first and only message: the stranger's never went out.
    let member_code = fixture.send_code(&member).await;
    fixture.inbox.assert_empty();
    assert_eq!(fixture.gate.decoys_dropped(), 1);

    let subject = fixture
        .gate
        .verify(verify_with(&member, &member_code))
        .await
        .expect("the member signs in");
    assert_eq!(subject.id, "member-1");
}

#[tokio::test]
async fn a_revealing_tenant_says_whether_the_account_exists() {
    let member = person(1);
    let fixture = gate_with(|builder| {
        builder
            .tenant(closed_tenant(true))
            .directory(directory_with(&member))
    });
    let unknown = fixture.gate.send(send_to(&alice())).await;
    assert!(
        matches!(unknown, Err(GateError::AccountNotFound)),
        "{unknown:?}"
    );
    let known = fixture.gate.send(send_to(&member)).await.expect("sent");
    assert_eq!(known.account_exists, Some(true));
}

#[tokio::test]
async fn an_auto_created_account_is_remembered() {
    let mut fixture = gate_with(|builder| {
        builder.tenant(Tenant {
            reveal_account: true,
            ..Tenant::new("default")
        })
    });
    let before = fixture.gate.send(send_to(&alice())).await.expect("sent");
    assert_eq!(before.account_exists, Some(false));
    let code = fixture.inbox.code().await;
    fixture
        .gate
        .verify(verify_with(&alice(), &code))
        .await
        .expect("signed in");

    let account = fixture
        .gate
        .find_account("default", &alice())
        .await
        .expect("the store answers")
        .expect("the account was created");
    assert_eq!(account.subject, "alice@example.com");
    assert_eq!(account.email.as_deref(), Some("alice@example.com"));

    fixture.clock.advance(fixture.gate.policy().resend_cooldown);
    let after = fixture.gate.send(send_to(&alice())).await.expect("sent");
    assert_eq!(after.account_exists, Some(true));
}

#[tokio::test]
async fn a_malformed_code_is_refused_before_the_store() {
    // The store is down: anything that reached it would be a StoreUnavailable.
    let fixture = gate_with(|builder| builder.store(Arc::new(UnreachableStore)));
    let too_long = "1".repeat(65);
    for typed in [too_long.as_str(), "", " - "] {
        let refused = fixture.gate.verify(verify_with(&alice(), typed)).await;
        assert!(
            matches!(refused, Err(GateError::InvalidRequest(_))),
            "{typed:?}: {refused:?}"
        );
    }
    let well_formed = fixture.gate.verify(verify_with(&alice(), "123456")).await;
    assert!(
        matches!(well_formed, Err(GateError::StoreUnavailable(_))),
        "{well_formed:?}"
    );
}

#[tokio::test]
async fn a_store_outage_is_store_unavailable() {
    let mut fixture = gate_with(|builder| builder.store(Arc::new(UnreachableStore)));
    let sent = fixture.gate.send(send_to(&alice())).await;
    assert!(
        matches!(sent, Err(GateError::StoreUnavailable(_))),
        "{sent:?}"
    );
    let found = fixture.gate.find_account("default", &alice()).await;
    assert!(
        matches!(found, Err(GateError::StoreUnavailable(_))),
        "{found:?}"
    );
    fixture.inbox.assert_empty();
}

/// Where sign-in links in the tests lead.
const LINK_PREFIX: &str = "https://app.example/sign-in?code=";

#[tokio::test]
async fn an_email_sent_with_a_link_carries_the_code_in_it() {
    let mut fixture = gate();
    fixture
        .gate
        .send_with_link(send_to(&alice()), LINK_PREFIX)
        .await
        .expect("sent");
    let message = fixture.inbox.next().await;
    let code = message.code.expose().to_owned();
    let link = format!("{LINK_PREFIX}{code}");
    assert_eq!(message.link.as_ref().map(Link::expose), Some(link.as_str()));
    assert!(
        message
            .content
            .text
            .contains(&format!("Or sign in with this link: {link}")),
        "{}",
        message.content.text
    );
    assert!(
        message.content.text.contains(&format!("code is {code}.")),
        "{}",
        message.content.text
    );
    // HTML escapes the slashes; the code is still in the address.
    assert!(
        message.content.html.contains("Or sign in with this link:")
            && message.content.html.contains(&format!("code={code}\"")),
        "{}",
        message.content.html
    );
    assert!(!message.content.subject.contains("http"));

    // The link's code is the code: it signs in once.
    let subject = fixture.gate.verify(verify_with(&alice(), &code)).await;
    assert!(subject.is_ok(), "{subject:?}");
}

#[tokio::test]
async fn sms_and_plain_sends_carry_no_link() {
    let mut fixture = gate();
    fixture
        .gate
        .send_with_link(send_to(&phone()), LINK_PREFIX)
        .await
        .expect("sent");
    let sms = fixture.inbox.next().await;
    assert!(sms.link.is_none());
    assert!(!sms.content.text.contains("http"), "{}", sms.content.text);

    fixture.gate.send(send_to(&person(2))).await.expect("sent");
    let email = fixture.inbox.next().await;
    assert!(email.link.is_none());
    for body in [&email.content.text, &email.content.html] {
        assert!(!body.contains("link"), "{body}");
    }
}

#[tokio::test]
async fn an_unknown_account_sent_a_link_gets_a_decoy_like_any_other() {
    let member = person(1);
    let mut fixture = gate_with(|builder| {
        builder
            .tenant(closed_tenant(false))
            .directory(directory_with(&member))
    });
    let stranger = fixture
        .gate
        .send_with_link(send_to(&alice()), LINK_PREFIX)
        .await
        .expect("the answer does not tell the account is unknown");
    fixture.decoys_dropped(1).await;
    let known = fixture
        .gate
        .send_with_link(send_to(&member), LINK_PREFIX)
        .await
        .expect("sent");
    assert_eq!(stranger, known);
    let message = fixture.inbox.next().await;
    assert_eq!(message.to, member);
    assert!(message.link.is_some());
    fixture.inbox.assert_empty();
}

#[tokio::test]
async fn a_delivered_message_debugs_without_its_code_or_link() {
    let mut fixture = gate();
    fixture
        .gate
        .send_with_link(send_to(&alice()), LINK_PREFIX)
        .await
        .expect("sent");
    let message = fixture.inbox.next().await;
    let shown = format!("{message:?}");
    assert!(!shown.contains(message.code.expose()), "{shown}");
    assert!(!shown.contains(LINK_PREFIX), "{shown}");
    assert!(shown.contains("Link(<redacted>)"), "{shown}");
}
