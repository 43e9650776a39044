//! `[sms_guard]`: what stops SMS pumping. Absent, no SMS send is counted; present, the
//! pumping signature is on with its defaults and every cap it writes is added. Nothing
//! here is read or resolved, so this section has no building step.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::schema::SmsGuardSection;
use super::{ConfigError, Source};
use crate::gate::SmsGuard;

/// The shortest velocity window: shorter ones see too few sends to judge a prefix by.
const MIN_WINDOW: Duration = Duration::from_secs(60);
/// The longest window: each window's counters live two windows in the store.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The longest cool-down.
const MAX_COOL_DOWN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks `[sms_guard]` into the guard the gate runs.
pub(super) fn check(
    section: Option<&Spanned<SmsGuardSection>>,
    source: &Source<'_>,
) -> Result<SmsGuard, ConfigError> {
    let Some(section) = section else {
        return Ok(SmsGuard::default());
    };
    let s = section.get_ref();
    let invalid = |key: &str, span: Range<usize>, message: String| {
        source.invalid(&format!("sms_guard.{key}"), Some(span), message)
    };
    let mut guard = SmsGuard::recommended();
    if let Some(digits) = &s.prefix_digits {
        let value = *digits.get_ref();
        // Fewer than 3 digits is a country code or less: every number of a country
        // would be judged as one prefix.
        if !(3..=15).contains(&value) {
            return Err(invalid(
                "prefix_digits",
                digits.span(),
                format!(
                    "{value} is not a prefix length from 3 to 15 digits (country code included)"
                ),
            ));
        }
        guard = guard.with_prefix_digits(value);
    }
    if let Some(window) = &s.window {
        let value = window.get_ref().0;
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&value) {
            return Err(invalid(
                "window",
                window.span(),
                "must be from 1m to 24h".into(),
            ));
        }
        guard = guard.with_window(value);
    }
    let cap = |key: &str, value: &Option<Spanned<u64>>| -> Result<Option<u64>, ConfigError> {
        match value {
            // 0 would refuse every SMS: leaving the key out is how to have no cap.
            Some(v) if *v.get_ref() == 0 => Err(invalid(
                key,
                v.span(),
                "0 would refuse every SMS; leave the key out for no cap".into(),
            )),
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    };
    let money = |key: &str, value: &Option<Spanned<f64>>| -> Result<Option<f64>, ConfigError> {
        match value {
            Some(v) if !(v.get_ref().is_finite() && *v.get_ref() > 0.0) => Err(invalid(
                key,
                v.span(),
                "must be a positive amount; leave the key out for no cap".into(),
            )),
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    };
    if let Some(v) = cap("per_country", &s.per_country)? {
        guard = guard.with_country_cap(v);
    }
    if let Some(v) = cap("per_prefix", &s.per_prefix)? {
        guard = guard.with_prefix_cap(v);
    }
    if let Some(v) = cap("hourly_messages", &s.hourly_messages)? {
        guard = guard.with_hourly_messages(v);
    }
    if let Some(v) = cap("daily_messages", &s.daily_messages)? {
        guard = guard.with_daily_messages(v);
    }
    if let Some(v) = money("hourly_cost", &s.hourly_cost)? {
        guard = guard.with_hourly_cost(v);
    }
    if let Some(v) = money("daily_cost", &s.daily_cost)? {
        guard = guard.with_daily_cost(v);
    }
    guard = pumping(s, guard, &invalid)?;
    for (place, price) in &s.prices {
        let key = format!("prices.{place}");
        let value = *price.get_ref();
        if !(value.is_finite() && value >= 0.0) {
            return Err(invalid(
                &key,
                price.span(),
                "must be a price of 0 or more".into(),
            ));
        }
        if place == "default" {
            guard = guard.with_default_price(value);
        } else if is_calling_code(place) || place.parse::<phonenumber::country::Id>().is_ok() {
            guard = guard.with_price(place, value);
        } else {
            return Err(invalid(
                &key,
                price.span(),
                format!(
                    "`{place}` is not an ISO 3166-1 region (like GB), a country calling code (like 44) or `default`"
                ),
            ));
        }
    }
    Ok(guard)
}

/// The pumping signature's settings over `guard`, or none with `pumping = false`.
fn pumping(
    s: &SmsGuardSection,
    guard: SmsGuard,
    invalid: &dyn Fn(&str, Range<usize>, String) -> ConfigError,
) -> Result<SmsGuard, ConfigError> {
    if let Some(on) = &s.pumping
        && !*on.get_ref()
    {
        return Ok(guard.without_pumping());
    }
    let min_sends = match &s.min_sends {
        Some(v) if *v.get_ref() == 0 => {
            return Err(invalid(
                "min_sends",
                v.span(),
                "must be at least 1: a prefix is judged once it has this many sends".into(),
            ));
        }
        Some(v) => *v.get_ref(),
        None => SmsGuard::DEFAULT_MIN_SENDS,
    };
    let ratio = match &s.min_verify_ratio {
        Some(v) if !(*v.get_ref() > 0.0 && *v.get_ref() <= 1.0) => {
            return Err(invalid(
                "min_verify_ratio",
                v.span(),
                format!("{} is not a share above 0 and at most 1", v.get_ref()),
            ));
        }
        Some(v) => *v.get_ref(),
        None => SmsGuard::DEFAULT_MIN_VERIFY_RATIO,
    };
    let cool_down = match &s.cool_down {
        Some(v) if !(MIN_WINDOW..=MAX_COOL_DOWN).contains(&v.get_ref().0) => {
            return Err(invalid(
                "cool_down",
                v.span(),
                "must be from 1m to 7d".into(),
            ));
        }
        Some(v) => v.get_ref().0,
        None => SmsGuard::DEFAULT_COOL_DOWN,
    };
    Ok(guard.with_pumping(min_sends, ratio, cool_down))
}

/// One to three digits, not starting with 0: the shape of a country calling code.
fn is_calling_code(text: &str) -> bool {
    (1..=3).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0')
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::schema::FileConfig;

    fn checked(text: &str) -> Result<SmsGuard, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let source = Source {
            name: "gate.toml",
            text,
            dir: Path::new("."),
        };
        check(file.sms_guard.as_ref(), &source).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_guards_nothing_and_present_looks_for_pumping() {
        assert!(!checked("").unwrap().is_on());
        assert_eq!(checked("[sms_guard]\n").unwrap(), SmsGuard::recommended());
        assert!(!checked("[sms_guard]\npumping = false\n").unwrap().is_on());
    }

    #[test]
    fn every_setting_is_taken() {
        let text = "[sms_guard]\nprefix_digits = 6\nwindow = \"30m\"\nper_country = 5000\n\
                    per_prefix = 200\nhourly_messages = 1000\ndaily_messages = 10000\n\
                    hourly_cost = 50\ndaily_cost = 400.5\nmin_sends = 30\n\
                    min_verify_ratio = 0.25\ncool_down = \"2h\"\n\
                    [sms_guard.prices]\nGB = 0.04\n\"44\" = 0.03\nUS = 0.008\ndefault = 0.06\n";
        let expected = SmsGuard::default()
            .with_prefix_digits(6)
            .with_window(Duration::from_secs(1800))
            .with_country_cap(5000)
            .with_prefix_cap(200)
            .with_hourly_messages(1000)
            .with_daily_messages(10_000)
            .with_hourly_cost(50.0)
            .with_daily_cost(400.5)
            .with_pumping(30, 0.25, Duration::from_secs(7200))
            .with_price("GB", 0.04)
            .with_price("44", 0.03)
            .with_price("US", 0.008)
            .with_default_price(0.06);
        let guard = checked(text).unwrap();
        assert_eq!(guard, expected);
        // A region's price wins over its calling code's; others take their code's or
        // the default.
        assert_eq!(guard.price_of("+447400123456"), 0.04);
        // Guernsey shares +44 and is no GB number: the code's price.
        assert_eq!(guard.price_of("+447911123456"), 0.03);
        assert_eq!(guard.price_of("+14155552671"), 0.008);
        assert_eq!(guard.price_of("+33612345678"), 0.06);
        assert_eq!(guard.prefix_of("+447400123456"), "447400");
    }

    #[test]
    fn mistakes_are_refused_with_the_key_and_line() {
        for (text, key, line) in [
            (
                "[sms_guard]\nprefix_digits = 2\n",
                "sms_guard.prefix_digits",
                2,
            ),
            ("[sms_guard]\n\nwindow = \"10s\"\n", "sms_guard.window", 3),
            ("[sms_guard]\nper_prefix = 0\n", "sms_guard.per_prefix", 2),
            (
                "[sms_guard]\ndaily_cost = -1.0\n",
                "sms_guard.daily_cost",
                2,
            ),
            ("[sms_guard]\nmin_sends = 0\n", "sms_guard.min_sends", 2),
            (
                "[sms_guard]\nmin_verify_ratio = 1.5\n",
                "sms_guard.min_verify_ratio",
                2,
            ),
            (
                "[sms_guard]\ncool_down = \"30d\"\n",
                "sms_guard.cool_down",
                2,
            ),
            ("[sms_guard.prices]\nXX = 0.1\n", "sms_guard.prices.XX", 2),
            ("[sms_guard.prices]\nGB = -0.1\n", "sms_guard.prices.GB", 2),
        ] {
            let error = checked(text).unwrap_err();
            assert!(
                error.starts_with(&format!("gate.toml:{line}: `{key}`: ")),
                "{text}: {error}"
            );
        }
        let error = checked("[sms_guard]\nper_prefx = 10\n").unwrap_err();
        assert!(error.contains("per_prefx"), "{error}");
    }
}
