//! Sessions: access tokens and their revocation, refresh rotation and reuse, one-time
//! exchange tokens, lifetimes on the gate's clock, and what a store outage lets through.

use std::sync::Arc;
use std::time::Duration;

use super::{Fixture, UnreachableStore, alice, gate, gate_with};
use crate::gate::GateError;
use crate::gate::RevocationFallback;
use crate::token::{Subject, TokenSettings};

fn member() -> Subject {
    Subject {
        id: "member-1".into(),
        email: Some("member@example.com".into()),
        phone: None,
        tenant: "default".into(),
    }
}

/// The refresh token of a session; sessions here always have one.
fn refresh_token(session: &crate::gate::Session) -> &str {
    &session
        .refresh
        .as_ref()
        .expect("refresh tokens are on by default")
        .token
}

async fn assert_authenticates(fixture: &Fixture, token: &str, subject: &str) {
    let identity = fixture.gate.authenticate(token).await;
    match identity {
        Ok(identity) => assert_eq!(identity.subject(), subject),
        Err(error) => panic!("expected {subject} to authenticate, got {error:?}"),
    }
}

async fn assert_unauthorized(fixture: &Fixture, token: &str) {
    let refused = fixture.gate.authenticate(token).await;
    assert!(
        matches!(refused, Err(GateError::Unauthorized)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_fresh_access_token_authenticates_as_its_subject() {
    let mut fixture = gate();
    let subject = fixture.sign_in(&alice()).await;
    let session = fixture.gate.start_session(&subject).expect("a session");
    assert_eq!(
        session.access.expires_in,
        fixture.gate.tokens().settings().ttl.as_secs()
    );

    let identity = fixture
        .gate
        .authenticate(&session.access.token)
        .await
        .expect("authenticated");
    assert_eq!(identity.subject(), "alice@example.com");
    assert_eq!(identity.email(), Some("alice@example.com"));
    assert_eq!(identity.phone(), None);
    assert_eq!(identity.tenant(), "default");
    assert_eq!(&*identity.token, session.access.token);
}

#[tokio::test]
async fn anything_but_an_access_token_is_unauthorized() {
    let fixture = gate();
    let session = fixture.gate.start_session(&member()).expect("a session");
    let exchange = fixture
        .gate
        .mint_exchange_token(&member())
        .expect("an exchange token");
    assert_unauthorized(&fixture, "not.a.token").await;
    assert_unauthorized(&fixture, "").await;
    assert_unauthorized(&fixture, refresh_token(&session)).await;
    assert_unauthorized(&fixture, &exchange.token).await;

    // Signed by another gate's key.
    let stranger = gate();
    let foreign = stranger.gate.start_session(&member()).expect("a session");
    assert_unauthorized(&fixture, &foreign.access.token).await;
}

#[tokio::test]
async fn a_revoked_access_token_is_unauthorized() {
    let fixture = gate();
    let revoked = fixture.gate.start_session(&member()).expect("a session");
    let kept = fixture.gate.start_session(&member()).expect("a session");
    // Authenticated once first, so a cached verification cannot skip the revocation.
    let identity = fixture
        .gate
        .authenticate(&revoked.access.token)
        .await
        .expect("authenticated");

    fixture
        .gate
        .revoke_access(&identity.claims)
        .await
        .expect("revoked");
    assert_unauthorized(&fixture, &revoked.access.token).await;
    assert_authenticates(&fixture, &kept.access.token, "member-1").await;
}

#[tokio::test]
async fn a_refresh_rotates_and_a_reused_refresh_token_revokes_its_family() {
    let fixture = gate();
    let first = fixture.gate.start_session(&member()).expect("a session");
    let second = fixture
        .gate
        .refresh(refresh_token(&first))
        .await
        .expect("rotated");
    assert_ne!(refresh_token(&second), refresh_token(&first));
    assert_ne!(second.access.token, first.access.token);
    let family = |session: &crate::gate::Session| {
        session
            .refresh
            .as_ref()
            .and_then(|minted| minted.claims.fam.clone())
    };
    assert!(family(&first).is_some());
    assert_eq!(family(&second), family(&first));
    assert_authenticates(&fixture, &second.access.token, "member-1").await;

    let reused = fixture.gate.refresh(refresh_token(&first)).await;
    assert!(matches!(reused, Err(GateError::InvalidToken)), "{reused:?}");
    let newer = fixture.gate.refresh(refresh_token(&second)).await;
    assert!(
        matches!(newer, Err(GateError::InvalidToken)),
        "the whole family is revoked: {newer:?}"
    );

    // Another family is untouched.
    let other = fixture.gate.start_session(&member()).expect("a session");
    let rotated = fixture.gate.refresh(refresh_token(&other)).await;
    assert!(rotated.is_ok(), "{rotated:?}");
}

#[tokio::test]
async fn a_revoked_refresh_token_cannot_be_rotated() {
    let fixture = gate();
    let session = fixture.gate.start_session(&member()).expect("a session");
    fixture
        .gate
        .revoke_refresh(refresh_token(&session))
        .await
        .expect("revoked");
    let refused = fixture.gate.refresh(refresh_token(&session)).await;
    assert!(
        matches!(refused, Err(GateError::InvalidToken)),
        "{refused:?}"
    );
    let not_refresh = fixture.gate.refresh(&session.access.token).await;
    assert!(
        matches!(not_refresh, Err(GateError::InvalidToken)),
        "{not_refresh:?}"
    );
}

#[tokio::test]
async fn without_a_refresh_lifetime_sessions_have_no_refresh_token() {
    let fixture = gate_with(|builder| {
        builder.token_settings(TokenSettings {
            refresh_ttl: None,
            ..TokenSettings::default()
        })
    });
    let session = fixture.gate.start_session(&member()).expect("a session");
    assert!(session.refresh.is_none());
    assert_authenticates(&fixture, &session.access.token, "member-1").await;
}

#[tokio::test]
async fn an_exchange_token_buys_one_session() {
    let fixture = gate();
    let exchange = fixture
        .gate
        .mint_exchange_token(&member())
        .expect("an exchange token");
    let session = fixture
        .gate
        .exchange(&exchange.token, None)
        .await
        .expect("exchanged");
    assert_eq!(
        session.access.expires_in,
        fixture.gate.tokens().settings().ttl.as_secs()
    );
    assert_authenticates(&fixture, &session.access.token, "member-1").await;

    let again = fixture.gate.exchange(&exchange.token, None).await;
    assert!(matches!(again, Err(GateError::InvalidToken)), "{again:?}");
    let access = fixture.gate.exchange(&session.access.token, None).await;
    assert!(
        matches!(access, Err(GateError::InvalidToken)),
        "an access token is not an exchange token: {access:?}"
    );
}

#[tokio::test]
async fn valid_for_shortens_the_exchanged_session_but_never_lengthens_it() {
    let fixture = gate();
    let ttl = fixture.gate.tokens().settings().ttl;
    let mint = || {
        fixture
            .gate
            .mint_exchange_token(&member())
            .expect("an exchange token")
            .token
    };

    let long = fixture
        .gate
        .exchange(&mint(), Some(ttl * 24))
        .await
        .expect("exchanged");
    assert_eq!(long.access.expires_in, ttl.as_secs());

    let short = fixture
        .gate
        .exchange(&mint(), Some(Duration::from_secs(60)))
        .await
        .expect("exchanged");
    assert_eq!(short.access.expires_in, 60);
    let leeway = fixture.gate.tokens().settings().leeway;
    fixture.clock.advance(Duration::from_secs(60) + leeway);
    assert_unauthorized(&fixture, &short.access.token).await;
    assert_authenticates(&fixture, &long.access.token, "member-1").await;
}

#[tokio::test]
async fn tokens_expire_on_the_gate_clock() {
    let fixture = gate();
    let settings = fixture.gate.tokens().settings().clone();
    let session = fixture.gate.start_session(&member()).expect("a session");
    let exchange = fixture
        .gate
        .mint_exchange_token(&member())
        .expect("an exchange token");

    fixture.clock.advance(settings.ttl - Duration::from_secs(1));
    assert_authenticates(&fixture, &session.access.token, "member-1").await;
    fixture
        .clock
        .advance(settings.leeway + Duration::from_secs(1));
    assert_unauthorized(&fixture, &session.access.token).await;

    // ttl is past exchange_ttl + leeway already.
    assert!(settings.ttl > settings.exchange_ttl + settings.leeway);
    let late = fixture.gate.exchange(&exchange.token, None).await;
    assert!(matches!(late, Err(GateError::InvalidToken)), "{late:?}");

    let refresh_ttl = settings.refresh_ttl.expect("refresh tokens are on");
    fixture.clock.advance(refresh_ttl);
    let stale = fixture.gate.refresh(refresh_token(&session)).await;
    assert!(matches!(stale, Err(GateError::InvalidToken)), "{stale:?}");
}

#[tokio::test]
async fn an_assertion_is_a_one_minute_access_token() {
    let fixture = gate();
    let assertion = fixture.gate.mint_assertion(&member()).expect("minted");
    assert_eq!(assertion.expires_in, 60);
    assert_authenticates(&fixture, &assertion.token, "member-1").await;
    let leeway = fixture.gate.tokens().settings().leeway;
    fixture.clock.advance(Duration::from_secs(60) + leeway);
    assert_unauthorized(&fixture, &assertion.token).await;
}

#[tokio::test]
async fn an_outage_lets_valid_tokens_through_when_the_fallback_allows() {
    let fixture = gate_with(|builder| {
        builder
            .store(Arc::new(UnreachableStore))
            .revocation_fallback(RevocationFallback::Allow)
    });
    let session = fixture.gate.start_session(&member()).expect("a session");
    assert_authenticates(&fixture, &session.access.token, "member-1").await;
    // Only the revocation check is skipped: the signature still is not.
    assert_unauthorized(&fixture, "not.a.token").await;
    let refresh = fixture.gate.refresh(refresh_token(&session)).await;
    assert!(
        matches!(refresh, Err(GateError::StoreUnavailable(_))),
        "a rotation needs the store: {refresh:?}"
    );
}

#[tokio::test]
async fn an_outage_refuses_every_token_when_the_fallback_denies() {
    let fixture = gate_with(|builder| {
        builder
            .store(Arc::new(UnreachableStore))
            .revocation_fallback(RevocationFallback::Deny)
    });
    let session = fixture.gate.start_session(&member()).expect("a session");
    let refused = fixture.gate.authenticate(&session.access.token).await;
    assert!(
        matches!(refused, Err(GateError::StoreUnavailable(_))),
        "{refused:?}"
    );
    assert_unauthorized(&fixture, "not.a.token").await;
}

#[tokio::test]
async fn refreshes_and_exchanges_keep_the_time_of_the_sign_in() {
    let fixture = gate();
    let first = fixture.gate.start_session(&member()).expect("a session");
    let signed_in = first.access.claims.auth_time;
    let exchange = fixture
        .gate
        .mint_exchange_token(&member())
        .expect("an exchange token");
    fixture.clock.advance(Duration::from_secs(60));

    // A rotation is no new sign-in: a maximum session age counts from the code.
    let rotated = fixture
        .gate
        .refresh(refresh_token(&first))
        .await
        .expect("rotated");
    assert_eq!(rotated.access.claims.auth_time, signed_in);
    assert!(rotated.access.claims.iat >= signed_in + 60);
    let refresh_claims = &rotated.refresh.as_ref().expect("a refresh token").claims;
    assert_eq!(refresh_claims.auth_time, signed_in);
    let again = fixture
        .gate
        .refresh(refresh_token(&rotated))
        .await
        .expect("rotated again");
    assert_eq!(again.access.claims.auth_time, signed_in);

    let exchanged = fixture
        .gate
        .exchange(&exchange.token, None)
        .await
        .expect("exchanged");
    assert_eq!(exchanged.access.claims.auth_time, signed_in);
}
