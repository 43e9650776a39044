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
    for algorithm in SigningAlgorithm::ALL {
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

/// The SPKI public PEM of a PKCS#8 private key, as `openssl pkey -pubout` writes it.
fn public_pem(algorithm: SigningAlgorithm, private_pem: &str) -> String {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    };
    let der = pem::parse(private_pem).unwrap().into_contents();
    let spki: PublicKeyX509Der<'static> = match algorithm {
        SigningAlgorithm::EdDSA => Ed25519KeyPair::from_pkcs8(&der)
            .unwrap()
            .public_key()
            .as_der()
            .unwrap(),
        SigningAlgorithm::ES256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .unwrap()
            .public_key()
            .as_der()
            .unwrap(),
        SigningAlgorithm::RS256 => aws_lc_rs::rsa::KeyPair::from_pkcs8(&der)
            .unwrap()
            .public_key()
            .as_der()
            .unwrap(),
        SigningAlgorithm::HS256 => unreachable!("HS256 has no public key"),
    };
    pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()))
}

/// Tokens signed by `current`, with `previous` still verifying.
fn rotated(current: &SigningKey, previous: &[&SigningKey]) -> Tokens {
    Tokens::try_new(
        current.clone(),
        TokenSettings {
            previous_keys: previous.iter().map(|key| key.verifying_key()).collect(),
            ..TokenSettings::default()
        },
    )
    .unwrap()
}

#[test]
fn a_token_of_a_previous_key_verifies_and_new_tokens_are_signed_by_the_current_key() {
    let old = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let new = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let before = Tokens::new(old.clone(), TokenSettings::default());
    let old_token = before.mint(&subject(), NOW).unwrap().token;

    let during = rotated(&new, &[&old]);
    assert_eq!(
        during.verify(&old_token, NOW).unwrap().sub,
        "alice@example.com"
    );
    let new_token = during.mint(&subject(), NOW).unwrap().token;
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new.kid()));
    assert!(during.verify(&new_token, NOW).is_ok());
    // Every kind, not only access tokens.
    let refresh = before
        .mint_kind(TokenKind::Refresh, &subject(), NOW, None, Some("f".into()))
        .unwrap();
    assert!(
        during
            .verify_kind(TokenKind::Refresh, &refresh.token, NOW)
            .is_ok()
    );

    let after = Tokens::new(new.clone(), TokenSettings::default());
    assert_eq!(
        after.verify(&old_token, NOW),
        Err(TokenError::UnknownKey),
        "a removed key's tokens stop working"
    );
    assert!(after.verify(&new_token, NOW).is_ok());
}

#[test]
fn a_previous_key_may_be_of_another_algorithm_and_keeps_its_own() {
    let old = SigningKey::generate(SigningAlgorithm::RS256).unwrap().0;
    let new = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let old_token = Tokens::new(old.clone(), TokenSettings::default())
        .mint(&subject(), NOW)
        .unwrap();
    let tokens = rotated(&new, &[&old]);
    assert!(tokens.verify(&old_token.token, NOW).is_ok());
    // The old key's kid with the new key's algorithm: the kid picks the key, and the
    // key's own algorithm is the only one it accepts.
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(old.kid().to_owned());
    let forged = (Tokens::new(new.clone(), TokenSettings::default()))
        .sign(&header, &old_token.claims)
        .unwrap();
    assert_eq!(tokens.verify(&forged, NOW), Err(TokenError::WrongAlgorithm));
}

#[test]
fn a_token_without_a_kid_is_refused() {
    let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let tokens = Tokens::new(key.clone(), TokenSettings::default());
    let claims = tokens.mint(&subject(), NOW).unwrap().claims;
    let header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    let unnamed = tokens.sign(&header, &claims).unwrap();
    assert_eq!(tokens.verify(&unnamed, NOW), Err(TokenError::UnknownKey));
}

