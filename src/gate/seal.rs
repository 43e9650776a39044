//! Sealed values: data the gate hands to a client and takes back, signed with a key
//! derived from the server secret so the client cannot forge or alter it. Sealed, not
//! encrypted: the client can read what it holds.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Gate;

impl Gate {
    /// `data` sealed for `purpose`: `base64url(data).base64url(tag)`, safe in a cookie.
    /// A value sealed for one purpose never unseals for another.
    pub fn seal(&self, purpose: &str, data: &[u8]) -> String {
        let tag = hmac::sign(&self.seal_key(), &seal_input(purpose, data));
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(data),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The data of a value [`seal`](Self::seal)ed for `purpose`, or `None` when it is
    /// malformed, altered, or sealed for another purpose or by another secret.
    pub fn unseal(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        let (data, tag) = sealed.split_once('.')?;
        let data = URL_SAFE_NO_PAD.decode(data).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant-time: timing must not tell how much of a forged tag was right.
        hmac::verify(&self.seal_key(), &seal_input(purpose, &data), &tag).ok()?;
        Some(data)
    }

    fn seal_key(&self) -> hmac::Key {
        self.inner.hasher.subkey("otpgate seal")
    }
}

/// The MAC input: the purpose, length-prefixed so that no (purpose, data) pair reads as
/// another, then the data.
fn seal_input(purpose: &str, data: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(8 + purpose.len() + data.len());
    input.extend_from_slice(&(purpose.len() as u64).to_be_bytes());
    input.extend_from_slice(purpose.as_bytes());
    input.extend_from_slice(data);
    input
}

#[cfg(test)]
mod tests {
    use crate::Gate;

    #[test]
    fn sealed_values_cannot_be_altered_or_moved_between_purposes() {
        let gate = Gate::builder().build().unwrap();
        let sealed = gate.seal("flow", b"hello");
        assert_eq!(gate.unseal("flow", &sealed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(gate.unseal("other", &sealed), None);
        let (data, tag) = sealed.split_once('.').unwrap();
        let altered = format!("{}.{tag}", &data[..data.len() - 1]);
        assert_eq!(gate.unseal("flow", &altered), None);
        assert_eq!(gate.unseal("flow", "garbage"), None);
        // Another secret, another key.
        let other = Gate::builder().build().unwrap();
        assert_eq!(other.unseal("flow", &sealed), None);
    }
}
