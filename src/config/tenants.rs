//! `[[tenants]]` and `server.default_tenant`: who signs in, by which channels, and to
//! which destinations codes go. Checked against `[delivery]`, so a channel without a
//! sender is refused at its line here rather than when the engine is built. Building
//! reads each tenant's `email_domains_block_file`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use toml::Spanned;

use super::delivery::DeliveryModel;
use super::schema::{ServerSection, TenantSection};
use super::{ConfigError, Place, Source};
use crate::gate::{ChallengeMode, ChallengePolicy, Destinations, EmailDomains, Tenant};
use crate::identifier::{Channel, Identifier};

/// The tenants, checked.
pub(super) struct TenantsModel {
    /// Which tenant requests that name none belong to.
    pub(super) default_tenant: String,
    /// Empty: the engine makes the default tenant alone, offering every channel.
    tenants: Vec<Tenant>,
    /// The block files to read: which tenant (index in `tenants`), the path as written,
    /// and where the file names it.
    block_files: Vec<(usize, String, Place)>,
}

impl TenantsModel {
    /// The tenants, each block file read (relative to the config file's folder) into its
    /// tenant's email rules.
    pub(super) fn build(self, source: &Source<'_>) -> Result<Vec<Tenant>, ConfigError> {
        let mut tenants = self.tenants;
        for (index, path, place) in self.block_files {
            let full = source.dir.join(&path);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| source.at(&place, format!("cannot read {}: {e}", full.display())))?;
            let blocked = block_list(&text).map_err(|(line, entry)| {
                source.at(
                    &place,
                    format!("{path}:{line}: `{entry}` is not a mail domain"),
                )
            })?;
            if let Some(tenant) = tenants.get_mut(index) {
                tenant.destinations.email_domains = EmailDomains::Except(Arc::new(blocked));
            }
        }
        Ok(tenants)
    }
}

/// Checks the tenants and that `delivery` can serve every channel they offer.
pub(super) fn check(
    server: &ServerSection,
    sections: &[Spanned<TenantSection>],
    delivery: &DeliveryModel,
    source: &Source<'_>,
) -> Result<TenantsModel, ConfigError> {
    let default_tenant = server.default_tenant.get_ref().clone();
    if sections.is_empty() {
        implied_default_is_served(&default_tenant, delivery, source)?;
        return Ok(TenantsModel {
            default_tenant,
            tenants: Vec::new(),
            block_files: Vec::new(),
        });
    }
    // Line of each id, for the duplicate's message.
    let mut seen: HashMap<&str, Option<usize>> = HashMap::new();
    let mut tenants = Vec::with_capacity(sections.len());
    let mut block_files = Vec::new();
    for spanned in sections {
        let section = spanned.get_ref();
        let id = section.id.get_ref();
        // Unwritten channels carry an empty span: point at the tenant's table instead.
        let channels_span = match section.channels.span() {
            span if span.end == 0 => spanned.span(),
            span => span,
        };
        let channels = section.channels.get_ref();
        if channels.is_empty() {
            return Err(source.invalid(
                "tenants.channels",
                Some(channels_span),
                "a tenant needs at least one channel",
            ));
        }
        if let Some(&channel) = channels.iter().find(|&&c| !delivery.delivers(c)) {
            return Err(source.invalid(
                "tenants.channels",
                Some(channels_span),
                format!(
                    "tenant `{id}` offers {channel} but no {channel} delivery is configured; \
                     add [delivery.{channel}] or leave {channel} out of its channels"
                ),
            ));
        }
        let line = source.line(&section.id.span());
        if let Some(first) = seen.insert(id, line) {
            let first = first
                .map(|l| format!(" (first at line {l})"))
                .unwrap_or_default();
            return Err(source.invalid(
                "tenants.id",
                Some(section.id.span()),
                format!("tenant `{id}` is defined twice{first}"),
            ));
        }
        let (destinations, block_file) = destinations(section, source)?;
        if let Some((path, place)) = block_file {
            block_files.push((tenants.len(), path, place));
        }
        tenants.push(Tenant {
            id: id.clone(),
            channels: channels.clone(),
            auto_create: section.auto_create,
            reveal_account: section.reveal_account,
            display_name: section.name.clone(),
            destinations,
            challenge: challenge(section, source)?,
        });
    }
    if !seen.contains_key(default_tenant.as_str()) {
        let message = format!(
            "no tenant has the id `{default_tenant}`, the tenant of requests that name none"
        );
        return Err(if server.default_tenant.span().end > 0 {
            source.invalid(
                "server.default_tenant",
                Some(server.default_tenant.span()),
                message,
            )
        } else {
            source.invalid(
                "tenants.id",
                Some(sections[0].get_ref().id.span()),
                format!("{message}; add one, or set server.default_tenant"),
            )
        });
    }
    Ok(TenantsModel {
        default_tenant,
        tenants,
        block_files,
    })
}

