//! Per-tenant destination rules: which destinations are ever a person's.

use std::collections::HashSet;
use std::sync::Arc;

use phonenumber::Type;
use phonenumber::metadata::{DATABASE, Database};

use crate::identifier::Identifier;

use super::super::GateError;

/// Which destinations a tenant sends codes to. The default sends SMS to every country and
/// email to every domain, but never to a number no person carries (premium rate, shared
/// cost, toll free, personal numbers, pagers, landlines, VoIP: see [`Destinations::check`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    /// SMS only to numbers of these countries (ISO 3166-1 alpha-2, upper case); `None`:
    /// every country.
    pub sms_countries: Option<HashSet<String>>,
    /// Whether VoIP numbers may receive codes (off by default).
    pub allow_voip: bool,
    /// Which email domains may receive codes.
    pub email_domains: EmailDomains,
}

/// Email domain rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EmailDomains {
    /// Every domain.
    #[default]
    Any,
    /// Only these domains (lower case, A-labels), exactly: not their subdomains.
    Only(Arc<HashSet<String>>),
    /// Every domain but these (lower case, A-labels) and every domain under them, such as
    /// a list of disposable-mail domains.
    Except(Arc<HashSet<String>>),
}

/// Why a destination is refused; each has its own stable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationRefusal {
    /// A number of a country the tenant does not send SMS to.
    SmsCountry,
    /// A number of a type no person receives codes on (premium rate, shared cost, ...),
    /// or VoIP where it is not allowed.
    NumberType,
    /// An email domain off the tenant's list, or on its block list.
    EmailDomain,
}

impl DestinationRefusal {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self {
            DestinationRefusal::SmsCountry => "sms_country_not_allowed",
            DestinationRefusal::NumberType => "number_type_not_allowed",
            DestinationRefusal::EmailDomain => "email_domain_not_allowed",
        }
    }

    /// The human message.
    pub fn message(self) -> &'static str {
        match self {
            DestinationRefusal::SmsCountry => "codes are not sent to numbers of this country",
            DestinationRefusal::NumberType => "codes are not sent to numbers of this type",
            DestinationRefusal::EmailDomain => "codes are not sent to this email domain",
        }
    }
}

impl Destinations {
    /// Refuses `identifier` when the rules leave it out. A number must be of a country in
    /// `sms_countries` (by its own region: +1 876 is Jamaica) and of a type a person
    /// carries: mobile, or fixed-line-or-mobile where the plan cannot tell them apart,
    /// and VoIP with `allow_voip`. No store, no network: it runs first on every send, so
    /// a refused destination is neither counted nor sent to.
    pub fn check(&self, identifier: &Identifier) -> Result<(), GateError> {
        let verdict = match identifier {
            Identifier::Phone(number) => self.check_phone(number),
            Identifier::Email(address) => domain_allowed(&self.email_domains, domain_of(address)),
        };
        verdict.map_err(GateError::DestinationRefused)
    }

    fn check_phone(&self, number: &str) -> Result<(), DestinationRefusal> {
        // An identifier made without `Identifier::phone` may not parse: refused, never
        // waved through.
        let (region, kind) = phone_facts(number).ok_or(DestinationRefusal::NumberType)?;
        region_allowed(self.sms_countries.as_ref(), region)?;
        type_allowed(kind, self.allow_voip)
    }
}

/// The region (ISO 3166-1 alpha-2, or `001` for numbers of no country such as +800) and
/// the type of an E.164 number, from the numbering plan; `None` when it does not parse.
fn phone_facts(number: &str) -> Option<(&'static str, Type)> {
    let database: &'static Database = &DATABASE;
    let parsed = phonenumber::parse(None, number).ok()?;
    // The number's own region, not the first region of its calling code: +1 876 is
    // Jamaica, not the US, and +44 1481 is Guernsey, not the UK.
    let region = parsed.metadata(database)?.id();
    Some((region, parsed.number_type(database)))
}

/// Whether SMS go to numbers of `region`: every region when `countries` is `None`.
fn region_allowed(
    countries: Option<&HashSet<String>>,
    region: &str,
) -> Result<(), DestinationRefusal> {
    match countries {
        Some(countries) if !countries.contains(region) => Err(DestinationRefusal::SmsCountry),
        _ => Ok(()),
    }
}