#[test]
fn the_jwks_lists_the_current_and_every_previous_key() {
    let old = SigningKey::generate(SigningAlgorithm::ES256).unwrap().0;
    let older = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let secret = SigningKey::generate(SigningAlgorithm::HS256).unwrap().0;
    let new = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let tokens = rotated(&new, &[&old, &older, &secret]);
    let jwks: serde_json::Value = serde_json::from_slice(tokens.jwks()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    // The HS256 secret is never published.
    assert_eq!(kids, [new.kid(), old.kid(), older.kid()]);
    for key in jwks["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "no private part: {key}");
        assert_eq!(key["use"], "sig");
    }
    assert_eq!(tokens.verifying_keys().count(), 4);
}

#[test]
fn a_duplicate_kid_is_refused() {
    let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let old = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let with_previous = |previous: Vec<VerifyingKey>| {
        Tokens::try_new(
            key.clone(),
            TokenSettings {
                previous_keys: previous,
                ..TokenSettings::default()
            },
        )
    };
    assert!(matches!(
        with_previous(vec![key.verifying_key()]),
        Err(KeyError::DuplicateKid(kid)) if kid == key.kid()
    ));
    assert!(matches!(
        with_previous(vec![old.verifying_key(), old.verifying_key()]),
        Err(KeyError::DuplicateKid(kid)) if kid == old.kid()
    ));
    // `new` keeps one of each.
    let tokens = Tokens::new(
        key.clone(),
        TokenSettings {
            previous_keys: vec![key.verifying_key(), old.verifying_key()],
            ..TokenSettings::default()
        },
    );
    assert_eq!(tokens.verifying_keys().count(), 2);
}

#[test]
fn a_previous_key_loads_from_a_private_or_a_public_pem_with_the_same_kid() {
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
    ] {
        let (key, private_pem) = SigningKey::generate(algorithm).unwrap();
        let token = Tokens::new(key.clone(), TokenSettings::default())
            .mint(&subject(), NOW)
            .unwrap()
            .token;
        for pem in [private_pem.to_string(), public_pem(algorithm, &private_pem)] {
            let previous = VerifyingKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(previous.algorithm(), algorithm);
            assert_eq!(previous.kid(), key.kid(), "{algorithm:?}");
            assert_eq!(previous.public_jwk(), key.public_jwk(), "{algorithm:?}");
            let tokens = Tokens::try_new(
                SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0,
                TokenSettings {
                    previous_keys: vec![previous],
                    ..TokenSettings::default()
                },
            )
            .unwrap();
            assert!(tokens.verify(&token, NOW).is_ok(), "{algorithm:?}");
        }
    }
}

#[test]
fn a_previous_key_of_an_unsupported_kind_is_refused() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let p384_private = pem::encode(&pem::Pem::new("PRIVATE KEY", p384.as_ref().to_vec()));
    let p384_public = pem::encode(&pem::Pem::new(
        "PUBLIC KEY",
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, p384.as_ref())
            .unwrap()
            .public_key()
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec(),
    ));
    let certificate = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x00]));
    for pem in [
        p384_private.as_str(),
        p384_public.as_str(),
        certificate.as_str(),
        "not a pem",
        "",
    ] {
        assert!(
            matches!(
                VerifyingKey::from_pem(pem.as_bytes()),
                Err(KeyError::UnsupportedKey(_))
            ),
            "{pem}"
        );
    }
}

#[test]
fn a_token_is_the_same_bytes_jsonwebtoken_writes_and_every_algorithm_verifies() {
    for algorithm in SigningAlgorithm::ALL {
        let (key, secret) = SigningKey::generate(algorithm).unwrap();
        let tokens = Tokens::new(key.clone(), TokenSettings::default());
        let minted = tokens.mint(&subject(), NOW).unwrap();
        // Verified by jsonwebtoken itself, with the public half only.
        assert!(tokens.verify(&minted.token, NOW).is_ok(), "{algorithm:?}");
        let encoding = match algorithm {
            SigningAlgorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(secret.as_bytes()),
            SigningAlgorithm::HS256 => Ok(jsonwebtoken::EncodingKey::from_secret(
                &base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    &*secret,
                )
                .unwrap(),
            )),
            SigningAlgorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(secret.as_bytes()),
            // ECDSA signatures are randomized: verified above, not compared.
            SigningAlgorithm::ES256 => continue,
        }
        .unwrap();
        // Deterministic signatures: the same header, claims and key give the same token.
        let header = jsonwebtoken::decode_header(&minted.token).unwrap();
        let written = jsonwebtoken::encode(&header, &*minted.claims, &encoding).unwrap();
        assert_eq!(minted.token, written, "{algorithm:?}");
    }
}
