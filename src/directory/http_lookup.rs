use std::time::Duration;

use async_trait::async_trait;

use super::{Account, Directory, DirectoryError};
use crate::identifier::Identifier;

/// Asks the app who exists: `GET {url}?tenant=..&email=..` (or `phone=`, or `id=`).
/// The app answers `200 {"id", "email", "phone"}` for an account and `404` for none;
/// anything else is a failure, which the gate answers with 503 and sends nothing.
/// Answers, found or not, are cached for `cache_ttl`.
pub struct HttpDirectory {
    client: reqwest::Client,
    url: reqwest::Url,
    cache: moka::future::Cache<String, Option<Account>>,
}

impl HttpDirectory {
    /// A directory asking `url`, with a 2 s timeout, caching answers for `cache_ttl`.
    pub fn new(url: reqwest::Url, cache_ttl: Duration) -> HttpDirectory {
        HttpDirectory {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            url,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    async fn lookup(
        &self,
        tenant: &str,
        field: &str,
        value: &str,
    ) -> Result<Option<Account>, DirectoryError> {
        let key = format!("{tenant}\u{1f}{field}\u{1f}{value}");
        if let Some(hit) = self.cache.get(&key).await {
            return Ok(hit);
        }
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("tenant", tenant)
            .append_pair(field, value);
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| DirectoryError(format!("lookup failed: {}", e.without_url())))?;
        let answer = match response.status() {
            reqwest::StatusCode::NOT_FOUND => None,
            status if status.is_success() => {
                Some(response.json::<Account>().await.map_err(|e| {
                    DirectoryError(format!(
                        "lookup answer is not an account: {}",
                        e.without_url()
                    ))
                })?)
            }
            status => return Err(DirectoryError(format!("lookup answered {status}"))),
        };
        self.cache.insert(key, answer.clone()).await;
        Ok(answer)
    }
}

impl std::fmt::Debug for HttpDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDirectory")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Directory for HttpDirectory {
    async fn find(
        &self,
        tenant: &str,
        identifier: &Identifier,
    ) -> Result<Option<Account>, DirectoryError> {
        let field = match identifier {
            Identifier::Email(_) => "email",
            Identifier::Phone(_) => "phone",
        };
        self.lookup(tenant, field, identifier.as_str()).await
    }

    async fn find_by_id(&self, tenant: &str, id: &str) -> Result<Option<Account>, DirectoryError> {
        self.lookup(tenant, "id", id).await
    }

    /// `GET {url}` without a query, never cached: any answer below 500 shows the app is
    /// there to answer lookups; no answer within the timeout, or a 5xx, does not.
    async fn ping(&self) -> Result<(), DirectoryError> {
        let response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| DirectoryError(format!("lookup failed: {}", e.without_url())))?;
        match response.status() {
            status if status.is_server_error() => {
                Err(DirectoryError(format!("lookup answered {status}")))
            }
            _ => Ok(()),
        }
    }
}