/// Whether a number of type `kind` may receive codes. Only the types a person carries
/// pass; every variant is named, so a new one is decided here rather than let through.
fn type_allowed(kind: Type, allow_voip: bool) -> Result<(), DestinationRefusal> {
    match kind {
        Type::Mobile | Type::FixedLineOrMobile => Ok(()),
        // Off by default: VoIP numbers are made by the thousand for nothing, so they are
        // what scripted sign-ups and pumping ranges use; tenants whose users have them
        // turn it on.
        Type::Voip if allow_voip => Ok(()),
        Type::Voip => Err(DestinationRefusal::NumberType),
        // Most landlines cannot receive SMS, and where an operator reads them out by
        // voice the message is billed like a call: a code sent there is rarely read and
        // always paid for. Where fixed and mobile numbers look alike (the US, Canada)
        // the plan says FixedLineOrMobile, which passes.
        Type::FixedLine => Err(DestinationRefusal::NumberType),
        // Billed to the sender at a rate the range holder shares: the pumping vector.
        Type::PremiumRate | Type::SharedCost => Err(DestinationRefusal::NumberType),
        // UK 070 and the like forward to anywhere, premium destinations included: a
        // known pumping vector.
        Type::PersonalNumber => Err(DestinationRefusal::NumberType),
        // Company switchboards, freephone lines, pagers and voicemail access: no person
        // reads a code there.
        Type::TollFree | Type::Uan | Type::Pager | Type::Voicemail => {
            Err(DestinationRefusal::NumberType)
        }
        // Types the plan gives no valid full number, and numbers it cannot place: never
        // a person's phone as far as anyone can tell.
        Type::Emergency
        | Type::ShortCode
        | Type::StandardRate
        | Type::Carrier
        | Type::NoInternational
        | Type::Unknown => Err(DestinationRefusal::NumberType),
    }
}

/// The domain of a normalized address: what follows its last `@` (the whole text when it
/// has none, which then matches no real domain).
fn domain_of(address: &str) -> &str {
    address
        .rsplit_once('@')
        .map_or(address, |(_, domain)| domain)
}

/// Whether codes go to `domain` (lower case, A-labels, as [`Identifier::email`] makes
/// it). An allow list matches exactly: `mail.example.com` is not `example.com`, since a
/// subdomain can be another party's mail. A block list matches the domain and every
/// domain under it: a disposable-mail service answers on any subdomain it likes, so
/// `x.mailinator.com` is `mailinator.com`.
fn domain_allowed(rules: &EmailDomains, domain: &str) -> Result<(), DestinationRefusal> {
    let allowed = match rules {
        EmailDomains::Any => true,
        EmailDomains::Only(domains) => domains.contains(domain),
        EmailDomains::Except(domains) => !parents(domain).any(|d| domains.contains(d)),
    };
    if allowed {
        Ok(())
    } else {
        Err(DestinationRefusal::EmailDomain)
    }
}

