//! Signing keys: loading from PEM, generating, publishing as JWK.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The JWT signing algorithms otpgate offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SigningAlgorithm {
    /// Ed25519 signatures: small, fast, the default.
    #[default]
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSA PKCS#1 v1.5 with SHA-256, for verifiers that know nothing newer.
    RS256,
    /// HMAC-SHA256 with a shared secret; the app must hold the same secret, and no
    /// public key is published.
    HS256,
}

impl SigningAlgorithm {
    /// Every algorithm otpgate offers.
    pub const ALL: [SigningAlgorithm; 4] = [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
        SigningAlgorithm::HS256,
    ];

    /// The jsonwebtoken algorithm.
    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::RS256 => Algorithm::RS256,
            SigningAlgorithm::HS256 => Algorithm::HS256,
        }
    }
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        match text {
            "EdDSA" => Ok(SigningAlgorithm::EdDSA),
            "ES256" => Ok(SigningAlgorithm::ES256),
            "RS256" => Ok(SigningAlgorithm::RS256),
            "HS256" => Ok(SigningAlgorithm::HS256),
            other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

/// A key that cannot be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not one of EdDSA, ES256, RS256, HS256.
    #[error("unknown signing algorithm `{0}`: expected EdDSA, ES256, RS256 or HS256")]
    UnknownAlgorithm(String),
    /// The PEM does not hold a private key of the algorithm's type.
    #[error("not a PKCS#8 PEM private key for {algorithm:?}: {reason}")]
    InvalidPem {
        /// The algorithm the key was meant for.
        algorithm: SigningAlgorithm,
        /// What the parser said.
        reason: String,
    },
    /// An HMAC secret shorter than the hash output.
    #[error("an HS256 secret must be at least 32 bytes, got {0}")]
    SecretTooShort(usize),
    /// HS256 keys are secrets, not PEM files.
    #[error("HS256 takes a secret (token.secret), not a PEM private key")]
    HmacFromPem,
    /// Key generation failed in the crypto library.
    #[error("key generation failed")]
    Generation,
    /// A verification key that is no PKCS#8 private or SPKI public key for EdDSA
    /// (Ed25519), ES256 (P-256) or RS256.
    #[error(
        "not a PEM key for EdDSA (Ed25519), ES256 (P-256) or RS256 \
         (a PKCS#8 private key or an SPKI public key): {0}"
    )]
    UnsupportedKey(String),
    /// Two keys with one kid: the same key listed twice.
    #[error("the key with kid {0} is listed twice")]
    DuplicateKid(String),
}

/// The one key that signs and verifies the gate's tokens.
#[derive(Clone)]
pub struct SigningKey {
    algorithm: SigningAlgorithm,
    kid: String,
    signer: Arc<Signer>,
    decoding: DecodingKey,
    public_jwk: Option<Jwk>,
}

/// The private key, parsed once when it is loaded. Parsing a PKCS#8 key derives and checks
/// its public half (a scalar multiplication for Ed25519 and P-256, the key's consistency
/// checks for RSA): as much work as a signature or more, which `jsonwebtoken::encode` would
/// redo for every token it signs.
// One per key, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Signer {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Hmac(hmac::Key),
}