/// A tenant's proof-of-work challenge settings.
fn challenge(section: &TenantSection, source: &Source<'_>) -> Result<ChallengePolicy, ConfigError> {
    let mut policy = ChallengePolicy::default();
    if let Some(mode) = &section.challenge {
        policy.mode = ChallengeMode::parse(mode.get_ref()).ok_or_else(|| {
            source.invalid(
                "tenants.challenge",
                Some(mode.span()),
                format!(
                    "`{}` is not a challenge mode; use \"never\", \"always\" or \"under_attack\"",
                    mode.get_ref()
                ),
            )
        })?;
    }
    if let Some(max) = &section.challenge_max_number {
        // Zero makes the work nothing; past ten million a phone takes too long to sign in.
        if !(1..=10_000_000).contains(max.get_ref()) {
            return Err(source.invalid(
                "tenants.challenge_max_number",
                Some(max.span()),
                "must be between 1 and 10000000",
            ));
        }
        policy.max_number = *max.get_ref();
    }
    Ok(policy)
}

/// A tenant's destination rules, and its block file (path and place) to read when
/// building.
fn destinations(
    section: &TenantSection,
    source: &Source<'_>,
) -> Result<(Destinations, Option<(String, Place)>), ConfigError> {
    let sms_countries = match &section.sms_countries {
        Some(list) => Some(sms_countries(list, source)?),
        None => None,
    };
    let email_domains = match &section.email_domains {
        Some(list) => EmailDomains::Only(Arc::new(email_domains(list, source)?)),
        None => EmailDomains::Any,
    };
    let block_file = match &section.email_domains_block_file {
        // An allow list already refuses every other domain: a block list beside it could
        // only be a mistake about which one holds.
        Some(file) if section.email_domains.is_some() => {
            return Err(source.invalid(
                "tenants.email_domains_block_file",
                Some(file.span()),
                "cannot be set with email_domains: an allow list already refuses every \
                 domain off it; keep one of the two",
            ));
        }
        Some(file) => Some((
            file.get_ref().clone(),
            source.place("tenants.email_domains_block_file", Some(file.span())),
        )),
        None => None,
    };
    let destinations = Destinations {
        sms_countries,
        allow_voip: section.allow_voip,
        email_domains,
    };
    Ok((destinations, block_file))
}

/// `sms_countries`, upper-cased, each a region the numbering plan knows.
fn sms_countries(
    list: &Spanned<Vec<Spanned<String>>>,
    source: &Source<'_>,
) -> Result<HashSet<String>, ConfigError> {
    const KEY: &str = "tenants.sms_countries";
    if list.get_ref().is_empty() {
        return Err(source.invalid(
            KEY,
            Some(list.span()),
            "an empty list sends SMS nowhere; leave sms out of channels instead",
        ));
    }
    let database: &phonenumber::metadata::Database = &phonenumber::metadata::DATABASE;
    let mut countries = HashSet::with_capacity(list.get_ref().len());
    for code in list.get_ref() {
        let region = code.get_ref().trim().to_ascii_uppercase();
        // Two letters: the plan's `001` (numbers of no country, such as +800) is no
        // country a tenant serves.
        let known = region.len() == 2
            && region.bytes().all(|b| b.is_ascii_alphabetic())
            && database.by_id(region.as_str()).is_some();
        if !known {
            return Err(source.invalid(
                KEY,
                Some(code.span()),
                format!(
                    "`{}` is not a country the phone numbering plan knows; use ISO 3166-1 \
                     alpha-2 codes such as \"GB\" or \"US\"",
                    code.get_ref()
                ),
            ));
        }
        countries.insert(region);
    }
    Ok(countries)
}

/// `email_domains`, each in the one spelling addresses are normalized to.
fn email_domains(
    list: &Spanned<Vec<Spanned<String>>>,
    source: &Source<'_>,
) -> Result<HashSet<String>, ConfigError> {
    const KEY: &str = "tenants.email_domains";
    if list.get_ref().is_empty() {
        return Err(source.invalid(
            KEY,
            Some(list.span()),
            "an empty list sends email nowhere; leave email out of channels instead",
        ));
    }
    list.get_ref()
        .iter()
        .map(|domain| {
            mail_domain(domain.get_ref()).ok_or_else(|| {
                source.invalid(
                    KEY,
                    Some(domain.span()),
                    format!("`{}` is not a mail domain", domain.get_ref()),
                )
            })
        })
        .collect()
}

