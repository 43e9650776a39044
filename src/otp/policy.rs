//! The numbers that govern codes, guesses and sends.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::code::CodeFormat;

/// "N per duration", e.g. `5/10m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many events a window allows.
    pub count: u32,
    /// The window's length.
    pub per: Duration,
}

impl Rate {
    /// `count` events per `per`.
    pub const fn new(count: u32, per: Duration) -> Rate {
        Rate { count, per }
    }
}

/// A rate that is not of the form `N/duration`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid rate `{0}`: expected N/duration with N > 0, like \"5/10m\"")]
pub struct InvalidRate(pub String);

impl FromStr for Rate {
    type Err = InvalidRate;

    fn from_str(text: &str) -> Result<Rate, InvalidRate> {
        let invalid = || InvalidRate(text.to_owned());
        let (count, per) = text.split_once('/').ok_or_else(invalid)?;
        let count: u32 = count.trim().parse().map_err(|_| invalid())?;
        let per = humantime::parse_duration(per.trim()).map_err(|_| invalid())?;
        if count == 0 || per.is_zero() {
            return Err(invalid());
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// Growing back-off after consecutive failures of one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Failures allowed before any wait is imposed.
    pub free_failures: u32,
    /// The first wait; it doubles with each further failure.
    pub base: Duration,
    /// The longest single wait.
    pub max: Duration,
}

impl Backoff {
    /// How long after its last failure a destination with `failures` consecutive
    /// failures must wait before it may try again.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Everything that decides what a send or a verify may do.
#[derive(Clone, Debug)]
pub struct CodePolicy {
    /// Shape of generated codes.
    pub format: CodeFormat,
    /// How long a code stays valid.
    pub ttl: Duration,
    /// Wrong guesses allowed against one code (and the resends that replace it).
    pub max_attempts: u32,
    /// Least time between two sends to one destination.
    pub resend_cooldown: Duration,
    /// Sends allowed to one destination per window.
    pub sends_per_identifier: Rate,
    /// Consecutive failures of one destination, across all its codes, before it is locked
    /// (NIST SP 800-63B 5.2.2: at most 100).
    pub failure_budget: u32,
    /// Wait imposed between failures once the free ones are used.
    pub backoff: Backoff,
    /// How long consecutive failures are remembered after the last one; also how long
    /// a destination that spent its failure budget stays locked.
    pub failure_memory: Duration,
}

impl Default for CodePolicy {
    fn default() -> Self {
        CodePolicy {
            format: CodeFormat::default(),
            ttl: Duration::from_secs(5 * 60),
            max_attempts: 5,
            resend_cooldown: Duration::from_secs(30),
            sends_per_identifier: Rate::new(5, Duration::from_secs(10 * 60)),
            failure_budget: 100,
            backoff: Backoff {
                free_failures: 5,
                base: Duration::from_secs(1),
                max: Duration::from_secs(15 * 60),
            },
            failure_memory: Duration::from_secs(24 * 60 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            "5/10m".parse::<Rate>(),
            Ok(Rate::new(5, Duration::from_secs(600)))
        );
        assert_eq!(
            " 30 / 5m ".parse::<Rate>(),
            Ok(Rate::new(30, Duration::from_secs(300)))
        );
        for bad in ["5", "0/1m", "5/0s", "x/1m", "5/forever", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let backoff = CodePolicy::default().backoff;
        assert_eq!(backoff.delay(0), Duration::ZERO);
        assert_eq!(backoff.delay(4), Duration::ZERO);
        assert_eq!(backoff.delay(5), Duration::from_secs(1));
        assert_eq!(backoff.delay(6), Duration::from_secs(2));
        assert_eq!(backoff.delay(9), Duration::from_secs(16));
        assert_eq!(backoff.delay(30), Duration::from_secs(900));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(900));
    }
}
