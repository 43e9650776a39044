//! The second factor after an app's own login: where its code goes, sending it, and the
//! assertion a right code buys.

use std::sync::Arc;

use super::{Fixture, gate, gate_with, wrong};
use crate::directory::{Account, StaticDirectory};
use crate::gate::GateError;
use crate::gate::PendingSecondFactor;
use crate::otp::Clock;

const PHONE: &str = "+14155552671";
const DIRECTORY_PHONE: &str = "+14155550123";

/// Sends `user`'s pending code and returns it as delivered, checking where it went.
async fn send_second_factor(fixture: &mut Fixture, user: &str, phone: &str) -> String {
    fixture
        .gate
        .send_second_factor(user, None, None)
        .await
        .expect("the pending code is sent");
    let message = fixture.inbox.next().await;
    assert_eq!(message.to.as_str(), phone);
    message.code.expose().to_owned()
}

fn directory() -> Arc<StaticDirectory> {
    Arc::new(StaticDirectory::new().with_user(
        "default",
        Account {
            subject: "user-7".into(),
            email: None,
            phone: Some(DIRECTORY_PHONE.into()),
        },
    ))
}

#[tokio::test]
async fn a_right_code_buys_an_assertion_for_the_user_and_phone() {
    let mut fixture = gate();
    fixture
        .gate
        .await_second_factor("login-1", "user-7", Some(PHONE))
        .await
        .expect("awaiting");
    let pending = fixture
        .gate
        .pending_second_factor("login-1")
        .await
        .expect("the store answers");
    assert_eq!(
        pending,
        Some(PendingSecondFactor {
            user_id: "user-7".into(),
            phone: PHONE.into(),
        })
    );

    let code = send_second_factor(&mut fixture, "user-7", PHONE).await;
    let assertion = fixture
        .gate
        .verify_second_factor("login-1", &code, None)
        .await
        .expect("the right code passes");
    assert_eq!(assertion.expires_in, 60);

    let claims = fixture
        .gate
        .tokens()
        .verify(&assertion.token, fixture.clock.now())
        .expect("the assertion is a valid token of this gate");
    assert_eq!(claims.sub, "user-7");
    assert_eq!(claims.phone.as_deref(), Some(PHONE));
    assert_eq!(claims.tenant, "default");
}

#[tokio::test]
async fn a_wrong_code_buys_nothing() {
    let mut fixture = gate();
    fixture
        .gate
        .await_second_factor("login-1", "user-7", Some(PHONE))
        .await
        .expect("awaiting");
    let code = send_second_factor(&mut fixture, "user-7", PHONE).await;
    let refused = fixture
        .gate
        .verify_second_factor("login-1", &wrong(&code), None)
        .await;
    assert!(
        matches!(refused, Err(GateError::InvalidCode)),
        "{refused:?}"
    );
    let other_login = fixture
        .gate
        .verify_second_factor("login-2", &code, None)
        .await;
    assert!(
        matches!(other_login, Err(GateError::InvalidCode)),
        "a code belongs to its own login: {other_login:?}"
    );
}

#[tokio::test]
async fn without_a_pending_login_every_code_is_invalid() {
    let mut fixture = gate();
    let refused = fixture
        .gate
        .verify_second_factor("login-1", "123456", None)
        .await;
    assert!(
        matches!(refused, Err(GateError::InvalidCode)),
        "{refused:?}"
    );
    let pending = fixture.gate.pending_second_factor("login-1").await;
    assert!(matches!(pending, Ok(None)), "{pending:?}");
    let unsent = fixture.gate.send_second_factor("user-7", None, None).await;
    assert!(
        matches!(unsent, Err(GateError::InvalidRequest(_))),
        "{unsent:?}"
    );
    fixture.inbox.assert_empty();
}

#[tokio::test]
async fn a_masked_phone_falls_back_to_the_directory() {
    let mut fixture = gate_with(|builder| builder.directory(directory()));
    fixture
        .gate
        .await_second_factor("login-1", "user-7", Some("+1 ***-***-2671"))
        .await
        .expect("the directory knows the phone");
    let code = send_second_factor(&mut fixture, "user-7", DIRECTORY_PHONE).await;
    let assertion = fixture
        .gate
        .verify_second_factor("login-1", &code, None)
        .await
        .expect("the right code passes");
    assert_eq!(assertion.claims.phone.as_deref(), Some(DIRECTORY_PHONE));

    fixture
        .gate
        .await_second_factor("login-2", "user-7", None)
        .await
        .expect("no phone at all also falls back");
    let pending = fixture
        .gate
        .pending_second_factor("login-2")
        .await
        .expect("the store answers")
        .expect("a login is waiting");
    assert_eq!(pending.phone, DIRECTORY_PHONE);
}

#[tokio::test]
async fn with_no_phone_anywhere_the_request_is_invalid() {
    let fixture = gate_with(|builder| builder.directory(directory()));
    for phone in [Some("+1 ***-***-2671"), None] {
        let refused = fixture
            .gate
            .await_second_factor("login-1", "user-unknown", phone)
            .await;
        assert!(
            matches!(refused, Err(GateError::InvalidRequest(_))),
            "{phone:?}: {refused:?}"
        );
    }
    let pending = fixture.gate.pending_second_factor("login-1").await;
    assert!(matches!(pending, Ok(None)), "{pending:?}");
}
