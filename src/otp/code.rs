//! One-time codes: generation from a CSPRNG and keyed hashing.

use std::fmt;

use aws_lc_rs::hmac;
use rand::Rng;
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The characters a code is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Alphabet {
    /// `0-9`: what people expect on a phone keypad.
    #[default]
    Digits,
    /// `A-Z` and `2-9` without the look-alikes `0 O 1 I L`; case-insensitive on input.
    Alphanumeric,
}

const DIGITS: &[u8] = b"0123456789";
// Look-alike characters are left out so that a code read aloud or retyped survives.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

impl Alphabet {
    fn symbols(self) -> &'static [u8] {
        match self {
            Alphabet::Digits => DIGITS,
            Alphabet::Alphanumeric => ALPHANUMERIC,
        }
    }
}

/// The shortest code allowed; shorter codes are too easy to guess within the attempt cap.
pub const MIN_CODE_LENGTH: usize = 4;
/// The longest code allowed; longer codes stop being typeable.
pub const MAX_CODE_LENGTH: usize = 10;

/// The shape of generated codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeFormat {
    length: usize,
    alphabet: Alphabet,
}

/// A code format outside the allowed range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("code length must be between {MIN_CODE_LENGTH} and {MAX_CODE_LENGTH}, got {0}")]
pub struct InvalidCodeLength(pub usize);

impl CodeFormat {
    /// A format of `length` symbols from `alphabet`.
    pub fn new(length: usize, alphabet: Alphabet) -> Result<CodeFormat, InvalidCodeLength> {
        if !(MIN_CODE_LENGTH..=MAX_CODE_LENGTH).contains(&length) {
            return Err(InvalidCodeLength(length));
        }
        Ok(CodeFormat { length, alphabet })
    }

    /// Number of symbols.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The alphabet.
    pub fn alphabet(&self) -> Alphabet {
        self.alphabet
    }

    /// A fresh code from the operating system's CSPRNG.
    pub fn generate(&self) -> Code {
        let symbols = self.alphabet.symbols();
        // OsRng is the OS CSPRNG; random_range is unbiased (rejection sampling).
        let mut rng = OsRng.unwrap_err();
        let text: String = (0..self.length)
            .map(|_| char::from(symbols[rng.random_range(0..symbols.len())]))
            .collect();
        Code(Zeroizing::new(text))
    }

    /// What a user typed, brought to the form codes are hashed in: spaces and dashes
    /// removed, letters upper-cased for the alphanumeric alphabet.
    pub fn normalize(&self, typed: &str) -> Code {
        let text: String = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| match self.alphabet {
                Alphabet::Digits => c,
                Alphabet::Alphanumeric => c.to_ascii_uppercase(),
            })
            .collect();
        Code(Zeroizing::new(text))
    }
}

impl Default for CodeFormat {
    fn default() -> Self {
        CodeFormat {
            length: 6,
            alphabet: Alphabet::Digits,
        }
    }
}

/// A plaintext code. It is wiped from memory when dropped and never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(Zeroizing<String>);

impl Code {
    /// The code's text, for delivery to its owner only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Codes never reach logs, even through a stray `{:?}`.
        f.write_str("Code(<redacted>)")
    }
}

/// The server secret that keys code hashes. Wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ServerSecret(Vec<u8>);

/// A server secret that is too short to key an HMAC safely.
#[derive(Debug, thiserror::Error)]
#[error("the server secret must be at least 32 bytes, got {0}")]
pub struct SecretTooShort(pub usize);

impl ServerSecret {
    /// A secret from bytes; at least 32 of them.
    pub fn new(bytes: Vec<u8>) -> Result<ServerSecret, SecretTooShort> {
        if bytes.len() < 32 {
            return Err(SecretTooShort(bytes.len()));
        }
        Ok(ServerSecret(bytes))
    }

    /// A fresh random secret, good for a single instance whose codes die with it.
    pub fn random() -> ServerSecret {
        let mut bytes = vec![0u8; 32];
        OsRng.unwrap_err().fill(&mut bytes[..]);
        ServerSecret(bytes)
    }

    /// A 32-byte key for `purpose`, derived with HKDF-SHA256 so that no other use of the
    /// secret (code hashes, store keys, store values) can stand in for another.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use aws_lc_rs::hkdf;
        let mut key = [0u8; 32];
        let info = [purpose.as_bytes()];
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"otpgate")
            .extract(&self.0)
            .expand(&info, hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut key))
            // Infallible: 32 bytes is exactly the output length of one HKDF-SHA256 block.
            .expect("32-byte HKDF output");
        key
    }
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

/// The keyed hash of a code: what the store keeps instead of the code.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct CodeHash(pub [u8; 32]);

