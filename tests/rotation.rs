//! Rotating the signing key through the config: a token signed by the previous key keeps
//! working while `token.previous_keys` lists it, new tokens are signed by the new key, the
//! JWKS publishes both, and once the old key is removed its tokens are refused.

use std::path::Path;

use otpgate::config::{Config, ConfigError};
use otpgate::http::Front;
use otpgate::token::{SigningAlgorithm, SigningKey, Subject};

fn alice() -> Subject {
    Subject {
        id: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        phone: None,
        tenant: "default".into(),
    }
}

/// Writes a fresh key of `algorithm` to `dir/name`, as `otpgate keygen` does.
fn keygen(dir: &Path, name: &str, algorithm: SigningAlgorithm) -> SigningKey {
    let (key, pem) = SigningKey::generate(algorithm).unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys").join(name), pem.as_bytes()).unwrap();
    key
}

/// Loads a config whose `[token]` section is `token`, its paths taken from `dir`.
fn load(dir: &Path, token: &str) -> Result<Front, ConfigError> {
    Config::parse(&format!("[token]\n{token}\n"), "otpgate.toml", dir)?.build()
}

fn kids(front: &Front) -> Vec<String> {
    let jwks: serde_json::Value = serde_json::from_slice(front.gate().tokens().jwks()).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn a_rotated_key_keeps_its_tokens_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let a = keygen(dir.path(), "a.pem", SigningAlgorithm::EdDSA);
    let b = keygen(dir.path(), "b.pem", SigningAlgorithm::EdDSA);

    let before = load(dir.path(), r#"private_key = "keys/a.pem""#).unwrap();
    let old = before.gate().start_session(&alice()).unwrap();
    assert_eq!(kid_of(&old.access.token), a.kid());
    assert_eq!(kids(&before), [a.kid()]);

    let during = load(
        dir.path(),
        "private_key = \"keys/b.pem\"\nprevious_keys = [\"keys/a.pem\"]",
    )
    .unwrap();
    let identity = during
        .gate()
        .authenticate(&old.access.token)
        .await
        .expect("a token of the previous key authenticates");
    assert_eq!(identity.claims.sub, "alice@example.com");
    let new = during.gate().start_session(&alice()).unwrap();
    assert_eq!(kid_of(&new.access.token), b.kid(), "the current key signs");
    assert!(during.gate().authenticate(&new.access.token).await.is_ok());
    assert_eq!(kids(&during), [b.kid(), a.kid()]);
    // A refresh token of the previous key still buys a new pair, signed by the new key.
    let refreshed = during
        .gate()
        .refresh(&old.refresh.as_ref().unwrap().token)
        .await
        .expect("a refresh token of the previous key is accepted");
    assert_eq!(kid_of(&refreshed.access.token), b.kid());

    let after = load(dir.path(), r#"private_key = "keys/b.pem""#).unwrap();
    assert!(
        after.gate().authenticate(&old.access.token).await.is_err(),
        "a removed key's tokens stop working"
    );
    assert!(after.gate().authenticate(&new.access.token).await.is_ok());
    assert_eq!(kids(&after), [b.kid()]);
}

#[tokio::test]
async fn a_previous_key_may_be_a_public_key_of_another_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "old.pem", SigningAlgorithm::ES256);
    keygen(dir.path(), "new.pem", SigningAlgorithm::EdDSA);
    let before = load(
        dir.path(),
        "algorithm = \"ES256\"\nprivate_key = \"keys/old.pem\"",
    )
    .unwrap();
    let old = before.gate().start_session(&alice()).unwrap();
    // Only the public half is kept for the previous key.
    let jwk = before.gate().tokens().key().public_jwk().unwrap().clone();
    let public = public_pem_of(&dir.path().join("keys/old.pem"));
    std::fs::write(dir.path().join("keys/old.pub.pem"), public).unwrap();
    let during = load(
        dir.path(),
        "private_key = \"keys/new.pem\"\nprevious_keys = [\"keys/old.pub.pem\"]",
    )
    .unwrap();
    assert!(during.gate().authenticate(&old.access.token).await.is_ok());
    let jwks: serde_json::Value = serde_json::from_slice(during.gate().tokens().jwks()).unwrap();
    assert_eq!(jwks["keys"][1], serde_json::to_value(&jwk).unwrap());
}

/// The SPKI public key of a PKCS#8 P-256 private key, as `openssl pkey -pubout` writes it.
fn public_pem_of(private_pem: &Path) -> String {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let der = pem::parse(std::fs::read(private_pem).unwrap())
        .unwrap()
        .into_contents();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
    let spki = pair.public_key().as_der().unwrap();
    pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()))
}

/// The error of a config that must not load.
fn refused(dir: &Path, token: &str) -> String {
    match load(dir, token) {
        Ok(_) => panic!("loaded: {token}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn previous_keys_that_cannot_serve_are_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "a.pem", SigningAlgorithm::EdDSA);
    keygen(dir.path(), "b.pem", SigningAlgorithm::EdDSA);
    std::fs::write(
        dir.path().join("keys/cert.pem"),
        "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let line3 = |message: &str| {
        assert!(
            message.contains("otpgate.toml:3: `token.previous_keys`"),
            "{message}"
        );
    };

    let missing = refused(
        dir.path(),
        "private_key = \"keys/b.pem\"\nprevious_keys = [\"keys/gone.pem\"]",
    );
    line3(&missing);
    assert!(missing.contains("cannot read"), "{missing}");

    let current = refused(
        dir.path(),
        "private_key = \"keys/b.pem\"\nprevious_keys = [\"keys/b.pem\"]",
    );
    line3(&current);
    assert!(current.contains("current signing key"), "{current}");

    let twice = refused(
        dir.path(),
        "private_key = \"keys/b.pem\"\nprevious_keys = [\"keys/a.pem\", \"keys/a.pem\"]",
    );
    line3(&twice);
    assert!(twice.contains("listed twice"), "{twice}");

    let unsupported = refused(
        dir.path(),
        "private_key = \"keys/b.pem\"\nprevious_keys = [\"keys/cert.pem\"]",
    );
    line3(&unsupported);
    assert!(unsupported.contains("keys/cert.pem"), "{unsupported}");

    let hs256 = refused(
        dir.path(),
        "algorithm = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nprevious_keys = [\"keys/a.pem\"]",
    );
    assert!(
        hs256.contains("otpgate.toml:4: `token.previous_keys`") && hs256.contains("HS256"),
        "{hs256}"
    );
}
