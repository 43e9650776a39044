//! One SMS send's reads: which counters it hits in its first round trip, and what their
//! answers say, and the verdict.

use std::net::IpAddr;
use std::time::Duration;

use crate::otp::Timestamp;
use crate::store::{Answer, Op, SetMode, StoreError, keys};

use super::super::super::{Gate, GateError, audit};
use super::rules::{self, Period, Readings, Scope, Sliding, Verdict};
use super::{SmsGuard, ThrottleReason};

#[derive(Clone, Debug)]
pub(super) struct PendingHit {
    pub key: String,
    pub ttl: Duration,
    pub at: Timestamp,
}

/// Which count a read is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Counter {
    /// Delivered sends to a prefix.
    Prefix,
    /// Verified codes of a prefix.
    Verified,
    /// Delivered sends to a country calling code.
    Country,
    /// Messages in a budget period.
    Messages(Period),
    /// Cost steps in a budget period.
    Cost(Period),
}

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::Prefix => "prefix",
            Counter::Verified => "verified",
            Counter::Country => "country",
            Counter::Messages(_) => "messages",
            Counter::Cost(_) => "cost",
        }
    }
}

/// What one SMS send asks the store in its first round trip, and what it needs to judge
/// the answers and, once delivered, to be counted.
pub(in crate::gate) struct SmsCheck {
    pub(super) now: Timestamp,
    pub(super) country: u16,
    pub(super) prefix: String,
    pub(super) price: f64,
    /// Pending hits of earlier sends and verifies, added by this send's round trip.
    pub(super) flushed: Vec<PendingHit>,
    pub(super) reads: Vec<Read>,
    pub(super) cool_down_key: Option<String>,
}

/// One count read: the current window's counter and its reads-only companion, and for a
/// sliding window the previous window's pair.
pub(super) struct Read {
    counter: Counter,
    current: [String; 2],
    previous: Option<[String; 2]>,
    ttl: Duration,
    elapsed: Duration,
    window: Duration,
}

impl SmsCheck {
    fn pair(counter: Counter, scope: &str, window: Duration, index: u64) -> [String; 2] {
        [false, true].map(|reads| keys::sms_counter(counter.name(), scope, window, index, reads))
    }

    pub(super) fn read_sliding(&mut self, counter: Counter, scope: &str, window: Duration) {
        let (index, elapsed) = rules::window_of(self.now, window);
        self.reads.push(Read {
            counter,
            current: Self::pair(counter, scope, window, index),
            previous: index
                .checked_sub(1)
                .map(|previous| Self::pair(counter, scope, window, previous)),
            // A window's counters outlive it by a window: the next one reads them as its
            // previous.
            ttl: window * 2,
            elapsed,
            window,
        });
    }

    pub(super) fn read_fixed(&mut self, counter: Counter, period: Period) {
        let (index, elapsed) = rules::window_of(self.now, period.length());
        self.reads.push(Read {
            counter,
            current: Self::pair(counter, period.label(), period.length(), index),
            previous: None,
            ttl: period.length(),
            elapsed,
            window: period.length(),
        });
    }

    /// The operations, for the send's first batch: the pending hits first (a pipeline
    /// runs in order, so the reads see them), then the reads, then the cool-down flag.
    pub(in crate::gate) fn ops(&self) -> Vec<Op<'_>> {
        let mut ops = Vec::with_capacity(self.flushed.len() + self.reads.len() * 4 + 1);
        for hit in &self.flushed {
            ops.push(Op::Hit {
                key: &hit.key,
                window: hit.ttl,
                now: hit.at,
            });
        }
        for read in &self.reads {
            for key in read.current.iter().chain(read.previous.iter().flatten()) {
                ops.push(Op::Hit {
                    key,
                    window: read.ttl,
                    now: self.now,
                });
            }
        }
        if let Some(key) = &self.cool_down_key {
            ops.push(Op::GetValue { key });
        }
        ops
    }
}

