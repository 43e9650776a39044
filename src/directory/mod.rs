//! Who exists: the accounts a tenant already knows.
//!
//! Three sources: [`NoDirectory`] (nobody; tenants auto-create), [`StaticDirectory`] (a
//! file of users) and [`HttpDirectory`] (a lookup into the app, cached).

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use serde::Deserialize;

use crate::identifier::Identifier;

mod http_lookup;

pub use http_lookup::HttpDirectory;

/// An existing account.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Account {
    /// Stable account id: the `sub` of its tokens.
    #[serde(alias = "id")]
    pub subject: String,
    /// Its email address, if it has one.
    #[serde(default)]
    pub email: Option<String>,
    /// Its phone number (E.164), if it has one.
    #[serde(default)]
    pub phone: Option<String>,
}

/// The directory could not answer.
#[derive(Debug, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct DirectoryError(pub String);

/// Looks up accounts.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The account of `identifier` in `tenant`, if there is one.
    async fn find(
        &self,
        tenant: &str,
        identifier: &Identifier,
    ) -> Result<Option<Account>, DirectoryError>;

    /// The account with id `id` in `tenant`, if there is one.
    async fn find_by_id(&self, tenant: &str, id: &str) -> Result<Option<Account>, DirectoryError>;

    /// Whether the directory can answer now, for readiness probes. A directory that
    /// holds its accounts itself always can: the default answers `Ok`.
    async fn ping(&self) -> Result<(), DirectoryError> {
        Ok(())
    }
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

    async fn find_by_id(
        &self,
        _tenant: &str,
        _id: &str,
    ) -> Result<Option<Account>, DirectoryError> {
        Ok(None)
    }
}

/// A fixed list of accounts, per tenant.
#[derive(Clone, Debug, Default)]
pub struct StaticDirectory {
    by_identifier: HashMap<(String, Identifier), Account>,
    by_id: HashMap<(String, String), Account>,
}

/// A users file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    /// Unreadable.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// Not the expected TOML.
    #[error("{0}: {1}")]
    Parse(String, String),
    /// A user with an invalid email or phone, or a duplicate.
    #[error("{file}: user `{id}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The user.
        id: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default = "default_tenant")]
    tenant: String,
}

fn default_tenant() -> String {
    "default".into()
}

impl StaticDirectory {
    /// An empty directory.
    pub fn new() -> StaticDirectory {
        StaticDirectory::default()
    }

    /// Adds an account reachable by `identifier`.
    pub fn with_account(self, tenant: &str, identifier: Identifier, subject: &str) -> Self {
        let (email, phone) = match &identifier {
            Identifier::Email(e) => (Some(e.clone()), None),
            Identifier::Phone(p) => (None, Some(p.clone())),
        };
        self.with_user(
            tenant,
            Account {
                subject: subject.to_owned(),
                email,
                phone,
            },
        )
    }

    /// Adds an account under its email and phone (already normalized).
    pub fn with_user(mut self, tenant: &str, account: Account) -> Self {
        if let Some(email) = &account.email {
            self.by_identifier.insert(
                (tenant.to_owned(), Identifier::Email(email.clone())),
                account.clone(),
            );
        }
        if let Some(phone) = &account.phone {
            self.by_identifier.insert(
                (tenant.to_owned(), Identifier::Phone(phone.clone())),
                account.clone(),
            );
        }
        self.by_id
            .insert((tenant.to_owned(), account.subject.clone()), account);
        self
    }

    /// Reads a TOML users file: `[[users]]` tables with `id`, `email`, `phone`, `tenant`.
    pub fn from_file(path: &Path) -> Result<StaticDirectory, UsersFileError> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| UsersFileError::Read(name.clone(), e))?;
        let file: UsersFile = toml::from_str(&text)
            .map_err(|e| UsersFileError::Parse(name.clone(), e.to_string()))?;
        let mut directory = StaticDirectory::new();
        for user in file.users {
            let invalid = |message: String| UsersFileError::Invalid {
                file: name.clone(),
                id: user.id.clone(),
                message,
            };
            let email = match &user.email {
                Some(e) => Some(
                    Identifier::email(e)
                        .map_err(|e| invalid(e.to_string()))?
                        .as_str()
                        .to_owned(),
                ),
                None => None,
            };
            let phone = match &user.phone {
                Some(p) => Some(
                    Identifier::phone(p)
                        .map_err(|e| invalid(e.to_string()))?
                        .as_str()
                        .to_owned(),
                ),
                None => None,
            };
            if directory
                .by_id
                .contains_key(&(user.tenant.clone(), user.id.clone()))
            {
                return Err(invalid("defined twice".into()));
            }
            directory = directory.with_user(
                &user.tenant,
                Account {
                    subject: user.id.clone(),
                    email,
                    phone,
                },
            );
        }
        Ok(directory)
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
            .by_identifier
            .get(&(tenant.to_owned(), identifier.clone()))
            .cloned())
    }

    async fn find_by_id(&self, tenant: &str, id: &str) -> Result<Option<Account>, DirectoryError> {
        Ok(self.by_id.get(&(tenant.to_owned(), id.to_owned())).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_users_file_is_read_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[users]]\nid = \"u1\"\nemail = \"Ann@Example.com\"\nphone = \"+14155552671\"\n\n[[users]]\nid = \"u2\"\nemail = \"bo@example.com\"\ntenant = \"7\"\n",
        )
        .unwrap();
        let directory = StaticDirectory::from_file(&path).unwrap();
        let ann = directory
            .find("default", &Identifier::email("ann@example.com").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ann.subject, "u1");
        assert_eq!(ann.phone.as_deref(), Some("+14155552671"));
        let by_phone = directory
            .find("default", &Identifier::phone("+14155552671").unwrap())
            .await
            .unwrap();
        assert_eq!(by_phone, Some(ann.clone()));
        assert_eq!(
            directory.find_by_id("default", "u1").await.unwrap(),
            Some(ann)
        );
        assert!(
            directory
                .find_by_id("default", "u2")
                .await
                .unwrap()
                .is_none(),
            "tenants are separate"
        );
        assert!(directory.find_by_id("7", "u2").await.unwrap().is_some());
    }

    #[test]
    fn bad_users_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        for (text, expected) in [
            (
                "[[users]]\nid = \"u1\"\nemail = \"nope\"\n",
                "invalid email",
            ),
            ("[[users]]\nid = \"u1\"\nphone = \"555\"\n", "invalid phone"),
            (
                "[[users]]\nid = \"u1\"\n[[users]]\nid = \"u1\"\n",
                "defined twice",
            ),
            ("[[users]]\nid = \"u1\"\nname = \"x\"\n", "unknown field"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = StaticDirectory::from_file(&path).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
