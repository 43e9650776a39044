//! Who a code is for: a validated, normalized email address or E.164 phone number.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a code travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// By email.
    Email,
    /// By SMS.
    Sms,
}

impl Channel {
    /// `"email"` or `"sms"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated destination.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// An email address, lower-cased.
    Email(String),
    /// A phone number in E.164 form (`+14155550123`).
    Phone(String),
}

/// Why an identifier was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum InvalidIdentifier {
    /// Not a deliverable email address.
    #[error("invalid email address")]
    Email,
    /// Not a valid phone number in E.164 form.
    #[error("invalid phone number: expected E.164, like +14155550123")]
    Phone,
}

/// Longest email address accepted (RFC 5321 path limit).
const MAX_EMAIL_LENGTH: usize = 254;

impl Identifier {
    /// Validates and normalizes an email address.
    pub fn email(text: &str) -> Result<Identifier, InvalidIdentifier> {
        let text = text.trim();
        if text.len() > MAX_EMAIL_LENGTH {
            return Err(InvalidIdentifier::Email);
        }
        let address =
            email_address::EmailAddress::from_str(text).map_err(|_| InvalidIdentifier::Email)?;
        // Display names ("Alice <a@x>") and domain literals are not destinations users type.
        if address.as_str() != address.email()
            || address.domain().starts_with('[')
            || !address.domain().contains('.')
        {
            return Err(InvalidIdentifier::Email);
        }
        // One account per mailbox, whatever the capitalisation it was typed in.
        Ok(Identifier::Email(address.email().to_lowercase()))
    }

    /// Validates a phone number in E.164 form and checks it against the numbering plan.
    pub fn phone(text: &str) -> Result<Identifier, InvalidIdentifier> {
        let text = text.trim();
        let digits = text.strip_prefix('+').ok_or(InvalidIdentifier::Phone)?;
        // E.164: at most 15 digits, no leading zero, nothing but digits.
        if digits.is_empty()
            || digits.len() > 15
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(InvalidIdentifier::Phone);
        }
        let number = phonenumber::parse(None, text).map_err(|_| InvalidIdentifier::Phone)?;
        if !phonenumber::is_valid(&number) {
            return Err(InvalidIdentifier::Phone);
        }
        Ok(Identifier::Phone(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// The channel a code for this identifier goes by.
    pub fn channel(&self) -> Channel {
        match self {
            Identifier::Email(_) => Channel::Email,
            Identifier::Phone(_) => Channel::Sms,
        }
    }

    /// The normalized address or number.
    pub fn as_str(&self) -> &str {
        match self {
            Identifier::Email(s) | Identifier::Phone(s) => s,
        }
    }

    /// A form safe for logs: `a***@example.com`, `+1******0123`.
    pub fn masked(&self) -> String {
        match self {
            Identifier::Email(address) => match address.split_once('@') {
                Some((local, domain)) => {
                    let first: String = local.chars().take(1).collect();
                    format!("{first}***@{domain}")
                }
                None => "***".into(),
            },
            Identifier::Phone(number) => {
                let keep_start = 2.min(number.len());
                let keep_end = 4.min(number.len() - keep_start);
                let hidden = number.len() - keep_start - keep_end;
                format!(
                    "{}{}{}",
                    &number[..keep_start],
                    "*".repeat(hidden),
                    &number[number.len() - keep_end..]
                )
            }
        }
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Full destinations never reach logs.
        write!(f, "{}({})", self.channel(), self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_and_lowercased() {
        assert_eq!(
            Identifier::email(" Alice.Smith@Example.COM ")
                .unwrap()
                .as_str(),
            "alice.smith@example.com"
        );
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "a b@example.com",
            "Alice <a@example.com>",
            "a@[127.0.0.1]",
            "a@localhost",
            &format!("{}@example.com", "a".repeat(250)),
        ] {
            assert_eq!(
                Identifier::email(bad),
                Err(InvalidIdentifier::Email),
                "{bad}"
            );
        }
    }

    #[test]
    fn phones_must_be_valid_e164() {
        assert_eq!(
            Identifier::phone("+14155552671").unwrap().as_str(),
            "+14155552671"
        );
        assert_eq!(
            Identifier::phone("+919876543210").unwrap().as_str(),
            "+919876543210"
        );
        for bad in [
            "",
            "14155552671",
            "+0123456789",
            "+1 415 555 2671",
            "+1415555267a",
            "+1234",
            "+99999999999999999",
            "+10000000000",
        ] {
            assert_eq!(
                Identifier::phone(bad),
                Err(InvalidIdentifier::Phone),
                "{bad}"
            );
        }
    }

    #[test]
    fn masked_forms_hide_the_destination() {
        let email = Identifier::email("alice@example.com").unwrap();
        assert_eq!(email.masked(), "a***@example.com");
        let phone = Identifier::phone("+14155552671").unwrap();
        assert_eq!(phone.masked(), "+1******2671");
        assert!(!format!("{phone:?}").contains("4155552671"));
    }
}
