//! Provider text without destinations or codes.
//!
//! What an SMS or mail provider answers may name the number or address it refused
//! (Twilio's 21211 "The 'To' number +14155552699 is not a valid phone number.", an SMTP
//! `550 5.1.1 <person@example.com>`). Before such text becomes an error or a log line,
//! every spelling of the destination in it is replaced by its masked form, the sign-in
//! link by `[link]` and the code by `[code]`; the provider's own codes and words stay, so
//! operators can act on them.

use crate::identifier::{Identifier, mask_email};

use super::Message;

/// Provider text looked at, in bytes: an answer is read no further than this, and the
/// matching below is quadratic in the worst case.
pub(crate) const MAX_PROVIDER_TEXT: usize = 8 * 1024;

/// Characters of scrubbed provider text kept in an error.
const MAX_EXCERPT: usize = 200;

/// `text` from a provider, about `message`, safe for errors and logs: every spelling of
/// the destination masked, the link and the code hidden, controls blanked, at most
/// [`MAX_EXCERPT`] characters.
pub(crate) fn provider_text(text: &str, message: &Message) -> String {
    let scrubbed = scrub(text, &message.to);
    let code = message.code.expose();
    // The link is a credential like the code, and a provider may quote the body that
    // carried it, as written or URL-encoded, or cut off inside the code: its prefix and
    // whatever code characters follow it go.
    let scrubbed = match &message.link {
        Some(link) => {
            let link = link.expose();
            let prefix = link.strip_suffix(code).unwrap_or(link);
            let encoded: String = form_urlencoded::byte_serialize(prefix.as_bytes()).collect();
            let mut hits = find_all(&scrubbed, prefix);
            hits.extend(find_all(&scrubbed, &encoded));
            let hits: Vec<_> = hits
                .into_iter()
                .map(|(start, end)| {
                    let tail = scrubbed[end..]
                        .bytes()
                        .take_while(u8::is_ascii_alphanumeric)
                        .count();
                    (start, end + tail)
                })
                .collect();
            replace_all(&scrubbed, &hits, |_| "[link]".into())
        }
        None => scrubbed,
    };
    // Codes never reach logs, and a provider may quote the message body it refused.
    let scrubbed = if code.is_empty() {
        scrubbed
    } else {
        replace_all(&scrubbed, &find_all(&scrubbed, code), |_| "[code]".into())
    };
    scrubbed
        .chars()
        // Line breaks and other controls from a provider could forge log lines.
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_EXCERPT)
        .collect()
}

/// The first [`MAX_PROVIDER_TEXT`] bytes of a provider's answer body, as text.
pub(crate) async fn read_answer(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    // Bounded: a provider that answers with an endless error page costs no memory.
    while body.len() < MAX_PROVIDER_TEXT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_PROVIDER_TEXT);
    String::from_utf8_lossy(&body).into_owned()
}

/// `text` with every appearance of `to` replaced by `to.masked()`, and every
/// `<...@...>`-bracketed address masked too.
///
/// Emails are found in any case, with the domain in A-labels or Unicode, with `@` as
/// `%40` or fully URL-encoded, and the local part alone (from three characters on, as a
/// word of its own). Phones are found with or without `+` (or `%2B`), with spaces,
/// dashes, dots, slashes or brackets (plain or URL-encoded) between digits, and as the
/// national number alone.
pub(crate) fn scrub(text: &str, to: &Identifier) -> String {
    let text = head(text, MAX_PROVIDER_TEXT);
    let mut hits = bracketed_addresses(text);
    match to {
        Identifier::Email(address) => hits.extend(email_hits(text, address, &to.masked())),
        Identifier::Phone(number) => hits.extend(phone_hits(text, number, &to.masked())),
    }
    resolve(text, hits)
}

/// A stretch of the text and what replaces it.
struct Hit {
    start: usize,
    end: usize,
    with: String,
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Applies `hits`: the earliest first, the longest of those starting together, and none
/// that overlaps one already applied.
fn resolve(text: &str, mut hits: Vec<Hit>) -> String {
    hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for hit in hits {
        if hit.start < done {
            continue;
        }
        out.push_str(&text[done..hit.start]);
        out.push_str(&hit.with);
        done = hit.end;
    }
    out.push_str(&text[done..]);
    out
}

fn replace_all(text: &str, spans: &[(usize, usize)], with: impl Fn(&str) -> String) -> String {
    let hits = spans
        .iter()
        .map(|&(start, end)| Hit {
            start,
            end,
            with: with(&text[start..end]),
        })
        .collect();
    resolve(text, hits)
}

fn same_letter(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase())
}

