//! Who a code is for: a validated, normalized email address or E.164 phone number.

use std::fmt;

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

/// Characters that render as nothing or reorder the text around them: soft hyphen,
/// zero-width spaces and joiners, bidirectional controls, word joiners, the BOM.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// The domain's one spelling: UTS 46 mapping (case folding, width and compatibility
/// forms) and A-labels, as mail servers and DNS see it.
fn canonical_domain(domain: &str) -> Result<String, InvalidIdentifier> {
    use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
    // STD3: letters, digits and hyphens only, so the result is a host name and nothing
    // else; a label that cannot become a valid A-label (bad Punycode included) is refused.
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            // Label and name lengths checked, and no trailing dot: `example.com.` would be
            // a second spelling of `example.com`.
            DnsLength::Verify,
        )
        .map_err(|_| InvalidIdentifier::Email)?;
    let top = ascii.rsplit('.').next().unwrap_or_default();
    // One label (localhost, an intranet name) is no public mail domain, and an all-digit
    // top label is an IPv4 address without its brackets: no top-level domain is numeric.
    if !ascii.contains('.') || top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidIdentifier::Email);
    }
    Ok(ascii.into_owned())
}

/// `a***@example.com` for any address, valid or not: the first character of the local
/// part and the domain after the last `@`.
pub(crate) fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

impl Identifier {
    /// Validates and normalizes an email address.
    ///
    /// The result is the one spelling of its mailbox: the local part lower-cased, the
    /// domain lower-cased and in A-labels (`vidn@exämple.com` and
    /// `VIDN@xn--exmple-cua.com` are both `vidn@xn--exmple-cua.com`), so every spelling
    /// shares one code, one attempt budget and one subject. Quoted local parts, comments,
    /// domain literals, whitespace, control and invisible characters are refused.
    pub fn email(text: &str) -> Result<Identifier, InvalidIdentifier> {
        // One mailbox whether `é` came as one character or as `e` and a combining accent
        // (NFC, which IDNA applies to domains too).
        let text = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(text.trim());
        let text = text.as_ref();
        if text.len() > MAX_EMAIL_LENGTH {
            return Err(InvalidIdentifier::Email);
        }
        // Whitespace, controls and invisible characters inside an address would make
        // second spellings of one mailbox, or carry line breaks into headers and logs.
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return Err(InvalidIdentifier::Email);
        }
        // Quoted local parts and comments let one address carry another address, commas
        // or markup (`"victim@example.com"@attacker.test`) into tokens and the app's
        // headers; no address people type needs them.
        if text.contains(['"', '\\', '(', ')']) {
            return Err(InvalidIdentifier::Email);
        }
        // Domain literals (`[1.2.3.4]`, `[IPv6:...]`) name a host, not a mail domain, and
        // skip the domain's own mail routing.
        if text.contains(['[', ']']) {
            return Err(InvalidIdentifier::Email);
        }
        // Without quotes, exactly one `@` separates the local part from the domain.
        let (local, domain) = text.split_once('@').ok_or(InvalidIdentifier::Email)?;
        // Display names (`Alice <a@x>`) and routes fail here: the local part is a dot-atom.
        if domain.contains('@') || !email_address::EmailAddress::is_valid_local_part(local) {
            return Err(InvalidIdentifier::Email);
        }
        // One account per mailbox, whatever the capitalisation it was typed in.
        let address = format!("{}@{}", local.to_lowercase(), canonical_domain(domain)?);
        // The A-label form can be longer than what was typed; the path limit holds for it.
        if address.len() > MAX_EMAIL_LENGTH || !email_address::EmailAddress::is_valid(&address) {
            return Err(InvalidIdentifier::Email);
        }
        Ok(Identifier::Email(address))
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
            Identifier::Email(address) => mask_email(address),
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
    fn every_spelling_of_a_mailbox_is_one_identifier() {
        for (typed, canonical) in [
            (" Alice.Smith@Example.COM ", "alice.smith@example.com"),
            ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
            ("vidn@exämple.com", "vidn@xn--exmple-cua.com"),
            ("VIDN@EXÄMPLE.COM", "vidn@xn--exmple-cua.com"),
            ("vidn@xn--exmple-cua.com", "vidn@xn--exmple-cua.com"),
            ("Vidn@XN--EXMPLE-CUA.COM", "vidn@xn--exmple-cua.com"),
            // Full-width letters map to their plain forms (UTS 46).
            ("user@ｅｘａｍｐｌｅ.com", "user@example.com"),
            ("user@bücher.de", "user@xn--bcher-kva.de"),
            // Nontransitional processing: ß stays ß, so faß.de is not fass.de.
            ("user@faß.de", "user@xn--fa-hia.de"),
            ("user@例え.テスト", "user@xn--r8jz45g.xn--zckzah"),
            // The local part keeps its letters, lower-cased.
            ("José@Example.com", "josé@example.com"),
            // One é, whether typed as one character or as e and a combining accent.
            ("Jose\u{301}@example.com", "jos\u{e9}@example.com"),
            ("jos\u{e9}@example.com", "jos\u{e9}@example.com"),
            ("a@1.example.com", "a@1.example.com"),
            ("o'brien@example.com", "o'brien@example.com"),
        ] {
            let identifier = Identifier::email(typed).unwrap_or_else(|e| panic!("{typed}: {e}"));
            assert_eq!(identifier.as_str(), canonical, "{typed}");
            // The canonical form is a fixed point: it names the same identity again.
            assert_eq!(Identifier::email(canonical), Ok(identifier), "{canonical}");
        }
    }

