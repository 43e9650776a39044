//! Tokens: minting, verifying, kinds, keys and the verified-token cache.

use super::*;
use crate::util::base64url;

fn subject() -> Subject {
    Subject {
        id: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        phone: None,
        tenant: "default".into(),
    }
}

fn tokens(algorithm: SigningAlgorithm) -> Tokens {
    Tokens::new(
        SigningKey::generate(algorithm).unwrap().0,
        TokenSettings::default(),
    )
}

const NOW: Timestamp = Timestamp(1_700_000_000_000);

#[test]
fn minted_tokens_verify_for_every_algorithm() {
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
        SigningAlgorithm::HS256,
    ] {
        let tokens = tokens(algorithm);
        let minted = tokens.mint(&subject(), NOW).unwrap();
        let claims = tokens.verify(&minted.token, NOW).unwrap();
        assert_eq!(claims.sub, "alice@example.com");
        assert_eq!(claims.amr, vec!["otp".to_string()]);
        assert_eq!(claims.exp, NOW.as_secs() + 3600);
        assert_eq!(claims.tenant, "default");
        let header = jsonwebtoken::decode_header(&minted.token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(tokens.key().kid()));
    }
}

#[test]
fn expired_and_future_tokens_are_refused_even_from_the_cache() {
    let tokens = tokens(SigningAlgorithm::EdDSA);
    let minted = tokens.mint(&subject(), NOW).unwrap();
    tokens.verify(&minted.token, NOW).unwrap();
    let later = NOW.plus(Duration::from_secs(3600 + 5));
    assert_eq!(
        tokens.verify(&minted.token, later),
        Err(TokenError::Expired)
    );
    let fresh = tokens
        .mint(&subject(), NOW.plus(Duration::from_secs(600)))
        .unwrap();
    assert_eq!(
        tokens.verify(&fresh.token, NOW),
        Err(TokenError::NotYetValid)
    );
    // Within the leeway both pass.
    assert!(
        tokens
            .verify(&fresh.token, NOW.plus(Duration::from_secs(596)))
            .is_ok()
    );
}

#[test]
fn alg_none_is_refused() {
    let tokens = tokens(SigningAlgorithm::EdDSA);
    let minted = tokens.mint(&subject(), NOW).unwrap();
    let payload = minted.token.split('.').nth(1).unwrap();
    for alg in ["none", "None", "NONE"] {
        let header = base64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        for forged in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(tokens.verify(&forged, NOW).is_err(), "{alg}: {forged}");
        }
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    // The classic confusion: an HS256 token whose secret is the published public key.
    let tokens = tokens(SigningAlgorithm::RS256);
    let jwks = String::from_utf8(tokens.jwks().to_vec()).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(tokens.key().kid().to_owned());
    let claims = tokens.mint(&subject(), NOW).unwrap().claims;
    let forged = jsonwebtoken::encode(
        &header,
        &*claims,
        &jsonwebtoken::EncodingKey::from_secret(jwks.as_bytes()),
    )
    .unwrap();
    assert_eq!(tokens.verify(&forged, NOW), Err(TokenError::WrongAlgorithm));
}

#[test]
fn another_algorithm_or_key_is_refused() {
    let ed = tokens(SigningAlgorithm::EdDSA);
    let es = tokens(SigningAlgorithm::ES256);
    let other_ed = tokens(SigningAlgorithm::EdDSA);
    let from_es = es.mint(&subject(), NOW).unwrap();
    assert_eq!(
        ed.verify(&from_es.token, NOW),
        Err(TokenError::WrongAlgorithm)
    );
    let from_other = other_ed.mint(&subject(), NOW).unwrap();
    assert_eq!(
        ed.verify(&from_other.token, NOW),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn wrong_audience_or_issuer_is_refused() {
    let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let ours = Tokens::new(key.clone(), TokenSettings::default());
    let other_aud = Tokens::new(
        key.clone(),
        TokenSettings {
            audience: "other-app".into(),
            ..TokenSettings::default()
        },
    );
    let other_iss = Tokens::new(
        key,
        TokenSettings {
            issuer: "someone-else".into(),
            ..TokenSettings::default()
        },
    );
    let t = other_aud.mint(&subject(), NOW).unwrap();
    assert!(matches!(
        ours.verify(&t.token, NOW),
        Err(TokenError::Invalid(_))
    ));
    let t = other_iss.mint(&subject(), NOW).unwrap();
    assert!(matches!(
        ours.verify(&t.token, NOW),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn tampered_and_garbage_tokens_are_refused() {
    let tokens = tokens(SigningAlgorithm::EdDSA);
    let minted = tokens.mint(&subject(), NOW).unwrap();
    let mut parts: Vec<String> = minted.token.split('.').map(str::to_owned).collect();
    let mut claims = (*minted.claims).clone();
    claims.sub = "mallory@example.com".into();
    parts[1] = base64url(&serde_json::to_vec(&claims).unwrap());
    assert!(tokens.verify(&parts.join("."), NOW).is_err());
    for garbage in ["", "a.b.c", "....", "x", &"a".repeat(10_000)] {
        assert!(tokens.verify(garbage, NOW).is_err(), "{garbage:.20}");
    }
}

#[test]
fn kinds_never_stand_in_for_each_other() {
    let tokens = tokens(SigningAlgorithm::EdDSA);
    let kinds = [TokenKind::Access, TokenKind::Refresh, TokenKind::Exchange];
    for minted_as in kinds {
        let token = tokens
            .mint_kind(minted_as, &subject(), NOW, None, Some("f".into()))
            .unwrap()
            .token;
        for checked_as in kinds {
            let result = tokens.verify_kind(checked_as, &token, NOW);
            assert_eq!(
                result.is_ok(),
                minted_as == checked_as,
                "{minted_as:?} as {checked_as:?}"
            );
        }
    }
    let refresh = tokens
        .mint_kind(
            TokenKind::Refresh,
            &subject(),
            NOW,
            None,
            Some("fam-1".into()),
        )
        .unwrap();
    assert_eq!(refresh.expires_in, 30 * 24 * 3600);
    assert_eq!(refresh.claims.fam.as_deref(), Some("fam-1"));
    assert!(
        tokens.verify(&refresh.token, NOW).is_err(),
        "a refresh token is no access token"
    );
    let short = tokens
        .mint_kind(
            TokenKind::Access,
            &subject(),
            NOW,
            Some(Duration::from_secs(60)),
            None,
        )
        .unwrap();
    assert_eq!(short.expires_in, 60);
}

#[test]
fn jwks_publishes_the_public_key_only() {
    let tokens = tokens(SigningAlgorithm::EdDSA);
    let jwks: serde_json::Value = serde_json::from_slice(tokens.jwks()).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["kid"], tokens.key().kid());
    assert_eq!(key["use"], "sig");
    assert!(key.get("d").is_none(), "no private part");
    let hs = super::tests::tokens(SigningAlgorithm::HS256);
    assert_eq!(&hs.jwks()[..], br#"{"keys":[]}"#);
}