impl SmsGuard {
    /// The readings the answers to `check`'s operations give, in the order
    /// [`SmsCheck::ops`] asked.
    pub(super) fn readings(
        &self,
        check: &SmsCheck,
        answers: Vec<Result<Answer, StoreError>>,
    ) -> Result<Readings, StoreError> {
        let mut answers = answers.into_iter();
        let mut next = || {
            answers.next().unwrap_or_else(|| {
                Err(StoreError::Corrupt(
                    "the store answered too few operations".into(),
                ))
            })
        };
        // The pending hits' answers say nothing this send needs; a failed one is lost,
        // which undercounts and never refuses.
        for _ in &check.flushed {
            let _ = next();
        }
        let mut hit = || -> Result<u64, StoreError> { Ok(next()?.into_hit()?.count) };
        let mut counts = Vec::with_capacity(check.reads.len());
        for read in &check.reads {
            let events = |n: u64, r: u64| n.saturating_sub(r);
            let current = events(hit()?, hit()?);
            let previous = match read.previous {
                Some(_) => events(hit()?, hit()?),
                None => 0,
            };
            counts.push((read.counter, current, previous, read.elapsed, read.window));
        }
        let cooling = match &check.cool_down_key {
            Some(_) => next()?.into_value()?.map(|until| {
                // A value this guard did not write still holds for a full cool-down.
                let until = until.parse().map(Timestamp);
                let cool_down = self
                    .pumping
                    .map_or(SmsGuard::DEFAULT_COOL_DOWN, |p| p.cool_down);
                until.map_or(cool_down, |until| check.now.until(until))
            }),
            None => None,
        };
        let mut readings = Readings {
            cooling: cooling.filter(|remaining| !remaining.is_zero()),
            price: check.price,
            ..Readings::default()
        };
        let sliding = |counter| {
            counts.iter().find(|c| c.0 == counter).map(
                |&(_, current, previous, elapsed, window)| Sliding {
                    current,
                    previous,
                    elapsed,
                    window,
                },
            )
        };
        let prefix = sliding(Counter::Prefix);
        if let (Some(pumping), Some(sends), Some(verified)) =
            (self.pumping, prefix, sliding(Counter::Verified))
        {
            readings.pumping = Some((sends, verified, pumping.min_sends, pumping.min_verify_ratio));
        }
        readings.prefix = self.per_prefix.zip(prefix).map(|(cap, sends)| (sends, cap));
        readings.country = self
            .per_country
            .zip(sliding(Counter::Country))
            .map(|(cap, sends)| (sends, cap));
        let step = self.cost_step().unwrap_or(0.0);
        for (i, period) in Period::BOTH.into_iter().enumerate() {
            readings.messages[i] = self.messages[i]
                .zip(sliding(Counter::Messages(period)))
                .map(|(cap, sent)| (sent.current, cap));
            readings.cost[i] = self.cost[i]
                .zip(sliding(Counter::Cost(period)))
                .map(|(cap, spent)| (spent.current as f64 * step, cap));
        }
        Ok(readings)
    }
}

impl Gate {
    /// Judges an SMS send from the answers to `check`'s operations: `Ok` to send it, or
    /// the throttle. A prefix found pumped has its cool-down armed, and each trip is
    /// logged once (the store decides which gate logs): only a refused send writes.
    pub(in crate::gate) async fn judge_sms(
        &self,
        check: &SmsCheck,
        answers: Vec<Result<Answer, StoreError>>,
        tenant: &str,
        client: Option<IpAddr>,
    ) -> Result<(), GateError> {
        let guard = &self.inner.sms_guard;
        let readings = guard
            .readings(check, answers)
            .map_err(GateError::StoreUnavailable)?;
        let cool_down = guard
            .pumping
            .map_or(SmsGuard::DEFAULT_COOL_DOWN, |p| p.cool_down);
        let Verdict::Throttle {
            reason,
            retry_after,
            scope,
            arm_cool_down,
        } = rules::decide(&readings, check.now, cool_down)
        else {
            return Ok(());
        };
        crate::metrics::sms_throttled(reason.label());
        let store = &self.inner.store;
        // One write decides which send logs the trip: the cool-down itself for a pumped
        // prefix, a marker for the window otherwise.
        let first = if arm_cool_down {
            let until = check.now.plus(cool_down).0.to_string();
            store
                .set_value(
                    &keys::sms_cool_down(&check.prefix),
                    &until,
                    cool_down,
                    SetMode::IfAbsent,
                )
                .await
        } else if reason == ThrottleReason::Pumping {
            Ok(false)
        } else {
            let (scope_name, window) = match scope {
                Scope::Prefix => (check.prefix.clone(), guard.window),
                Scope::Country => (check.country.to_string(), guard.window),
                Scope::Period(period) => (period.label().to_owned(), period.length()),
            };
            let (index, _) = rules::window_of(check.now, window);
            let marker = keys::sms_tripped(reason.label(), &scope_name, index);
            store
                .set_value(&marker, "1", window, SetMode::IfAbsent)
                .await
        };
        match first {
            Ok(true) => {
                self.raise_alert(cool_down).await;
                let (prefix, country, period) = match scope {
                    Scope::Prefix => (Some(check.prefix.as_str()), Some(check.country), None),
                    Scope::Country => (None, Some(check.country), None),
                    Scope::Period(period) => (None, None, Some(period.label())),
                };
                audit::sms_guard_tripped(
                    tenant,
                    reason.label(),
                    (prefix, country, period),
                    retry_after,
                    client,
                );
            }
            Ok(false) => {}
            // The send is refused all the same; only the log line may be missing.
            Err(error) => tracing::warn!(%error, "the SMS guard could not note a trip"),
        }
        Err(GateError::SendsThrottled {
            retry_after,
            reason,
        })
    }
}