impl CodeHash {
    /// Constant-time comparison, so timing does not tell how much of a guess was right.
    pub fn matches(&self, other: &CodeHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl PartialEq for CodeHash {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeHash(..)")
    }
}

/// Hashes codes with HMAC-SHA256 under the server secret.
///
/// The record key is part of the MAC input, so a hash copied from one destination's
/// record to another's never matches.
#[derive(Clone)]
pub struct CodeHasher {
    key: hmac::Key,
}

impl CodeHasher {
    /// A hasher keyed by `secret`.
    pub fn new(secret: &ServerSecret) -> CodeHasher {
        CodeHasher {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret.0),
        }
    }

    /// The hash of `code` for the destination stored under `record_key`.
    pub fn hash(&self, record_key: &str, code: &Code) -> CodeHash {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Length-prefix the key so ("ab", "c") and ("a", "bc") never collide.
        ctx.update(&(record_key.len() as u64).to_be_bytes());
        ctx.update(record_key.as_bytes());
        ctx.update(code.expose().as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        CodeHash(out)
    }

    /// A key for `purpose` other than code hashes, derived from this hasher's key. The
    /// all-ones prefix is a key length no record key has, so no hash input can equal it.
    pub(crate) fn subkey(&self, purpose: &str) -> hmac::Key {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&[0xff; 8]);
        ctx.update(purpose.as_bytes());
        hmac::Key::new(hmac::HMAC_SHA256, ctx.sign().as_ref())
    }
}

impl fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeHasher(<keyed>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn lengths_outside_four_to_ten_are_refused() {
        assert_eq!(
            CodeFormat::new(3, Alphabet::Digits),
            Err(InvalidCodeLength(3))
        );
        assert_eq!(
            CodeFormat::new(11, Alphabet::Digits),
            Err(InvalidCodeLength(11))
        );
        assert!(CodeFormat::new(4, Alphabet::Digits).is_ok());
        assert!(CodeFormat::new(10, Alphabet::Alphanumeric).is_ok());
    }

    #[test]
    fn generated_codes_have_the_format() {
        let digits = CodeFormat::new(8, Alphabet::Digits).unwrap();
        let alnum = CodeFormat::new(10, Alphabet::Alphanumeric).unwrap();
        for _ in 0..200 {
            let code = digits.generate();
            assert_eq!(code.expose().len(), 8);
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
            let code = alnum.generate();
            assert_eq!(code.expose().len(), 10);
            assert!(code.expose().bytes().all(|b| ALPHANUMERIC.contains(&b)));
        }
    }

    #[test]
    fn generated_codes_spread_over_the_space() {
        // 2000 six-digit codes: a constant or badly seeded generator would repeat a lot.
        let format = CodeFormat::default();
        let distinct: HashSet<String> = (0..2000)
            .map(|_| format.generate().expose().to_owned())
            .collect();
        assert!(
            distinct.len() > 1900,
            "only {} distinct codes",
            distinct.len()
        );
        // Every digit shows up in every position.
        for position in 0..6 {
            let seen: HashSet<u8> = (0..500)
                .map(|_| format.generate().expose().as_bytes()[position])
                .collect();
            assert_eq!(seen.len(), 10, "position {position}");
        }
    }

    #[test]
    fn normalize_drops_separators_and_uppercases_alphanumeric() {
        let alnum = CodeFormat::new(6, Alphabet::Alphanumeric).unwrap();
        assert_eq!(alnum.normalize(" ab3-d4e ").expose(), "AB3D4E");
        let digits = CodeFormat::default();
        assert_eq!(digits.normalize("123 456").expose(), "123456");
    }

    #[test]
    fn hashes_are_keyed_by_secret_and_destination() {
        let a = CodeHasher::new(&ServerSecret::new(vec![1; 32]).unwrap());
        let b = CodeHasher::new(&ServerSecret::new(vec![2; 32]).unwrap());
        let code = CodeFormat::default().normalize("123456");
        assert_eq!(a.hash("t/alice", &code), a.hash("t/alice", &code));
        assert_ne!(a.hash("t/alice", &code), b.hash("t/alice", &code));
        assert_ne!(a.hash("t/alice", &code), a.hash("t/bob", &code));
        let other = CodeFormat::default().normalize("123457");
        assert_ne!(a.hash("t/alice", &code), a.hash("t/alice", &other));
    }

    #[test]
    fn secrets_and_codes_never_print() {
        let code = CodeFormat::default().normalize("123456");
        assert!(!format!("{code:?}").contains("123456"));
        assert!(ServerSecret::new(vec![7; 10]).is_err());
        assert_eq!(
            format!("{:?}", ServerSecret::random()),
            "ServerSecret(<redacted>)"
        );
    }
}
