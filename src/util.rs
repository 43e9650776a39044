//! Small helpers shared across modules.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Unpadded base64url.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Appends `bytes` to `out` as lower-case hex, without a formatting call per byte.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
}

/// `bytes` as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    push_hex(&mut out, bytes);
    out
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// 128 random bits as base64url: token ids and the like.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The system CSPRNG failing is not recoverable in any useful way; fall back to zeros
    // would make ids collide, so abort loudly instead.
    aws_lc_rs::rand::fill(&mut bytes).expect("system random source failed");
    base64url(&bytes)
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_writes_two_lower_case_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let mut out = String::from("k:");
        super::push_hex(&mut out, &[0x10, 0x9b]);
        assert_eq!(out, "k:109b");
    }
}
