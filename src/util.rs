//! Small helpers shared across modules.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Unpadded base64url.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
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