/// Where `needle` matches `text`, ignoring case, as non-overlapping byte spans.
fn find_all(text: &str, needle: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let Some(first) = needle.chars().next() else {
        return spans;
    };
    let mut from = 0;
    while from < text.len() {
        let rest = &text[from..];
        let Some((offset, _)) = rest.char_indices().find(|&(_, c)| same_letter(c, first)) else {
            break;
        };
        let start = from + offset;
        let mut hay = text[start..].char_indices();
        let mut end = None;
        let mut needle_chars = needle.chars();
        loop {
            match (needle_chars.next(), hay.next()) {
                (None, Some((at, _))) => {
                    end = Some(start + at);
                    break;
                }
                (None, None) => {
                    end = Some(text.len());
                    break;
                }
                (Some(n), Some((_, h))) if same_letter(n, h) => {}
                _ => break,
            }
        }
        match end {
            Some(end) => {
                spans.push((start, end));
                from = end;
            }
            None => {
                let step = text[start..].chars().next().map_or(1, char::len_utf8);
                from = start + step;
            }
        }
    }
    spans
}

/// Every `<...@...>` (or `<...%40...>`) in the text, masked: an SMTP reply names the
/// recipient that way, and maybe in a spelling other than the one sent.
fn bracketed_addresses(text: &str) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find('<').map(|i| from + i) {
        let inner_start = open + 1;
        let close = text[inner_start..]
            .find(['<', '>'])
            .map(|i| inner_start + i)
            .filter(|&close| text.as_bytes()[close] == b'>');
        let Some(close) = close else {
            from = inner_start;
            continue;
        };
        let inner = &text[inner_start..close];
        let at = inner
            .rfind('@')
            .map(|i| (i, 1))
            .or_else(|| find_all(inner, "%40").last().map(|&(i, _)| (i, 3)));
        if let Some((at, at_len)) = at {
            let address = format!("{}@{}", &inner[..at], &inner[at + at_len..]);
            hits.push(Hit {
                start: open,
                end: close + 1,
                with: format!("<{}>", mask_email(&address)),
            });
        }
        from = close + 1;
    }
    hits
}

fn email_hits(text: &str, address: &str, masked: &str) -> Vec<Hit> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Vec::new();
    };
    let mut domains = vec![domain.to_owned()];
    // A provider may echo the domain as people write it rather than in A-labels.
    let (unicode, valid) = idna::domain_to_unicode(domain);
    if valid.is_ok() && unicode != domain {
        domains.push(unicode);
    }
    let mut needles = Vec::new();
    for domain in &domains {
        let plain = format!("{local}@{domain}");
        needles.push(format!("{local}%40{domain}"));
        needles.push(form_urlencoded::byte_serialize(plain.as_bytes()).collect());
        needles.push(plain);
    }
    let mut hits = Vec::new();
    for needle in &needles {
        for (start, end) in find_all(text, needle) {
            hits.push(Hit {
                start,
                end,
                with: masked.to_owned(),
            });
        }
    }
    // One or two letters alone name nobody, and would mask ordinary words.
    if local.chars().count() >= 3 {
        let first: String = local.chars().take(1).collect();
        for (start, end) in find_all(text, local) {
            if stands_alone(text, start, end) {
                hits.push(Hit {
                    start,
                    end,
                    with: format!("{first}***"),
                });
            }
        }
    }
    hits
}

/// Whether `text[start..end]` is a word of its own, not part of a longer name.
fn stands_alone(text: &str, start: usize, end: usize) -> bool {
    let joins = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '+' | '*');
    let before = text[..start].chars().next_back();
    let mut after = text[end..].chars();
    let next = after.next();
    let before_ok = !before.is_some_and(|c| joins(c) || c == '.');
    // A dot after the name ends a sentence, unless a further atom follows it.
    let after_ok = match next {
        Some('.') => !after.next().is_some_and(char::is_alphanumeric),
        Some(c) => !joins(c),
        None => true,
    };
    before_ok && after_ok
}

/// Characters that may stand between the digits of a written phone number.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\u{a0}' | '-' | '.' | '/' | '(' | ')' | '+' | '\u{2010}'..='\u{2015}'
    )
}

/// The character a `%XX` escape at the start of `text` stands for, when it is one of the
/// separators.
fn encoded_separator(text: &str) -> Option<char> {
    let hex = text.strip_prefix('%')?.get(..2)?;
    let byte = u8::from_str_radix(hex, 16).ok()?;
    let c = char::from(byte);
    (byte.is_ascii() && is_separator(c)).then_some(c)
}

