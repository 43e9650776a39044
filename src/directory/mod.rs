//! Who exists: the accounts a tenant already knows.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::identifier::Identifier;

/// An existing account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Stable account id: the `sub` of its tokens.
    pub subject: String,
}

/// The directory could not answer.
#[derive(Debug, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct DirectoryError(pub String);

/// Looks up accounts by identifier.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The account of `identifier` in `tenant`, if there is one.
    async fn find(
        &self,
        tenant: &str,
        identifier: &Identifier,
    ) -> Result<Option<Account>, DirectoryError>;
}

/// Knows no one: every identity is new, and tenants decide by `auto_create` whether new
/// identities may sign in. The account id is the normalized identifier itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDirectory;

#[async_trait]
impl Directory for NoDirectory {
    async fn find(
        &self,
        _tenant: &str,
        _identifier: &Identifier,
    ) -> Result<Option<Account>, DirectoryError> {
        Ok(None)
    }
}

/// A fixed list of accounts, per tenant.
#[derive(Clone, Debug, Default)]
pub struct StaticDirectory {
    accounts: HashMap<(String, Identifier), Account>,
}

impl StaticDirectory {
    /// An empty directory.
    pub fn new() -> StaticDirectory {
        StaticDirectory::default()
    }

    /// Adds an account.
    pub fn with_account(mut self, tenant: &str, identifier: Identifier, subject: &str) -> Self {
        self.accounts.insert(
            (tenant.to_owned(), identifier),
            Account {
                subject: subject.to_owned(),
            },
        );
        self
    }
}

#[async_trait]
impl Directory for StaticDirectory {
    async fn find(
        &self,
        tenant: &str,
        identifier: &Identifier,
    ) -> Result<Option<Account>, DirectoryError> {
        Ok(self
            .accounts
            .get(&(tenant.to_owned(), identifier.clone()))
            .cloned())
    }
}