/// A domain as [`Identifier::email`] writes an address's: lower case, A-labels; `None`
/// when no address could have it.
fn mail_domain(domain: &str) -> Option<String> {
    // The same normalization addresses get, so `Exämple.com` here matches
    // `a@exämple.com` typed there.
    let address = Identifier::email(&format!("x@{}", domain.trim())).ok()?;
    let (_, domain) = address.as_str().rsplit_once('@')?;
    Some(domain.to_owned())
}

/// A block file's domains: one a line, `#` to the end of a line a comment, blank lines
/// skipped. An entry that is no mail domain is the error, with its line number.
fn block_list(text: &str) -> Result<HashSet<String>, (usize, String)> {
    let mut domains = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let domain = mail_domain(entry).ok_or_else(|| (number + 1, entry.to_owned()))?;
        domains.insert(domain);
    }
    Ok(domains)
}

/// With no `[[tenants]]`, the engine makes the default tenant alone, offering email and
/// SMS (as [`Tenant::new`] does): both need a sender.
fn implied_default_is_served(
    default_tenant: &str,
    delivery: &DeliveryModel,
    source: &Source<'_>,
) -> Result<(), ConfigError> {
    let implied = Tenant::new(default_tenant);
    let Some(&missing) = implied.channels.iter().find(|&&c| !delivery.delivers(c)) else {
        return Ok(());
    };
    let written = delivery.written_channels();
    let offered: Vec<&str> = written.iter().map(|(c, _)| c.as_str()).collect();
    let line = written.first().and_then(|(_, line)| *line);
    let place = Place {
        key: "delivery".into(),
        line,
    };
    Err(source.at(
        &place,
        format!(
            "only {} delivery is configured, but with no [[tenants]] the tenant `{default_tenant}` \
             offers {}; add [delivery.{missing}], or a [[tenants]] entry with id = \"{default_tenant}\" \
             and channels = [{}]",
            offered.join(" and "),
            channel_list(&implied.channels),
            offered
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ))
}

fn channel_list(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::ConfigError;
    use crate::gate::{DestinationRefusal, GateError, SendRequest};
    use crate::http::Front;
    use crate::identifier::Identifier;

    fn parse_in(text: &str, dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", dir)
    }

    /// Sends a code to `identifier` in the default tenant: the refusal, if any.
    async fn refusal(front: &Front, identifier: &str) -> Option<DestinationRefusal> {
        let identifier = match identifier.strip_prefix('+') {
            Some(_) => Identifier::phone(identifier),
            None => Identifier::email(identifier),
        }
        .expect("a valid identifier");
        let request = SendRequest {
            tenant: None,
            identifier,
            client_ip: None,
            locale: None,
        };
        match front.gate().send(request).await {
            Ok(_) => None,
            Err(GateError::DestinationRefused(refusal)) => Some(refusal),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn destination_rules_come_from_the_tenants_keys() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[tenants]]\nid = \"default\"\nsms_countries = [\"GB\", \"ie\"]\n\
                    allow_voip = true\nemail_domains = [\"Example.COM\", \"exämple.org\"]\n";
        let front = parse_in(text, dir.path()).unwrap().build().unwrap();
        for (allowed, expected) in [
            ("+447400123456", None),
            ("+353850123456", None),
            // VoIP allowed, in the UK.
            ("+445612345678", None),
            ("+14155552671", Some(DestinationRefusal::SmsCountry)),
            ("+449012345678", Some(DestinationRefusal::NumberType)),
            ("alice@example.com", None),
            ("vidn@xn--exmple-cua.org", None),
            (
                "alice@mail.example.com",
                Some(DestinationRefusal::EmailDomain),
            ),
        ] {
            assert_eq!(refusal(&front, allowed).await, expected, "{allowed}");
        }

        // Without the keys: every country and domain, VoIP refused.
        let front = parse_in("[[tenants]]\nid = \"default\"\n", dir.path())
            .unwrap()
            .build()
            .unwrap();
        for (identifier, expected) in [
            ("+14155552671", None),
            ("alice@anything.example", None),
            ("+445612345678", Some(DestinationRefusal::NumberType)),
        ] {
            assert_eq!(refusal(&front, identifier).await, expected, "{identifier}");
        }
    }

    #[tokio::test]
    async fn a_block_file_is_read_from_the_config_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("disposable.txt"),
            "# disposable mail\nmailinator.com\n\n  YOPmail.com  # and its aliases\n",
        )
        .unwrap();
        let text = "[[tenants]]\nid = \"default\"\nemail_domains_block_file = \"disposable.txt\"\n";
        let path = etc.join("gate.toml");
        std::fs::write(&path, text).unwrap();
        let front = Config::from_file(&path).unwrap().build().unwrap();
        for (identifier, expected) in [
            ("alice@example.com", None),
            ("a@mailinator.com", Some(DestinationRefusal::EmailDomain)),
            ("a@x.mailinator.com", Some(DestinationRefusal::EmailDomain)),
            ("a@yopmail.com", Some(DestinationRefusal::EmailDomain)),
            // The comment is no domain.
            ("a@aliases.example", None),
        ] {
            assert_eq!(refusal(&front, identifier).await, expected, "{identifier}");
        }

        // Taken from another folder, the file is not there, and the error says where it
        // looked.
        let error = parse_in(text, dir.path()).err().unwrap().to_string();
        let looked = dir.path().join("disposable.txt").display().to_string();
        assert!(
            error.contains("test.toml:3: `tenants.email_domains_block_file`")
                && error.contains(&format!("cannot read {looked}")),
            "{error}"
        );

        // An entry that is no domain is named with its line in the block file.
        std::fs::write(
            dir.path().join("disposable.txt"),
            "ok.example\n\nnot a domain\n",
        )
        .unwrap();
        let error = parse_in(text, dir.path()).err().unwrap().to_string();
        assert!(
            error.contains("test.toml:3: `tenants.email_domains_block_file`")
                && error.contains("disposable.txt:3: `not a domain` is not a mail domain"),
            "{error}"
        );
    }

    #[test]
    fn destination_mistakes_name_the_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            (
                "[[tenants]]\nid = \"default\"\nsms_countries = [\"GB\",\n  \"UK\"]\n",
                "test.toml:4: `tenants.sms_countries`: `UK` is not a country the phone \
                 numbering plan knows",
            ),
            (
                "[[tenants]]\nid = \"default\"\nsms_countries = [\"001\"]\n",
                "test.toml:3: `tenants.sms_countries`: `001` is not a country",
            ),
            (
                "[[tenants]]\nid = \"default\"\nsms_countries = [\"GBR\"]\n",
                "test.toml:3: `tenants.sms_countries`: `GBR` is not a country",
            ),
            (
                "[[tenants]]\nid = \"default\"\n\nsms_countries = []\n",
                "test.toml:4: `tenants.sms_countries`: an empty list sends SMS nowhere",
            ),
            (
                "[[tenants]]\nid = \"default\"\nemail_domains = [\"example.com\", \"a@example.com\"]\n",
                "test.toml:3: `tenants.email_domains`: `a@example.com` is not a mail domain",
            ),
            (
                "[[tenants]]\nid = \"default\"\nemail_domains = [\"localhost\"]\n",
                "test.toml:3: `tenants.email_domains`: `localhost` is not a mail domain",
            ),
            (
                "[[tenants]]\nid = \"default\"\nemail_domains = []\n",
                "test.toml:3: `tenants.email_domains`: an empty list sends email nowhere",
            ),
            (
                "[[tenants]]\nid = \"default\"\nemail_domains = [\"example.com\"]\n\
                 email_domains_block_file = \"disposable.txt\"\n",
                "test.toml:4: `tenants.email_domains_block_file`: cannot be set with \
                 email_domains",
            ),
            (
                "[[tenants]]\nid = \"default\"\nallow_voip = \"yes\"\n",
                "line 3",
            ),
            (
                "[[tenants]]\nid = \"default\"\nchallenge = \"sometimes\"\n",
                "test.toml:3: `tenants.challenge`: `sometimes` is not a challenge mode",
            ),
            (
                "[[tenants]]\nid = \"default\"\n\nchallenge_max_number = 0\n",
                "test.toml:4: `tenants.challenge_max_number`: must be between",
            ),
        ] {
            let error = parse_in(text, dir.path()).err().unwrap().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn challenge_settings_come_from_the_tenants_keys() {
        use crate::gate::{ChallengeMode, ChallengePolicy};
        let dir = tempfile::tempdir().unwrap();
        let text = "[[tenants]]\nid = \"default\"\nchallenge = \"always\"\n\
                    challenge_max_number = 5000\n[[tenants]]\nid = \"other\"\n";
        let front = parse_in(text, dir.path()).unwrap().build().unwrap();
        let policy = front.gate().challenge_policy(None).unwrap();
        assert_eq!(policy.mode, ChallengeMode::Always);
        assert_eq!(policy.max_number, 5000);
        let other = front.gate().challenge_policy(Some("other")).unwrap();
        assert_eq!(other, ChallengePolicy::default());
    }

    #[test]
    fn block_lists_skip_comments_and_blank_lines() {
        let domains = super::block_list("# list\n\nA.example\nb.example # note\n   \n").unwrap();
        let mut domains: Vec<_> = domains.into_iter().collect();
        domains.sort();
        assert_eq!(domains, ["a.example", "b.example"]);
        assert_eq!(
            super::block_list("a.example\n*.b.example\n"),
            Err((2, "*.b.example".to_owned()))
        );
    }
}
