//! `[[tenants]]` and `server.default_tenant`: who signs in, by which channels. Checked
//! against `[delivery]`, so a channel without a sender is refused at its line here rather
//! than when the engine is built. Plain values: nothing to build.

use std::collections::HashMap;

use toml::Spanned;

use super::delivery::DeliveryModel;
use super::schema::{ServerSection, TenantSection};
use super::{ConfigError, Place, Source};
use crate::gate::Tenant;
use crate::identifier::Channel;

/// The tenants, checked.
pub(super) struct TenantsModel {
    /// Which tenant requests that name none belong to.
    pub(super) default_tenant: String,
    /// Empty: the engine makes the default tenant alone, offering every channel.
    pub(super) tenants: Vec<Tenant>,
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
        });
    }
    // Line of each id, for the duplicate's message.
    let mut seen: HashMap<&str, Option<usize>> = HashMap::new();
    let mut tenants = Vec::with_capacity(sections.len());
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
        tenants.push(Tenant {
            id: id.clone(),
            channels: channels.clone(),
            auto_create: section.auto_create,
            reveal_account: section.reveal_account,
            display_name: section.name.clone(),
            destinations: crate::gate::Destinations::default(),
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
    })
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
