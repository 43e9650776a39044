//! The guard's decisions, from counts the store answered: no I/O here, so each rule is
//! tested on numbers alone.

use std::time::Duration;

use crate::otp::Timestamp;

use super::ThrottleReason;

/// A window the clock is in: its index since the epoch and how far into it `now` is.
/// Windows are aligned to the epoch, so every gate on a store keys the same window alike.
pub(super) fn window_of(now: Timestamp, window: Duration) -> (u64, Duration) {
    let length = window_millis(window);
    (now.0 / length, Duration::from_millis(now.0 % length))
}

/// How long from `now` until the window it is in ends.
pub(super) fn until_window_end(now: Timestamp, window: Duration) -> Duration {
    let length = window_millis(window);
    Duration::from_millis(length - now.0 % length)
}

fn window_millis(window: Duration) -> u64 {
    // A zero window is refused by the configuration; one millisecond keeps this total.
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// An approximate sliding window from two fixed ones: the events of the current window,
/// and those of the previous one weighted by how much of it the sliding window still
/// covers. Exact when events were spread evenly over the previous window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Sliding {
    /// Events in the current fixed window.
    pub current: u64,
    /// Events in the one before.
    pub previous: u64,
    /// How far into the current window the clock is.
    pub elapsed: Duration,
    /// The windows' length.
    pub window: Duration,
}

impl Sliding {
    /// Events in the last `window`, estimated.
    pub fn estimate(&self) -> f64 {
        self.current as f64 + self.previous as f64 * (1.0 - self.covered())
    }

    /// The share of the current window that has passed, in [0, 1].
    fn covered(&self) -> f64 {
        (self.elapsed.as_secs_f64() / self.window.as_secs_f64().max(f64::MIN_POSITIVE)).min(1.0)
    }

    /// Whether one more event would take the estimate past `cap`.
    pub fn full(&self, cap: u64) -> bool {
        // A hair of tolerance: the estimate is a float, the cap a count.
        self.estimate() + 1.0 > cap as f64 + 1e-9
    }

    /// How long until one more event fits under `cap`, if no other event is counted
    /// meanwhile (refused sends are not): at least a second.
    pub fn retry_after(&self, cap: u64) -> Duration {
        let room = cap.saturating_sub(1) as f64;
        let window = self.window.as_secs_f64();
        let covered = self.covered();
        let wait = if self.current as f64 > room {
            // Not before the next window, and then until the current window's weight has
            // fallen enough: current × (1 − f) ≤ room.
            let weight = 1.0 - room / self.current as f64;
            window * (1.0 - covered) + window * weight
        } else if self.previous > 0 {
            // Within this window, once previous × (1 − f) ≤ room − current.
            let needed = 1.0 - (room - self.current as f64) / self.previous as f64;
            (window * (needed - covered)).max(0.0)
        } else {
            0.0
        };
        let millis = (wait.min(window * 2.0) * 1000.0).round() as u64;
        Duration::from_millis(millis).max(Duration::from_secs(1))
    }
}

/// The pumping signature: enough sends to judge by, and too few of them verified. Real
/// people type the codes they asked for; a pumped range never does.
pub(super) fn pumped(sends: &Sliding, verified: &Sliding, min_sends: u64, min_ratio: f64) -> bool {
    let sent = sends.estimate();
    if sent < min_sends.max(1) as f64 {
        return false;
    }
    verified.estimate() / sent < min_ratio
}

/// Whether one more message costing `price` takes `spent` past `cap`.
pub(super) fn over_budget(spent: f64, price: f64, cap: f64) -> bool {
    // A hair of tolerance, so that prices adding up to the cap exactly still fit.
    spent + price > cap + 1e-9 * cap.abs().max(1.0)
}

/// What the counts read for one send say about it, each rule's count when it is on.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Readings {
    /// How long the prefix's cool-down still holds, when it is cooling down.
    pub cooling: Option<Duration>,
    /// Delivered sends and verified codes of the prefix, with the pumping thresholds.
    pub pumping: Option<(Sliding, Sliding, u64, f64)>,
    /// The prefix's sends and its cap.
    pub prefix: Option<(Sliding, u64)>,
    /// The country's sends and its cap.
    pub country: Option<(Sliding, u64)>,
    /// Messages this hour and this day, with their caps.
    pub messages: [Option<(u64, u64)>; 2],
    /// Estimated cost spent this hour and this day, with their caps.
    pub cost: [Option<(f64, f64)>; 2],
    /// This message's estimated price.
    pub price: f64,
}

/// Which window a budget counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Period {
    /// The hour (UTC, aligned to the epoch).
    Hour,
    /// The day (UTC).
    Day,
}

impl Period {
    pub const BOTH: [Period; 2] = [Period::Hour, Period::Day];