    #[test]
    fn addresses_that_are_not_one_plain_mailbox_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let long_address = format!("{}@example.com", "a".repeat(250));
        // Fits as typed, too long once the domain is in A-labels.
        let long_a_label = format!("{}@{}.com", "a".repeat(60), "ä.".repeat(60));
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("alice", "no @"),
            ("alice@", "no domain"),
            ("@example.com", "no local part"),
            ("a@b@example.com", "two @"),
            ("a..b@example.com", "empty atom"),
            (".a@example.com", "leading dot"),
            ("Alice <a@example.com>", "display name"),
            ("<a@example.com>", "angle brackets"),
            // Quoted local parts.
            ("\"victim@example.com\"@attacker.test", "quoted address"),
            ("\"admin@example.com,\"@attacker.test", "quoted comma"),
            ("\"<img src=x>\"@attacker.test", "quoted markup"),
            ("\"vquote\"@example.com", "quoted plain"),
            ("a\\b@example.com", "backslash"),
            // Comments.
            ("alice(comment)@example.com", "comment in local part"),
            ("(c)alice@example.com", "leading comment"),
            ("alice@(c)example.com", "comment in domain"),
            ("alice@example.com(c)", "trailing comment"),
            // Domain literals and bare IP addresses.
            ("a@[127.0.0.1]", "IPv4 literal"),
            ("a@[IPv6:::1]", "IPv6 literal"),
            ("a@[IPv6:2001:db8::1]", "IPv6 literal"),
            ("a@127.0.0.1", "bare IPv4"),
            ("a@1.2.3.4", "bare IPv4"),
            // Whitespace, controls and invisible characters anywhere inside.
            ("a b@example.com", "space"),
            ("a\tb@example.com", "tab"),
            ("a@exam ple.com", "space in domain"),
            ("a\r\n@example.com", "CRLF"),
            ("a@example.com\r\nBcc: x@example.org", "header injection"),
            ("a\u{0}@example.com", "NUL"),
            ("a\u{7f}@example.com", "DEL"),
            ("a\u{85}b@example.com", "NEL"),
            ("a\u{2028}b@example.com", "line separator"),
            ("a\u{a0}b@example.com", "no-break space"),
            ("a\u{200B}@example.com", "zero-width space"),
            ("a@exa\u{200B}mple.com", "zero-width space in domain"),
            ("a@exa\u{AD}mple.com", "soft hyphen in domain"),
            ("a\u{200D}b@example.com", "zero-width joiner"),
            ("a\u{202E}@example.com", "right-to-left override"),
            ("\u{FEFF}a@example.com", "byte order mark"),
            // Domains that have no valid A-label form.
            ("a@localhost", "one label"),
            ("a@例え", "one label, IDN"),
            ("a@-example.com", "leading hyphen"),
            ("a@example-.com", "trailing hyphen"),
            ("a@exa_mple.com", "underscore"),
            ("a@example..com", "empty label"),
            ("a@.example.com", "empty first label"),
            ("a@example.com.", "trailing dot"),
            ("a@xn--.com", "empty Punycode"),
            ("a@xn--zz-.com", "bad Punycode"),
            ("a@xn--example-.com", "Punycode of ASCII"),
            ("a@exa%41mple.com", "percent sign"),
            ("a@exa!mple.com", "punctuation"),
            (&long_local, "local part over 64"),
            (&long_label, "label over 63"),
            (&long_address, "over 254"),
            (&long_a_label, "over 254 in A-labels"),
        ];
        for (bad, why) in cases {
            assert_eq!(
                Identifier::email(bad),
                Err(InvalidIdentifier::Email),
                "{why}: {bad:?}"
            );
        }
    }

    #[test]
    fn masking_any_address_keeps_only_its_first_letter_and_domain() {
        for (address, masked) in [
            ("alice@example.com", "a***@example.com"),
            ("\"a@b\"@example.com", "\"***@example.com"),
            ("ünï@example.com", "ü***@example.com"),
            ("@example.com", "***@example.com"),
            ("nothing", "***"),
        ] {
            assert_eq!(mask_email(address), masked, "{address}");
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