impl Signer {
    /// Parses `encoding` as `jsonwebtoken`'s own signer for `algorithm` would, each time.
    fn new(algorithm: SigningAlgorithm, encoding: &EncodingKey) -> Result<Signer, KeyError> {
        let der = encoding.as_bytes();
        let invalid = |reason: &str| KeyError::InvalidPem {
            algorithm,
            reason: reason.to_owned(),
        };
        Ok(match algorithm {
            SigningAlgorithm::EdDSA => Signer::Ed25519(
                Ed25519KeyPair::from_pkcs8(der).map_err(|_| invalid("not an Ed25519 key"))?,
            ),
            SigningAlgorithm::ES256 => Signer::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| invalid("not a P-256 key"))?,
            ),
            SigningAlgorithm::RS256 => {
                Signer::Rsa(RsaKeyPair::from_der(der).map_err(|_| invalid("not an RSA key"))?)
            }
            SigningAlgorithm::HS256 => Signer::Hmac(hmac::Key::new(hmac::HMAC_SHA256, der)),
        })
    }

    /// The JWS signature over `message`: for ES256 the fixed-width `r || s` of RFC 7518.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        Ok(match self {
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Ecdsa(pair) => pair.sign(&SystemRandom::new(), message)?.as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )?;
                signature
            }
            Signer::Hmac(key) => hmac::sign(key, message).as_ref().to_vec(),
        })
    }
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key (as written by `otpgate keygen` or
    /// `openssl genpkey`) for an asymmetric algorithm.
    pub fn from_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Result<SigningKey, KeyError> {
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::InvalidPem {
            algorithm,
            reason: e.to_string(),
        };
        let encoding = match algorithm {
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(pem),
            SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            SigningAlgorithm::HS256 => return Err(KeyError::HmacFromPem),
        }
        .map_err(invalid)?;
        let mut jwk =
            Jwk::from_encoding_key(&encoding, algorithm.jwt_algorithm()).map_err(invalid)?;
        // The kid is the RFC 7638 thumbprint: stable for a key, different across keys.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(invalid)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match algorithm {
            SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
            SigningAlgorithm::ES256 => KeyAlgorithm::ES256,
            _ => KeyAlgorithm::RS256,
        });
        // Verification uses the public half only, derived from the private key.
        let decoding = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        Ok(SigningKey {
            algorithm,
            kid,
            signer: Arc::new(Signer::new(algorithm, &encoding)?),
            decoding,
            public_jwk: Some(jwk),
        })
    }

    /// An HS256 key from a shared secret of at least 32 bytes.
    pub fn from_hmac_secret(secret: &[u8]) -> Result<SigningKey, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::SecretTooShort(secret.len()));
        }
        // The kid of a shared secret must not leak it: a hash of the hash suffices.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, digest.as_ref());
        let kid = crate::util::base64url(&digest.as_ref()[..16]);
        Ok(SigningKey {
            algorithm: SigningAlgorithm::HS256,
            kid,
            signer: Arc::new(Signer::new(
                SigningAlgorithm::HS256,
                &EncodingKey::from_secret(secret),
            )?),
            decoding: DecodingKey::from_secret(secret),
            public_jwk: None,
        })
    }

    /// A fresh key and its PKCS#8 PEM (for asymmetric algorithms), or a fresh random
    /// secret encoded as base64url (for HS256).
    pub fn generate(
        algorithm: SigningAlgorithm,
    ) -> Result<(SigningKey, Zeroizing<String>), KeyError> {
        let rng = SystemRandom::new();
        let der: Zeroizing<Vec<u8>> = match algorithm {
            SigningAlgorithm::EdDSA => Zeroizing::new(
                Ed25519KeyPair::generate_pkcs8v1(&rng)
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec(),
            ),
            SigningAlgorithm::ES256 => Zeroizing::new(
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec(),
            ),
            SigningAlgorithm::RS256 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| KeyError::Generation)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                    pair.as_der().map_err(|_| KeyError::Generation)?;
                Zeroizing::new(der.as_ref().to_vec())
            }
            SigningAlgorithm::HS256 => {
                let mut secret = Zeroizing::new(vec![0u8; 32]);
                aws_lc_rs::rand::fill(&mut secret[..]).map_err(|_| KeyError::Generation)?;
                let key = SigningKey::from_hmac_secret(&secret)?;
                return Ok((key, Zeroizing::new(crate::util::base64url(&secret))));
            }
        };
        let pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec())));
        let key = SigningKey::from_pem(algorithm, pem.as_bytes())?;
        Ok((key, pem))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The key id put in every token header and in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK; `None` for HS256, whose key is secret.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }

    /// The public half (the secret itself for HS256): what verifies this key's tokens.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            algorithm: self.algorithm,
            kid: self.kid.clone(),
            decoding: self.decoding.clone(),
            public_jwk: self.public_jwk.clone(),
        }
    }

    /// The JWS signature over `message` (the token's `header.payload`).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        self.signer.sign(message)
    }
}