    pub fn length(self) -> Duration {
        match self {
            Period::Hour => Duration::from_secs(3600),
            Period::Day => Duration::from_secs(24 * 3600),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }
}

/// What the guard decides for one send.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Verdict {
    /// Send it.
    Admit,
    /// Refuse it for `retry_after`.
    Throttle {
        /// Which cap.
        reason: ThrottleReason,
        /// How long.
        retry_after: Duration,
        /// What the cap is of: the prefix, the country or the period.
        scope: Scope,
        /// Whether this send found the pumping signature (rather than a cool-down
        /// already armed): the cool-down is to be armed now.
        arm_cool_down: bool,
    },
}

/// What a cap counts: the prefix, the country, or the budget's period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// The number's prefix.
    Prefix,
    /// The number's country calling code.
    Country,
    /// A budget period.
    Period(Period),
}

/// The rules in order, most specific first, so a refusal names its real cause: a prefix
/// cooling down or found pumped, then the prefix's and the country's velocity, then the
/// gate-wide budget, which only a flood no other rule caught should reach.
pub(super) fn decide(readings: &Readings, now: Timestamp, cool_down: Duration) -> Verdict {
    let throttle = |reason, retry_after, scope| Verdict::Throttle {
        reason,
        retry_after,
        scope,
        arm_cool_down: false,
    };
    if let Some(remaining) = readings.cooling {
        return throttle(
            ThrottleReason::Pumping,
            remaining.max(Duration::from_secs(1)),
            Scope::Prefix,
        );
    }
    if let Some((sends, verified, min_sends, min_ratio)) = &readings.pumping
        && pumped(sends, verified, *min_sends, *min_ratio)
    {
        return Verdict::Throttle {
            reason: ThrottleReason::Pumping,
            retry_after: cool_down,
            scope: Scope::Prefix,
            arm_cool_down: true,
        };
    }
    if let Some((sends, cap)) = &readings.prefix
        && sends.full(*cap)
    {
        return throttle(
            ThrottleReason::Prefix,
            sends.retry_after(*cap),
            Scope::Prefix,
        );
    }
    if let Some((sends, cap)) = &readings.country
        && sends.full(*cap)
    {
        return throttle(
            ThrottleReason::Country,
            sends.retry_after(*cap),
            Scope::Country,
        );
    }
    for (period, reading) in Period::BOTH.into_iter().zip(&readings.messages) {
        if let Some((sent, cap)) = reading
            && sent + 1 > *cap
        {
            let wait = until_window_end(now, period.length());
            return throttle(ThrottleReason::Budget, wait, Scope::Period(period));
        }
    }
    for (period, reading) in Period::BOTH.into_iter().zip(&readings.cost) {
        if let Some((spent, cap)) = reading
            && over_budget(*spent, readings.price, *cap)
        {
            let wait = until_window_end(now, period.length());
            return throttle(ThrottleReason::Budget, wait, Scope::Period(period));
        }
    }
    Verdict::Admit
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn sliding(current: u64, previous: u64, elapsed_secs: u64) -> Sliding {
        Sliding {
            current,
            previous,
            elapsed: Duration::from_secs(elapsed_secs),
            window: HOUR,
        }
    }

    #[test]
    fn the_previous_window_weighs_what_the_sliding_window_still_covers() {
        assert_eq!(sliding(10, 0, 0).estimate(), 10.0);
        // A quarter into the window: three quarters of the previous one still count.
        assert_eq!(sliding(10, 100, 900).estimate(), 85.0);
        assert_eq!(sliding(10, 100, 1800).estimate(), 60.0);
        assert_eq!(sliding(0, 100, 3600).estimate(), 0.0);
        // A burst at the end of a window is still seen at the start of the next: the
        // edge two fixed windows would let through twice.
        assert!(sliding(0, 100, 1).full(50));
        assert!(!sliding(49, 0, 3000).full(50));
        assert!(sliding(50, 0, 3000).full(50));
    }

    #[test]
    fn retry_after_is_when_one_more_fits() {
        // 60 of 100 previous + 10 current, cap 50: room 49 − 10 = 39 of the previous
        // counts at 1 − f = 0.39, so f = 0.61: 2196 s into the window, 1296 s from now.
        let full = sliding(10, 100, 900);
        let wait = full.retry_after(50);
        assert_eq!(wait.as_secs(), 1296);
        let then = sliding(10, 100, 900 + wait.as_secs());
        assert!(!then.full(50), "{}", then.estimate());
        assert!(sliding(10, 100, 900 + wait.as_secs() - 2).full(50));
        // The current window alone is over the cap: into the next one, until its weight
        // has fallen to 49 of 98: half of the next window.
        let over = sliding(98, 0, 600);
        assert_eq!(over.retry_after(50).as_secs(), 3000 + 1800);
        // Never less than a second.
        assert_eq!(sliding(49, 1, 3599).retry_after(50), Duration::from_secs(1));
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let now = Timestamp(7_200_000 + 1_500);
        assert_eq!(window_of(now, HOUR), (2, Duration::from_millis(1_500)));
        assert_eq!(
            until_window_end(now, HOUR),
            Duration::from_millis(3_598_500)
        );
        assert_eq!(
            until_window_end(Timestamp(86_400_000 * 3), Period::Day.length()),
            Period::Day.length()
        );
    }

    #[test]
    fn the_pumping_signature_needs_enough_sends_and_too_few_verified() {
        // Too few sends to judge: never pumped, whatever was verified.
        assert!(!pumped(&sliding(19, 0, 0), &sliding(0, 0, 0), 20, 0.2));
        assert!(pumped(&sliding(20, 0, 0), &sliding(0, 0, 0), 20, 0.2));
        assert!(pumped(&sliding(20, 0, 0), &sliding(3, 0, 0), 20, 0.2));
        assert!(!pumped(&sliding(20, 0, 0), &sliding(4, 0, 0), 20, 0.2));
        // A healthy prefix: most codes typed.
        assert!(!pumped(
            &sliding(500, 400, 600),
            &sliding(420, 330, 600),
            20,
            0.2
        ));
        // Sends and verifies weigh alike across the window edge.
        assert!(pumped(&sliding(0, 40, 1800), &sliding(0, 3, 1800), 20, 0.2));
    }

    #[test]
    fn budgets_count_messages_and_cost() {
        assert!(!over_budget(9.95, 0.05, 10.0));
        assert!(over_budget(9.96, 0.05, 10.0));
        assert!(over_budget(0.0, 0.05, 0.04));
        let now = Timestamp(3_600_000 * 100 + 600_000);
        let mut readings = Readings {
            messages: [Some((99, 100)), Some((500, 1000))],
            price: 0.05,
            ..Readings::default()
        };
        assert_eq!(decide(&readings, now, HOUR), Verdict::Admit);
        readings.messages[0] = Some((100, 100));
        assert_eq!(
            decide(&readings, now, HOUR),
            Verdict::Throttle {
                reason: ThrottleReason::Budget,
                retry_after: Duration::from_secs(3000),
                scope: Scope::Period(Period::Hour),
                arm_cool_down: false,
            }
        );
        readings.messages = [None, None];
        readings.cost = [None, Some((19.97, 20.0))];
        let Verdict::Throttle {
            retry_after, scope, ..
        } = decide(&readings, now, HOUR)
        else {
            panic!("a day's cost spent");
        };
        assert_eq!(scope, Scope::Period(Period::Day));
        assert_eq!(
            retry_after,
            until_window_end(now, Period::Day.length()),
            "until the day's window frees"
        );
    }

    #[test]
    fn a_refusal_names_the_most_specific_cause() {
        let now = Timestamp(3_600_000 * 100);
        let pumped_prefix = (sliding(30, 0, 0), sliding(0, 0, 0), 20, 0.2);
        let readings = Readings {
            pumping: Some(pumped_prefix),
            prefix: Some((sliding(30, 0, 0), 10)),
            messages: [Some((1000, 10)), None],
            ..Readings::default()
        };
        let Verdict::Throttle {
            reason,
            arm_cool_down,
            retry_after,
            ..
        } = decide(&readings, now, HOUR)
        else {
            panic!("throttled");
        };
        assert_eq!(reason, ThrottleReason::Pumping);
        assert!(arm_cool_down);
        assert_eq!(retry_after, HOUR);
        // Cooling down: refused without arming again.
        let cooling = Readings {
            cooling: Some(Duration::from_secs(120)),
            ..readings.clone()
        };
        assert!(matches!(
            decide(&cooling, now, HOUR),
            Verdict::Throttle { reason: ThrottleReason::Pumping, arm_cool_down: false, retry_after, .. }
                if retry_after == Duration::from_secs(120)
        ));
        // Healthy prefix over its velocity cap.
        let healthy = Readings {
            pumping: Some((sliding(30, 0, 0), sliding(25, 0, 0), 20, 0.2)),
            ..readings.clone()
        };
        assert!(matches!(
            decide(&healthy, now, HOUR),
            Verdict::Throttle {
                reason: ThrottleReason::Prefix,
                ..
            }
        ));
        let country = Readings {
            country: Some((sliding(5, 0, 0), 5)),
            ..Readings::default()
        };
        assert!(matches!(
            decide(&country, now, HOUR),
            Verdict::Throttle {
                reason: ThrottleReason::Country,
                scope: Scope::Country,
                ..
            }
        ));
    }
}