fn phone_hits(text: &str, number: &str, masked: &str) -> Vec<Hit> {
    let digits = number.trim_start_matches('+');
    let mut needles = vec![digits.to_owned()];
    // The national number, written without the country code (and maybe with a trunk 0).
    if let Ok(parsed) = phonenumber::parse(None, number) {
        let code = parsed.code().value().to_string();
        if let Some(national) = digits.strip_prefix(code.as_str())
            && !national.is_empty()
        {
            needles.push(national.to_owned());
        }
    }

    // Runs of digits with separators between them; each digit remembers where it was.
    let mut hits = Vec::new();
    let mut run: Vec<(usize, u8)> = Vec::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    while i <= text.len() {
        let c = text[i..].chars().next();
        let step = match c {
            Some(d) if d.is_ascii_digit() => {
                run.push((i, bytes[i]));
                1
            }
            Some(s) if is_separator(s) => s.len_utf8(),
            Some('%') if encoded_separator(&text[i..]).is_some() => 3,
            _ => {
                hits.extend(run_hits(text, &run, &needles, masked));
                run.clear();
                c.map_or(1, char::len_utf8)
            }
        };
        i += step;
    }
    hits
}

/// Where a run of digits contains one of `needles`; the match reaches back over a `+` or
/// `%2B` written right before it.
fn run_hits(text: &str, run: &[(usize, u8)], needles: &[String], masked: &str) -> Vec<Hit> {
    let digits: String = run.iter().map(|&(_, d)| char::from(d)).collect();
    let mut hits = Vec::new();
    for needle in needles {
        for (index, _) in digits.match_indices(needle.as_str()) {
            let (first, last) = (run[index].0, run[index + needle.len() - 1].0);
            let mut start = first;
            if text[..start].ends_with('+') {
                start -= 1;
            } else if start >= 3 && text[..start].to_ascii_uppercase().ends_with("%2B") {
                start -= 3;
            }
            hits.push(Hit {
                start,
                end: last + 1,
                with: masked.to_owned(),
            });
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(address: &str) -> Identifier {
        Identifier::email(address).unwrap()
    }

    fn phone(number: &str) -> Identifier {
        Identifier::phone(number).unwrap()
    }

    /// No spelling of `to` survives, and every `keep` does.
    fn check(text: &str, to: &Identifier, gone: &[&str], keep: &[&str]) -> String {
        let scrubbed = scrub(text, to);
        let lower = scrubbed.to_lowercase();
        for spelling in gone {
            assert!(
                !lower.contains(&spelling.to_lowercase()),
                "{spelling:?} survived in {scrubbed:?}"
            );
        }
        for kept in keep {
            assert!(scrubbed.contains(kept), "{kept:?} lost from {scrubbed:?}");
        }
        scrubbed
    }

    #[test]
    fn twilio_21211_keeps_its_code_and_loses_the_number() {
        let to = phone("+14155552699");
        let body = r#"{"code": 21211, "message": "The 'To' number +14155552699 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let scrubbed = check(body, &to, &["4155552699"], &["21211", "+1******2699"]);
        assert!(scrubbed.contains("errors/21211"), "{scrubbed}");
    }

    #[test]
    fn every_spelling_of_a_phone_number_is_masked() {
        let to = phone("+14155552699");
        for text in [
            "To +14155552699 refused",
            "To 14155552699 refused",
            "To %2B14155552699 refused",
            "To=%2b14155552699&Body=x",
            "To +1 415 555 2699 refused",
            "To +1 (415) 555-2699 refused",
            "To 1.415.555.2699 refused",
            "To +1-415-555-2699 refused",
            "To %2B1%20415%20555%202699 refused",
            "To +1+415+555+2699 refused",
            "To (415) 555-2699 refused",
            "To 415/555/2699 refused",
            "To 001 415 555 2699 refused",
            "To 4155552699.",
            "21211:+14155552699",
        ] {
            check(
                text,
                &to,
                &[
                    "4155552699",
                    "415 555 2699",
                    "555-2699",
                    "555 2699",
                    "5552699",
                ],
                &[],
            );
        }
        // Numbers that are not the destination are left alone.
        check(
            "code 21211 at 2024-05-01 for +14155550000",
            &to,
            &["4155552699"],
            &["21211", "2024-05-01", "+14155550000"],
        );
    }

    #[test]
    fn numbers_of_other_plans_lose_their_national_form_too() {
        let to = phone("+447911123456");
        check(
            "Number 07911 123456 (+44 7911 123456) unreachable",
            &to,
            &["7911123456", "7911 123456", "123456"],
            &["unreachable"],
        );
    }

    #[test]
    fn every_spelling_of_an_email_address_is_masked() {
        let to = email("hidden.person@example.com");
        for text in [
            "550 5.1.1 <hidden.person@example.com>: Recipient address rejected",
            "550 5.1.1 <Hidden.Person@EXAMPLE.COM>: User unknown",
            "550 5.1.1 hidden.person@example.com: User unknown",
            "550 5.1.1 HIDDEN.PERSON@example.com: User unknown",
            "550 bad recipient hidden.person%40example.com",
            "550 to=hidden.person%40EXAMPLE.com&x=1",
            "550 mailbox hidden.person unknown",
            "550 mailbox hidden.person.",
            "550 mailbox 'hidden.person'",
            "550 5.1.1 <hidden.person@other.example>: moved",
            "550 5.1.1 <\"hidden.person\"@example.com>: quoted",
            "550 5.1.1 <hidden.person%40example.com>",
        ] {
            check(text, &to, &["hidden.person", "idden"], &["550"]);
        }
        // The masked form keeps what operators need: the first letter and the domain.
        assert_eq!(
            scrub(
                "550 5.1.1 <hidden.person@example.com>: Recipient address rejected",
                &to
            ),
            "550 5.1.1 <h***@example.com>: Recipient address rejected"
        );
        assert_eq!(
            scrub("550 hidden.person@example.com unknown", &to),
            "550 h***@example.com unknown"
        );
    }

    #[test]
    fn international_domains_are_masked_in_both_forms() {
        let to = email("vidn@exämple.com");
        for text in [
            "550 <vidn@exämple.com> unknown",
            "550 VIDN@EXÄMPLE.COM unknown",
            "550 vidn@xn--exmple-cua.com unknown",
            "550 vidn%40ex%C3%A4mple.com unknown",
        ] {
            check(text, &to, &["vidn@", "vidn%40"], &["550", "unknown"]);
        }
    }

    #[test]
    fn a_local_part_alone_is_masked_only_as_a_word_of_its_own() {
        let to = email("info@example.com");
        check(
            "550 information about info: mailbox info unknown",
            &to,
            &[" info:", " info "],
            &["information", "i***:", "mailbox i*** unknown"],
        );
        // One or two letters alone are left, as they name nobody.
        let short = email("al@example.com");
        assert_eq!(scrub("550 al is unknown", &short), "550 al is unknown");
        assert_eq!(
            scrub("550 al@example.com is unknown", &short),
            "550 a***@example.com is unknown"
        );
    }

    #[test]
    fn other_text_is_left_as_it_was() {
        let to = email("alice@example.com");
        for text in [
            "",
            "451 4.3.0 try again later",
            "unbalanced < bracket",
            "<no address here>",
            "émoji 🙂 and ünïcode",
        ] {
            assert_eq!(scrub(text, &to), text);
        }
    }

    #[test]
    fn the_link_and_the_code_never_leave_in_provider_text() {
        let code = crate::otp::CodeFormat::default().normalize("482913");
        let link = super::super::Link::new("https://app.example/sign-in?code=", &code);
        let message = Message {
            to: email("ada@example.com"),
            code,
            link: Some(link),
            tenant: "default".into(),
            expires_in: std::time::Duration::from_secs(300),
            content: super::super::Rendered::default(),
        };
        for (text, expected) in [
            (
                "550 refused body: sign in at https://app.example/sign-in?code=482913 now",
                "550 refused body: sign in at [link] now",
            ),
            (
                "550 refused https%3A%2F%2Fapp.example%2Fsign-in%3Fcode%3D482913",
                "550 refused [link]",
            ),
            ("550 HTTPS://APP.EXAMPLE/SIGN-IN?CODE=482913", "550 [link]"),
            (
                "550 cut off: https://app.example/sign-in?code=4829",
                "550 cut off: [link]",
            ),
            (
                "550 quoted: ?code=482913&x=1",
                "550 quoted: ?code=[code]&x=1",
            ),
        ] {
            assert_eq!(provider_text(text, &message), expected);
        }
    }

    #[test]
    fn long_text_is_scanned_only_so_far() {
        let to = phone("+14155552699");
        let text = format!("{}+14155552699", "x".repeat(MAX_PROVIDER_TEXT * 2));
        let scrubbed = scrub(&text, &to);
        assert!(scrubbed.len() <= MAX_PROVIDER_TEXT);
        assert!(!scrubbed.contains("4155552699"));
        // A cut inside a multi-byte character lands on the boundary before it.
        let text = format!("{}é", "x".repeat(MAX_PROVIDER_TEXT - 1));
        assert_eq!(scrub(&text, &to).len(), MAX_PROVIDER_TEXT - 1);
    }
}
