//! Building a gate: the policy rules, tenants and their senders, the defaults.

use std::sync::Arc;
use std::time::Duration;

use super::{UnreachableStore, capture};
use crate::delivery::Senders;
use crate::gate::{BuildError, Gate, Tenant, validate_policy};
use crate::identifier::Channel;
use crate::otp::CodePolicy;
use crate::store::{MemoryStore, Store};

/// Policies that break one rule each, with the rule's name.
fn invalid_policies() -> Vec<(&'static str, CodePolicy)> {
    vec![
        (
            "zero attempts",
            CodePolicy {
                max_attempts: 0,
                ..CodePolicy::default()
            },
        ),
        (
            "zero failure budget",
            CodePolicy {
                failure_budget: 0,
                ..CodePolicy::default()
            },
        ),
        (
            "failure budget over 100",
            CodePolicy {
                failure_budget: 101,
                ..CodePolicy::default()
            },
        ),
        (
            "zero ttl",
            CodePolicy {
                ttl: Duration::ZERO,
                ..CodePolicy::default()
            },
        ),
    ]
}

#[test]
fn validate_policy_refuses_each_broken_rule() {
    for (rule, policy) in invalid_policies() {
        assert!(
            matches!(validate_policy(&policy), Err(BuildError::InvalidPolicy(_))),
            "{rule} is accepted"
        );
    }
}

#[test]
fn validate_policy_accepts_the_default_and_the_limits() {
    assert!(validate_policy(&CodePolicy::default()).is_ok());
    let at_limits = CodePolicy {
        max_attempts: 1,
        failure_budget: 100,
        ttl: Duration::from_secs(1),
        ..CodePolicy::default()
    };
    assert!(validate_policy(&at_limits).is_ok());
}

#[test]
fn build_refuses_what_validate_policy_refuses() {
    for (rule, policy) in invalid_policies() {
        let built = Gate::builder().policy(policy).build();
        assert!(
            matches!(built, Err(BuildError::InvalidPolicy(_))),
            "{rule}: {built:?}"
        );
    }
}

#[test]
fn a_channel_without_a_sender_is_refused() {
    let (senders, _inbox) = capture();
    let email_only = Senders {
        sms: None,
        ..senders
    };
    let built = Gate::builder()
        .senders(email_only)
        .tenant(Tenant::new("default"))
        .build();
    match built {
        Err(BuildError::MissingSender { tenant, channel }) => {
            assert_eq!(tenant, "default");
            assert_eq!(channel, Channel::Sms);
        }
        other => panic!("expected a missing sender, got {other:?}"),
    }
}

#[test]
fn a_tenant_without_the_unsent_channel_builds() {
    let (senders, _inbox) = capture();
    let email_only = Senders {
        sms: None,
        ..senders
    };
    let gate = Gate::builder()
        .senders(email_only)
        .tenant(Tenant {
            channels: vec![Channel::Email],
            ..Tenant::new("default")
        })
        .build();
    assert!(gate.is_ok(), "{gate:?}");
}

#[test]
fn a_tenant_defined_twice_is_refused() {
    let (senders, _inbox) = capture();
    let built = Gate::builder()
        .senders(senders)
        .tenant(Tenant::new("default"))
        .tenant(Tenant::new("acme"))
        .tenant(Tenant::new("acme"))
        .build();
    assert!(
        matches!(&built, Err(BuildError::DuplicateTenant(id)) if id == "acme"),
        "{built:?}"
    );
}

#[test]
fn a_default_tenant_that_is_not_defined_is_refused() {
    let (senders, _inbox) = capture();
    let built = Gate::builder()
        .senders(senders.clone())
        .tenant(Tenant::new("acme"))
        .build();
    assert!(
        matches!(&built, Err(BuildError::MissingDefaultTenant(id)) if id == "default"),
        "{built:?}"
    );

    let renamed = Gate::builder()
        .senders(senders)
        .tenant(Tenant::new("acme"))
        .default_tenant("acme")
        .build()
        .expect("the default tenant is defined");
    assert_eq!(renamed.default_tenant(), "acme");
}

#[test]
fn the_defaults_build_one_default_tenant() {
    let gate = Gate::builder().build().expect("the defaults build");
    assert_eq!(gate.default_tenant(), "default");
    let policy = gate.policy();
    let default = CodePolicy::default();
    assert_eq!(policy.ttl, default.ttl);
    assert_eq!(policy.max_attempts, default.max_attempts);
    assert_eq!(policy.failure_budget, default.failure_budget);
    assert_eq!(gate.store().describe(), MemoryStore::default().describe());
    assert_eq!(gate.delivery_stats().sent, 0);
    assert_eq!(gate.decoys_dropped(), 0);
}

#[test]
fn a_default_tenant_alone_is_made_under_its_chosen_id() {
    let gate = Gate::builder()
        .default_tenant("main")
        .build()
        .expect("an implicit tenant under the chosen id");
    assert_eq!(gate.default_tenant(), "main");
}

#[tokio::test]
async fn the_store_handed_in_is_the_one_used() {
    let store: Arc<dyn Store> = Arc::new(UnreachableStore);
    let gate = Gate::builder()
        .store(Arc::clone(&store))
        .build()
        .expect("any store builds");
    // Measured on the way, but the one handed in answers: an unreachable store.
    assert_eq!(gate.store().describe(), store.describe());
    assert!(gate.store().get_value("any").await.is_err());
    assert!(
        Gate::builder()
            .build()
            .unwrap()
            .store()
            .get_value("any")
            .await
            .is_ok()
    );
}

#[test]
fn tenant_channels_names_what_each_tenant_offers() {
    let gate = crate::Gate::builder().build().unwrap();
    assert_eq!(gate.tenant_channels(Some("nope")), None);
    assert_eq!(gate.tenant_channels(None).map(|c| c.len()), Some(2));
}
