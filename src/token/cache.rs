//! The verified-token cache: a token verified once is answered from here until it
//! expires, without its signature being checked again.
//!
//! It never holds a usable token. An entry is keyed by a keyed digest of the token's
//! signature (its last segment: SipHash-2-4 with a 128-bit output, under a random key
//! made with the cache) and holds the signed part (`header.payload`, which any holder of
//! the token can read anyway) and the claims. A hit needs the same signature (another
//! one has the same digest with probability 2^-128, and the key and the digests never
//! leave the process) and the same signed part, byte for byte: the same token. Digesting
//! the signature (43 to 86 bytes) instead of the whole token keeps the lookup cheap on
//! every request.

use std::sync::Arc;

use super::Claims;

/// A bounded map from tokens to the claims they were verified with.
pub(super) struct VerifiedTokens {
    entries: quick_cache::sync::Cache<[u8; 16], Arc<Verified>>,
    key: [u8; 16],
}

struct Verified {
    /// `header.payload`: compared with the presented token's on every hit.
    signed: Box<str>,
    claims: Arc<Claims>,
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens. Expired tokens are not removed early: every
    /// hit checks the claims' times, and capacity bounds the memory.
    pub(super) fn new(capacity: u64) -> VerifiedTokens {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        VerifiedTokens {
            entries: quick_cache::sync::Cache::new(capacity),
            key: rand::random(),
        }
    }

    /// The claims `token` was verified with, when it was.
    pub(super) fn get(&self, token: &str) -> Option<Arc<Claims>> {
        let (signed, key) = self.split(token)?;
        let entry = self.entries.get(&key)?;
        // The same signature on another header or payload is another token.
        (*entry.signed == *signed).then(|| Arc::clone(&entry.claims))
    }

    /// Remembers that `token` verified to `claims`.
    pub(super) fn insert(&self, token: &str, claims: &Arc<Claims>) {
        if let Some((signed, key)) = self.split(token) {
            let entry = Verified {
                signed: signed.into(),
                claims: Arc::clone(claims),
            };
            self.entries.insert(key, Arc::new(entry));
        }
    }

    /// The signed part of a token and the digest of its signature; `None` for a string
    /// with no `.`, which no verified token is.
    fn split<'t>(&self, token: &'t str) -> Option<(&'t str, [u8; 16])> {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        let (signed, signature) = token.rsplit_once('.')?;
        let mut digest = siphasher::sip128::SipHasher24::new_with_key(&self.key);
        digest.write(signature.as_bytes());
        Some((signed, digest.finish128().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "https://gate.example".into(),
            sub: sub.into(),
            aud: "app".into(),
            exp: 2_000_000_000,
            iat: 1_000_000_000,
            nbf: 1_000_000_000,
            jti: "j".into(),
            amr: vec!["otp".into()],
            auth_time: 1_000_000_000,
            email: None,
            phone: None,
            tenant: "default".into(),
            fam: None,
            forwarded: Default::default(),
            revocation: Default::default(),
        })
    }

    #[test]
    fn a_token_is_found_only_whole() {
        let cache = VerifiedTokens::new(16);
        cache.insert("aaa.bbb.sig", &claims("alice"));
        assert_eq!(cache.get("aaa.bbb.sig").unwrap().sub, "alice");
        // Same signature, another header or payload: not the token that was verified.
        assert!(cache.get("aaa.bbc.sig").is_none());
        assert!(cache.get("aab.bbb.sig").is_none());
        assert!(cache.get(".sig").is_none());
        assert!(cache.get("sig").is_none());
        // Same signed part, another signature.
        assert!(cache.get("aaa.bbb.sih").is_none());
        assert!(cache.get("aaa.bbb.sig.").is_none());
        assert!(cache.get("aaa.bbb.si").is_none());
    }

    #[test]
    fn nothing_in_the_cache_is_the_token_or_its_signature() {
        let cache = VerifiedTokens::new(16);
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2VjcmV0LXNpZ25hdHVyZQ";
        cache.insert(token, &claims("u"));
        for (key, entry) in cache.entries.iter() {
            assert_ne!(&key[..], b"c2VjcmV0LXNpZ25hdHVyZQ".as_slice());
            assert!(!entry.signed.contains("c2VjcmV0LXNpZ25hdHVyZQ"));
            assert_eq!(&*entry.signed, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0");
        }
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        let cache = VerifiedTokens::new(8);
        for i in 0..100 {
            cache.insert(&format!("h.p.sig{i}"), &claims("u"));
        }
        assert!(cache.entries.len() <= 8, "{}", cache.entries.len());
    }
}