/// `a.b.example.com`, `b.example.com`, `example.com`, `com`: the domain and each domain
/// above it, as slices of it.
fn parents(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::once(domain).chain(
        domain
            .match_indices('.')
            .map(move |(dot, _)| &domain[dot + 1..]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    fn phone(number: &str) -> Identifier {
        Identifier::phone(number).unwrap_or_else(|e| panic!("{number}: {e}"))
    }

    fn email(address: &str) -> Identifier {
        Identifier::email(address).unwrap_or_else(|e| panic!("{address}: {e}"))
    }

    /// The refusal `rules` give `identifier`, if any.
    fn refusal(rules: &Destinations, identifier: &Identifier) -> Option<DestinationRefusal> {
        match rules.check(identifier) {
            Ok(()) => None,
            Err(GateError::DestinationRefused(refusal)) => Some(refusal),
            Err(other) => panic!("{identifier:?}: {other:?}"),
        }
    }

    /// Example numbers of each type from the numbering plan's own metadata.
    const TYPED: &[(&str, Type)] = &[
        ("+447400123456", Type::Mobile),
        ("+447911123456", Type::Mobile),
        ("+4915112345678", Type::Mobile),
        ("+14155550100", Type::FixedLineOrMobile),
        ("+919876543210", Type::Mobile),
        ("+33612345678", Type::Mobile),
        ("+14155552671", Type::FixedLineOrMobile),
        ("+12015550123", Type::FixedLineOrMobile),
        ("+441212345678", Type::FixedLine),
        ("+33123456789", Type::FixedLine),
        ("+449012345678", Type::PremiumRate),
        ("+19002345678", Type::PremiumRate),
        ("+33884012345", Type::SharedCost),
        ("+4918012345", Type::SharedCost),
        ("+448001234567", Type::TollFree),
        ("+18002345678", Type::TollFree),
        ("+80012345678", Type::TollFree),
        ("+447012345678", Type::PersonalNumber),
        ("+15002345678", Type::PersonalNumber),
        ("+445612345678", Type::Voip),
        ("+883510012345", Type::Voip),
        ("+447640123456", Type::Pager),
        ("+445512345678", Type::Uan),
        ("+49177991234567", Type::Voicemail),
    ];

    #[test]
    fn the_numbering_plan_gives_each_example_its_type() {
        for &(number, kind) in TYPED {
            let (_, found) = phone_facts(number).unwrap_or_else(|| panic!("{number} parses"));
            assert_eq!(found, kind, "{number}");
        }
        assert_eq!(phone_facts("+1"), None);
        assert_eq!(phone_facts("not a number"), None);
    }

    #[test]
    fn only_the_types_a_person_carries_receive_codes() {
        for &(number, kind) in TYPED {
            let person = matches!(kind, Type::Mobile | Type::FixedLineOrMobile);
            assert_eq!(type_allowed(kind, false).is_ok(), person, "{number}");
            let with_voip = person || kind == Type::Voip;
            assert_eq!(type_allowed(kind, true).is_ok(), with_voip, "{number}");
            // And through the whole check, by default.
            let expected = (!person).then_some(DestinationRefusal::NumberType);
            assert_eq!(
                refusal(&Destinations::default(), &phone(number)),
                expected,
                "{number}"
            );
        }
        for kind in [
            Type::Emergency,
            Type::ShortCode,
            Type::StandardRate,
            Type::Carrier,
            Type::NoInternational,
            Type::Unknown,
        ] {
            assert_eq!(
                type_allowed(kind, true),
                Err(DestinationRefusal::NumberType),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn voip_numbers_receive_codes_only_where_allowed() {
        let voip = phone("+445612345678");
        assert_eq!(
            refusal(&Destinations::default(), &voip),
            Some(DestinationRefusal::NumberType)
        );
        let allowed = Destinations {
            allow_voip: true,
            ..Destinations::default()
        };
        assert_eq!(refusal(&allowed, &voip), None);
        // Allowing VoIP allows nothing else.
        assert_eq!(
            refusal(&allowed, &phone("+449012345678")),
            Some(DestinationRefusal::NumberType)
        );
    }

    #[test]
    fn a_number_is_placed_in_its_own_region_not_its_calling_codes_first() {
        for (number, region) in [
            ("+14155552671", "US"),
            ("+15062345678", "CA"),
            ("+18762101234", "JM"),
            ("+447400123456", "GB"),
            ("+447781123456", "GG"),
            ("+447797123456", "JE"),
            ("+447624123456", "IM"),
            ("+353850123456", "IE"),
            ("+883510012345", "001"),
        ] {
            let (found, _) = phone_facts(number).unwrap_or_else(|| panic!("{number} parses"));
            assert_eq!(found, region, "{number}");
        }
    }

    #[test]
    fn sms_go_only_to_the_countries_listed() {
        let us = set(&["US"]);
        assert_eq!(region_allowed(None, "JM"), Ok(()));
        assert_eq!(region_allowed(Some(&us), "US"), Ok(()));
        assert_eq!(
            region_allowed(Some(&us), "JM"),
            Err(DestinationRefusal::SmsCountry)
        );

        let rules = Destinations {
            sms_countries: Some(us),
            ..Destinations::default()
        };
        assert_eq!(refusal(&rules, &phone("+14155552671")), None);
        // Same calling code, other countries.
        for number in ["+18762101234", "+15062345678"] {
            assert_eq!(
                refusal(&rules, &phone(number)),
                Some(DestinationRefusal::SmsCountry),
                "{number}"
            );
        }
        assert_eq!(
            refusal(&rules, &phone("+447400123456")),
            Some(DestinationRefusal::SmsCountry)
        );

        let uk = Destinations {
            sms_countries: Some(set(&["GB", "IE"])),
            ..Destinations::default()
        };
        assert_eq!(refusal(&uk, &phone("+447400123456")), None);
        assert_eq!(refusal(&uk, &phone("+353850123456")), None);
        // +44, but Jersey's own numbers.
        assert_eq!(
            refusal(&uk, &phone("+447797123456")),
            Some(DestinationRefusal::SmsCountry)
        );
        // No country at all: refused wherever countries are listed.
        let voip_uk = Destinations {
            allow_voip: true,
            ..uk
        };
        assert_eq!(
            refusal(&voip_uk, &phone("+883510012345")),
            Some(DestinationRefusal::SmsCountry)
        );
        // Within the countries, the type rule still holds.
        assert_eq!(
            refusal(&voip_uk, &phone("+447012345678")),
            Some(DestinationRefusal::NumberType)
        );
    }

    #[test]
    fn a_phone_identifier_that_does_not_parse_is_refused() {
        let forged = Identifier::Phone("+1".into());
        assert_eq!(
            refusal(&Destinations::default(), &forged),
            Some(DestinationRefusal::NumberType)
        );
    }

    #[test]
    fn an_allow_list_takes_its_domains_exactly() {
        let only = EmailDomains::Only(Arc::new(set(&["example.com", "xn--exmple-cua.com"])));
        assert_eq!(domain_allowed(&only, "example.com"), Ok(()));
        for refused in ["mail.example.com", "example.org", "notexample.com", "com"] {
            assert_eq!(
                domain_allowed(&only, refused),
                Err(DestinationRefusal::EmailDomain),
                "{refused}"
            );
        }
        let rules = Destinations {
            email_domains: only,
            ..Destinations::default()
        };
        assert_eq!(refusal(&rules, &email("Alice@EXAMPLE.com")), None);
        // Typed in Unicode, normalized to the A-label listed.
        assert_eq!(refusal(&rules, &email("vidn@exämple.com")), None);
        assert_eq!(
            refusal(&rules, &email("alice@example.org")),
            Some(DestinationRefusal::EmailDomain)
        );
        // SMS are not email: the email rule leaves them alone.
        assert_eq!(refusal(&rules, &phone("+14155552671")), None);
    }

    #[test]
    fn a_block_list_takes_its_domains_and_every_subdomain() {
        let except = EmailDomains::Except(Arc::new(set(&["mailinator.com", "yopmail.fr"])));
        for refused in [
            "mailinator.com",
            "x.mailinator.com",
            "a.b.mailinator.com",
            "yopmail.fr",
        ] {
            assert_eq!(
                domain_allowed(&except, refused),
                Err(DestinationRefusal::EmailDomain),
                "{refused}"
            );
        }
        for allowed in [
            "example.com",
            "notmailinator.com",
            "mailinator.com.example",
            "com",
        ] {
            assert_eq!(domain_allowed(&except, allowed), Ok(()), "{allowed}");
        }
        let rules = Destinations {
            email_domains: except,
            ..Destinations::default()
        };
        assert_eq!(refusal(&rules, &email("alice@example.com")), None);
        assert_eq!(
            refusal(&rules, &email("pump@X.Mailinator.com")),
            Some(DestinationRefusal::EmailDomain)
        );
        assert_eq!(domain_allowed(&EmailDomains::Any, "mailinator.com"), Ok(()));
    }

    #[test]
    fn parents_are_the_domain_and_each_domain_above_it() {
        assert_eq!(
            parents("a.b.example.com").collect::<Vec<_>>(),
            ["a.b.example.com", "b.example.com", "example.com", "com"]
        );
        assert_eq!(parents("com").collect::<Vec<_>>(), ["com"]);
        assert_eq!(domain_of("alice@example.com"), "example.com");
        assert_eq!(domain_of("no-at-sign"), "no-at-sign");
    }
}