/// A key that verifies tokens but never signs: a previous signing key kept through a
/// rotation, so that tokens it signed still verify until they expire.
#[derive(Clone)]
pub struct VerifyingKey {
    algorithm: SigningAlgorithm,
    kid: String,
    decoding: DecodingKey,
    public_jwk: Option<Jwk>,
}

/// The algorithms a PEM key may be for, tried in turn: each loader refuses a key of
/// another type, so at most one accepts it.
const PEM_ALGORITHMS: [SigningAlgorithm; 3] = [
    SigningAlgorithm::EdDSA,
    SigningAlgorithm::ES256,
    SigningAlgorithm::RS256,
];

impl VerifyingKey {
    /// Loads a PEM key: a PKCS#8 private key (as `otpgate keygen` writes it) or an SPKI
    /// public key (`openssl pkey -pubout`) for EdDSA, ES256 or RS256. The algorithm
    /// follows from the key's type; its kid is the one the key had when it signed.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyingKey, KeyError> {
        let block = pem::parse(pem).map_err(|_| KeyError::UnsupportedKey("no PEM block".into()))?;
        match block.tag() {
            "PRIVATE KEY" | "RSA PRIVATE KEY" => PEM_ALGORITHMS
                .iter()
                .find_map(|&algorithm| SigningKey::from_pem(algorithm, pem).ok())
                .map(|key| key.verifying_key())
                .ok_or_else(|| KeyError::UnsupportedKey("a private key of another type".into())),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => PEM_ALGORITHMS
                .iter()
                .find_map(|&algorithm| VerifyingKey::from_public_pem(algorithm, pem))
                .ok_or_else(|| KeyError::UnsupportedKey("a public key of another type".into())),
            other => Err(KeyError::UnsupportedKey(format!(
                "a `{other}` PEM block, not `PRIVATE KEY` or `PUBLIC KEY`"
            ))),
        }
    }

    /// A public key for `algorithm`, or `None` when the PEM holds another type.
    fn from_public_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Option<VerifyingKey> {
        let decoding = match algorithm {
            SigningAlgorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            SigningAlgorithm::ES256 => DecodingKey::from_ec_pem(pem),
            SigningAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            SigningAlgorithm::HS256 => return None,
        }
        .ok()?;
        let mut jwk = Jwk::from_decoding_key(&decoding, Some(algorithm.jwt_algorithm())).ok()?;
        if algorithm == SigningAlgorithm::ES256
            && !matches!(
                &jwk.algorithm,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256
            )
        {
            // ES256 is P-256 only; a P-384 key would publish a JWK no verifier can use.
            return None;
        }
        // The same thumbprint as the private key's: tokens it signed name this kid.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).ok()?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).ok()?;
        Some(VerifyingKey {
            algorithm,
            kid,
            decoding,
            public_jwk: Some(jwk),
        })
    }

    /// The algorithm its tokens must name; never taken from a token header.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The key id its tokens carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK; `None` for HS256, whose key is secret.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_loadable_key() {
        for algorithm in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
        ] {
            let (key, pem) = SigningKey::generate(algorithm).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let loaded = SigningKey::from_pem(algorithm, pem.as_bytes()).unwrap();
            assert_eq!(loaded.kid(), key.kid(), "{algorithm:?}: kid is stable");
            let jwk = key.public_jwk().unwrap();
            assert_eq!(jwk.common.key_id.as_deref(), Some(key.kid()));
        }
        let (hs, secret) = SigningKey::generate(SigningAlgorithm::HS256).unwrap();
        assert!(hs.public_jwk().is_none());
        assert!(secret.len() >= 43);
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused() {
        let (_, ed_pem) = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap();
        assert!(SigningKey::from_pem(SigningAlgorithm::ES256, ed_pem.as_bytes()).is_err());
        assert!(SigningKey::from_pem(SigningAlgorithm::EdDSA, b"not a pem").is_err());
        assert!(matches!(
            SigningKey::from_hmac_secret(b"short"),
            Err(KeyError::SecretTooShort(5))
        ));
    }
}
