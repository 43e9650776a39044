//! Set-ups that run but are rarely wanted: nothing protected, codes printed to the log, a
//! signing key made at start, a shared store that does not answer. Found from a loaded
//! [`Config`]; `otpgate check` prints them and `otpgate run` logs them at start.
//! Mistakes no one could want (a protected prefix that is not a path) are refused while
//! the file is read, never merely warned about.

use super::delivery::ConsoleDelivery;
use super::store::StoreProbe;
use super::{Config, Place};

/// What a [`SetupWarning`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupWarningKind {
    /// No `[[protect]]` prefix: the gate offers sign-in and adds identities, and lets
    /// every request through.
    NothingProtected,
    /// A sender prints codes to the log instead of sending them.
    ConsoleDelivery,
    /// No `token.private_key` or `token.secret`: a fresh key is made at every start.
    GeneratedKey,
    /// The shared store does not answer.
    StoreUnreachable,
}

/// A set-up that runs but is rarely what anyone wants. Its `Display` names the file, the
/// line where known, and the dotted key, like a [`ConfigError`](super::ConfigError).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupWarning {
    kind: SetupWarningKind,
    file: String,
    line: Option<usize>,
    key: String,
    message: String,
}

impl SetupWarning {
    /// What it is about.
    pub fn kind(&self) -> SetupWarningKind {
        self.kind
    }

    /// The dotted key it is about (`delivery.email`, `store.redis_url`, ...).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The line the key is written on, when the file writes it.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, and what to do about it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for SetupWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": `{}`: {}", self.key, self.message)
    }
}

/// What the model knows that the warnings need once the sections are built.
pub(super) struct SetupFacts {
    pub(super) console: ConsoleDelivery,
    /// No key is configured: the engine makes one at start.
    pub(super) generated_key: bool,
    /// For a shared store, a separate client to ask whether it answers.
    pub(super) store_probe: Option<StoreProbe>,
}

const CONSOLE_RISK: &str = "codes are printed to the log instead of sent, so anyone who reads \
     the log can sign in as anyone";

impl Config {
    /// The set-ups in this configuration that run but are rarely wanted, in the order of
    /// the file's sections. For a Redis store this sends one `PING`, bounded by
    /// `store.timeout`, on a client of its own (the store requests use connects later,
    /// in the runtime that serves them).
    pub async fn warnings(&self) -> Vec<SetupWarning> {
        let mut warnings = Vec::new();
        let mut warn = |kind, place: &Place, message: String| {
            warnings.push(SetupWarning {
                kind,
                file: self.file.clone(),
                line: place.line,
                key: place.key.clone(),
                message,
            });
        };
        let unwritten = |key: &str| Place {
            key: key.into(),
            line: None,
        };
        if let Some(probe) = &self.facts.store_probe
            && let Err(error) = probe.ping().await
        {
            warn(
                SetupWarningKind::StoreUnreachable,
                &probe.place,
                format!(
                    "{} does not answer PING ({error}); the gate starts anyway, and requests \
                     that need the store answer 503 until it answers",
                    probe.description
                ),
            );
        }
        if self.facts.generated_key {
            warn(
                SetupWarningKind::GeneratedKey,
                &unwritten("token.private_key"),
                "not set, so a fresh key is made at every start: tokens die with the process \
                 and several instances cannot share sessions; make one with `otpgate keygen \
                 --out keys/otpgate.pem` run in this file's folder (it refuses to overwrite an \
                 existing file) and set token.private_key = \"keys/otpgate.pem\", which is \
                 read from this file's folder"
                    .into(),
            );
        }
        if self.http.protect.is_empty() {
            warn(
                SetupWarningKind::NothingProtected,
                &unwritten("protect"),
                "no [[protect]] prefix, so nothing is protected: the gate only offers sign-in \
                 and adds identities to requests that carry a token, and passes every request \
                 through signed in or not; add [[protect]] with prefix = \"/app/\" for each \
                 path that needs a signed-in user"
                    .into(),
            );
        }
        match &self.facts.console {
            ConsoleDelivery::Default => warn(
                SetupWarningKind::ConsoleDelivery,
                &unwritten("delivery"),
                format!(
                    "no [delivery.email] or [delivery.sms], so both use the console: \
                     {CONSOLE_RISK}; configure an smtp, webhook or twilio sender outside \
                     development"
                ),
            ),
            ConsoleDelivery::Senders(places) => {
                for place in places {
                    warn(
                        SetupWarningKind::ConsoleDelivery,
                        place,
                        format!(
                            "kind = \"console\": {CONSOLE_RISK}; use an smtp, webhook or twilio \
                             sender outside development"
                        ),
                    );
                }
            }
        }
        warnings
    }
}
