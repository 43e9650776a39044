//! `[directory]`: where the gate looks up existing accounts — nowhere, a users file, or
//! the app's HTTP endpoint.

use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::schema::{DirectoryKind, DirectorySection};
use super::{ConfigError, Place, Source};
use crate::directory::{Directory, HttpDirectory, NoDirectory, StaticDirectory};

/// `[directory]`, checked; the users file is named, not read yet.
pub(super) enum DirectoryModel {
    /// No directory: accounts are only what the store knows.
    None,
    /// A users file, relative to the config's directory.
    Static { path: String, place: Place },
    /// The app answers lookups over HTTP; answers are cached for `cache_ttl`.
    Http {
        url: reqwest::Url,
        cache_ttl: Duration,
    },
}

/// Checks `[directory]`; its absence is [`DirectoryModel::None`].
pub(super) fn check(
    section: Option<&Spanned<DirectorySection>>,
    source: &Source<'_>,
) -> Result<DirectoryModel, ConfigError> {
    let Some(section) = section else {
        return Ok(DirectoryModel::None);
    };
    let table_span = section.span();
    let directory = section.get_ref();
    Ok(match directory.kind {
        DirectoryKind::None => DirectoryModel::None,
        DirectoryKind::Static => {
            let file = directory.file.as_ref().ok_or_else(|| {
                source.invalid(
                    "directory.file",
                    Some(table_span.clone()),
                    "a static directory needs file",
                )
            })?;
            DirectoryModel::Static {
                path: file.get_ref().clone(),
                place: source.place("directory.file", Some(file.span())),
            }
        }
        DirectoryKind::Http => {
            let url = directory.url.as_ref().ok_or_else(|| {
                source.invalid(
                    "directory.url",
                    Some(table_span.clone()),
                    "an http directory needs url",
                )
            })?;
            DirectoryModel::Http {
                url: url.get_ref().0.parse().map_err(|e| {
                    source.invalid(
                        "directory.url",
                        Some(url.span()),
                        format!("invalid URL: {e}"),
                    )
                })?,
                cache_ttl: directory.cache_ttl.map_or(Duration::from_secs(60), |d| d.0),
            }
        }
    })
}

impl DirectoryModel {
    /// Makes the directory, reading a users file.
    pub(super) fn build(self, source: &Source<'_>) -> Result<Arc<dyn Directory>, ConfigError> {
        Ok(match self {
            DirectoryModel::None => Arc::new(NoDirectory),
            DirectoryModel::Static { path, place } => Arc::new(
                StaticDirectory::from_file(&source.dir.join(path))
                    .map_err(|e| source.at(&place, e.to_string()))?,
            ),
            DirectoryModel::Http { url, cache_ttl } => Arc::new(HttpDirectory::new(url, cache_ttl)),
        })
    }
}
