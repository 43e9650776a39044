//! Velocity, budgets and the pumping signature, for SMS sends, over the store.
//!
//! Every count is a store window counter, keyed by a window aligned to the epoch, so
//! gates sharing a store share the counts. Two rules shape how they are kept:
//!
//! - **Only messages handed to the SMS sender count.** A refused send (by this guard, the
//!   per-IP limit, a resend cooldown, a full outbox) or a code to an unknown account that
//!   is never delivered costs nothing and proves nothing, and counting it would let a
//!   flood of refused requests spend the budget of real users. Whether a send is
//!   delivered is known only after its second round trip, so its counts are kept in this
//!   gate and added by its next SMS send's first round trip ("pending hits"); verified
//!   codes likewise. A send costs no round trip more; the counts lag this gate by the
//!   sends in flight.
//! - **A counter is read by hitting it.** The store's counters answer only to hits, so a
//!   read hits the counter (`…:n`, also hit by each counted event) and a companion hit by
//!   reads alone (`…:r`): events = n − r. Both go in the send's first round trip.
//!
//! Velocity windows slide: the current window's count plus the previous window's
//! weighted by how much of it the last `window` still covers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::identifier::Identifier;
use crate::otp::Timestamp;
use crate::store::keys;

mod check;
mod rules;

pub(in crate::gate) use check::SmsCheck;
use check::{Counter, PendingHit};
use rules::Period;

/// The cost budgets count in steps of this share of the smaller cost cap: fine enough to
/// stop within 0.5% of the cap, coarse enough that one message is a hit or two.
const COST_STEPS: f64 = 200.0;

/// At most this many pending hits ride on one send; the rest wait for the next.
const MAX_FLUSH: usize = 128;

/// At most this many pending hits are kept; past it the oldest are dropped (undercounts,
/// never a refusal).
const MAX_PENDING: usize = 65_536;

/// The gate-wide SMS guard. The default guards nothing;
/// [`recommended`](SmsGuard::recommended) looks for the pumping signature and caps
/// nothing else. Caps and prices are added with the `with_` methods.
pub struct SmsGuard {
    prefix_digits: usize,
    window: Duration,
    per_country: Option<u64>,
    per_prefix: Option<u64>,
    /// Messages per hour and per day.
    messages: [Option<u64>; 2],
    /// Estimated cost per hour and per day.
    cost: [Option<f64>; 2],
    prices: Prices,
    pumping: Option<Pumping>,
    pending: Mutex<Pending>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Pumping {
    min_sends: u64,
    min_verify_ratio: f64,
    cool_down: Duration,
}

#[derive(Clone, Debug, PartialEq)]
struct Prices {
    default: f64,
    /// By ISO 3166-1 alpha-2 region, upper case.
    regions: HashMap<String, f64>,
    /// By country calling code.
    codes: HashMap<u16, f64>,
}

/// Counts this gate has yet to add to the store.
#[derive(Default)]
struct Pending {
    hits: VecDeque<PendingHit>,
    /// Cost not yet a whole step.
    cost: f64,
}

impl Default for SmsGuard {
    fn default() -> Self {
        SmsGuard {
            prefix_digits: SmsGuard::DEFAULT_PREFIX_DIGITS,
            window: SmsGuard::DEFAULT_WINDOW,
            per_country: None,
            per_prefix: None,
            messages: [None, None],
            cost: [None, None],
            prices: Prices {
                default: SmsGuard::DEFAULT_PRICE,
                regions: HashMap::new(),
                codes: HashMap::new(),
            },
            pumping: None,
            pending: Mutex::new(Pending::default()),
        }
    }
}

impl Clone for SmsGuard {
    /// The same settings; counts not yet in the store stay with the original.
    fn clone(&self) -> Self {
        SmsGuard {
            prices: self.prices.clone(),
            pending: Mutex::new(Pending::default()),
            ..*self
        }
    }
}

impl PartialEq for SmsGuard {
    /// Equal settings.
    fn eq(&self, other: &Self) -> bool {
        self.prefix_digits == other.prefix_digits
            && self.window == other.window
            && self.per_country == other.per_country
            && self.per_prefix == other.per_prefix
            && self.messages == other.messages
            && self.cost == other.cost
            && self.prices == other.prices
            && self.pumping == other.pumping
    }
}

impl std::fmt::Debug for SmsGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsGuard")
            .field("prefix_digits", &self.prefix_digits)
            .field("window", &self.window)
            .field("per_country", &self.per_country)
            .field("per_prefix", &self.per_prefix)
            .field("messages", &self.messages)
            .field("cost", &self.cost)
            .field("prices", &self.prices)
            .field("pumping", &self.pumping)
            .finish_non_exhaustive()
    }
}

impl SmsGuard {
    /// The default length of a number prefix, country calling code included. Seven digits is
    /// a US/Canada exchange (`1` + area code + exchange: 10,000 numbers, the block carriers
    /// are assigned) and, elsewhere, the country code and the first 4-6 national digits: the
    /// size of the ranges that are leased out as premium or international revenue-share
    /// numbers, which is what pumping targets. Fewer digits would pool a pumped range with a
    /// carrier's real subscribers and dilute its verify ratio; more would let an attacker
    /// spread over so many prefixes that none reaches `min_sends`.
    pub const DEFAULT_PREFIX_DIGITS: usize = 7;

    /// The default velocity and pumping window.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

    /// The default number of delivered sends a prefix needs in the window before its verify
    /// ratio is judged.
    pub const DEFAULT_MIN_SENDS: u64 = 20;

    /// The default verify ratio under which a prefix counts as pumped. Real users type most
    /// codes they ask for (typically over 60%); a pumped range types none.
    pub const DEFAULT_MIN_VERIFY_RATIO: f64 = 0.2;

    /// The default cool-down of a prefix found pumped.
    pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(3600);

    /// The default estimated price of one SMS, in the price table's currency.
    pub const DEFAULT_PRICE: f64 = 0.05;

    /// The pumping signature with its defaults ([`SmsGuard::DEFAULT_MIN_SENDS`],
    /// [`SmsGuard::DEFAULT_MIN_VERIFY_RATIO`], [`SmsGuard::DEFAULT_COOL_DOWN`]) over [`SmsGuard::DEFAULT_WINDOW`], per
    /// prefix of [`SmsGuard::DEFAULT_PREFIX_DIGITS`]; no cap.
    pub fn recommended() -> SmsGuard {
        SmsGuard::default().with_pumping(
            SmsGuard::DEFAULT_MIN_SENDS,
            SmsGuard::DEFAULT_MIN_VERIFY_RATIO,
            SmsGuard::DEFAULT_COOL_DOWN,
        )
    }

    /// Prefixes of `digits` digits of the E.164 number, country code included (1 to 15).
    pub fn with_prefix_digits(mut self, digits: usize) -> Self {
        self.prefix_digits = digits.clamp(1, 15);
        self
    }

    /// The sliding window of the velocity caps and the pumping signature (at least a
    /// second).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_secs(1));
        self
    }

    /// At most `cap` messages per country calling code in the window.
    pub fn with_country_cap(mut self, cap: u64) -> Self {
        self.per_country = Some(cap);
        self
    }

    /// At most `cap` messages per number prefix in the window.
    pub fn with_prefix_cap(mut self, cap: u64) -> Self {
        self.per_prefix = Some(cap);
        self
    }

    /// At most `cap` messages in an hour (UTC hours), all numbers together.
    pub fn with_hourly_messages(mut self, cap: u64) -> Self {
        self.messages[0] = Some(cap);
        self
    }

    /// At most `cap` messages in a day (UTC days), all numbers together.
    pub fn with_daily_messages(mut self, cap: u64) -> Self {
        self.messages[1] = Some(cap);
        self
    }

    /// At most `cap` of estimated cost in an hour (see [`with_price`](Self::with_price)).
    pub fn with_hourly_cost(mut self, cap: f64) -> Self {
        self.cost[0] = Some(cap.max(0.0));
        self
    }

    /// At most `cap` of estimated cost in a day.
    pub fn with_daily_cost(mut self, cap: f64) -> Self {
        self.cost[1] = Some(cap.max(0.0));
        self
    }

    /// The price of one message to `place`: an ISO 3166-1 alpha-2 region (`GB`), or a
    /// country calling code in digits (`44`). A region's price wins over its code's.
    pub fn with_price(mut self, place: &str, price: f64) -> Self {
        let price = price.max(0.0);
        match place.parse::<u16>() {
            Ok(code) => {
                self.prices.codes.insert(code, price);
            }
            Err(_) => {
                self.prices
                    .regions
                    .insert(place.to_ascii_uppercase(), price);
            }
        }
        self
    }

    /// The price of a message to a place the table does not name ([`SmsGuard::DEFAULT_PRICE`]).
    pub fn with_default_price(mut self, price: f64) -> Self {
        self.prices.default = price.max(0.0);
        self
    }

    /// Throttles a prefix for `cool_down` once it has at least `min_sends` delivered
    /// sends in the window and fewer than `min_verify_ratio` of them verified.
    pub fn with_pumping(
        mut self,
        min_sends: u64,
        min_verify_ratio: f64,
        cool_down: Duration,
    ) -> Self {
        self.pumping = Some(Pumping {
            min_sends: min_sends.max(1),
            min_verify_ratio: min_verify_ratio.clamp(0.0, 1.0),
            cool_down: cool_down.max(Duration::from_secs(1)),
        });
        self
    }

    /// No pumping signature.
    pub fn without_pumping(mut self) -> Self {
        self.pumping = None;
        self
    }

    /// Whether any rule is on.
    pub fn is_on(&self) -> bool {
        self.per_country.is_some()
            || self.per_prefix.is_some()
            || self.messages.iter().any(Option::is_some)
            || self.cost.iter().any(Option::is_some)
            || self.pumping.is_some()
    }

    /// The estimated price of one message to `phone` (an E.164 number).
    pub fn price_of(&self, phone: &str) -> f64 {
        let (code, region) = country_of(phone);
        self.price_in(code, region)
    }

    /// The estimated price of one message to a number of calling `code` and `region`.
    fn price_in(&self, code: u16, region: Option<phonenumber::country::Id>) -> f64 {
        region
            .and_then(|region| self.prices.regions.get(region.as_ref()))
            .or_else(|| self.prices.codes.get(&code))
            .copied()
            .unwrap_or(self.prices.default)
    }

    /// The prefix `phone` is counted under: its first digits, country code included.
    pub fn prefix_of(&self, phone: &str) -> String {
        phone
            .chars()
            .filter(char::is_ascii_digit)
            .take(self.prefix_digits)
            .collect()
    }

    /// The size of one step of the cost counters: 1/[`COST_STEPS`] of the smaller cost
    /// cap, or a quarter of the highest price if that is more, so that a message is at
    /// most a few hits whatever the caps.
    fn cost_step(&self) -> Option<f64> {
        let smallest = self.cost.iter().flatten().copied().reduce(f64::min)?;
        let highest_price = self
            .prices
            .regions
            .values()
            .chain(self.prices.codes.values())
            .copied()
            .fold(self.prices.default, f64::max);
        Some((smallest / COST_STEPS).max(highest_price / 4.0).max(1e-6))
    }

    fn counts_prefix(&self) -> bool {
        self.per_prefix.is_some() || self.pumping.is_some()
    }

    /// What an SMS send to `identifier` at `now` asks the store, or `None` when the guard
    /// has nothing to ask (it is off, or `identifier` is no phone).
    pub(in crate::gate) fn check_for(
        &self,
        identifier: &Identifier,
        now: Timestamp,
    ) -> Option<SmsCheck> {
        let Identifier::Phone(phone) = identifier else {
            return None;
        };
        if !self.is_on() {
            return None;
        }
        // Parsed once: the country and the price both come from it.
        let (country, region) = country_of(phone);
        let prefix = self.prefix_of(phone);
        let mut check = SmsCheck {
            now,
            country,
            prefix,
            price: self.price_in(country, region),
            flushed: self.take_pending(),
            reads: Vec::new(),
            cool_down_key: None,
        };
        let country_scope = country.to_string();
        if self.counts_prefix() {
            let prefix = check.prefix.clone();
            check.read_sliding(Counter::Prefix, &prefix, self.window);
        }
        if self.pumping.is_some() {
            let prefix = check.prefix.clone();
            check.read_sliding(Counter::Verified, &prefix, self.window);
            check.cool_down_key = Some(keys::sms_cool_down(&check.prefix));
        }
        if self.per_country.is_some() {
            check.read_sliding(Counter::Country, &country_scope, self.window);
        }
        for (period, cap) in Period::BOTH.into_iter().zip(self.messages) {
            if cap.is_some() {
                check.read_fixed(Counter::Messages(period), period);
            }
        }
        for (period, cap) in Period::BOTH.into_iter().zip(self.cost) {
            if cap.is_some() {
                check.read_fixed(Counter::Cost(period), period);
            }
        }
        Some(check)
    }

    fn take_pending(&self) -> Vec<PendingHit> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let take = pending.hits.len().min(MAX_FLUSH);
        pending.hits.drain(..take).collect()
    }

    fn add_pending(&self, hits: impl IntoIterator<Item = PendingHit>, cost: f64) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.hits.extend(hits);
        pending.cost += cost;
        let steps = match self.cost_step() {
            Some(step) => {
                let whole = (pending.cost / step).floor();
                pending.cost -= whole * step;
                whole as usize
            }
            None => 0,
        };
        let excess = pending.hits.len().saturating_sub(MAX_PENDING);
        pending.hits.drain(..excess);
        steps
    }

    /// Counts the message of `check`'s send when it was handed to the SMS sender
    /// (`delivered`); the same work when not, but nothing kept.
    pub(in crate::gate) fn delivered(&self, check: &SmsCheck, delivered: bool) {
        let now = check.now;
        let mut hits = Vec::new();
        let mut hit = |counter: Counter, scope: &str, window: Duration, ttl: Duration| {
            let (index, _) = rules::window_of(now, window);
            hits.push(PendingHit {
                key: keys::sms_counter(counter.name(), scope, window, index, false),
                ttl,
                at: now,
            });
        };
        if self.counts_prefix() {
            hit(Counter::Prefix, &check.prefix, self.window, self.window * 2);
        }
        if self.per_country.is_some() {
            hit(
                Counter::Country,
                &check.country.to_string(),
                self.window,
                self.window * 2,
            );
        }
        for (period, cap) in Period::BOTH.into_iter().zip(self.messages) {
            if cap.is_some() {
                hit(
                    Counter::Messages(period),
                    period.label(),
                    period.length(),
                    period.length(),
                );
            }
        }
        if !delivered {
            return;
        }
        let steps = self.add_pending(
            hits,
            if self.cost_step().is_some() {
                check.price
            } else {
                0.0
            },
        );
        let mut cost_hits = Vec::new();
        for (period, cap) in Period::BOTH.into_iter().zip(self.cost) {
            if cap.is_some() {
                let (index, _) = rules::window_of(now, period.length());
                let key = keys::sms_counter(
                    Counter::Cost(period).name(),
                    period.label(),
                    period.length(),
                    index,
                    false,
                );
                for _ in 0..steps {
                    cost_hits.push(PendingHit {
                        key: key.clone(),
                        ttl: period.length(),
                        at: now,
                    });
                }
            }
        }
        if !cost_hits.is_empty() {
            self.add_pending(cost_hits, 0.0);
        }
    }

    /// Counts a verified code to `phone` at `now`.
    pub(in crate::gate) fn verified(&self, phone: &str, now: Timestamp) {
        if self.pumping.is_none() {
            return;
        }
        let (index, _) = rules::window_of(now, self.window);
        let key = keys::sms_counter(
            Counter::Verified.name(),
            &self.prefix_of(phone),
            self.window,
            index,
            false,
        );
        self.add_pending(
            [PendingHit {
                key,
                ttl: self.window * 2,
                at: now,
            }],
            0.0,
        );
    }
}

/// The country calling code of an E.164 number and its ISO region, when known.
fn country_of(phone: &str) -> (u16, Option<phonenumber::country::Id>) {
    match phonenumber::parse(None, phone) {
        Ok(number) => {
            let country = number.country();
            (country.code(), country.id())
        }
        // Identifiers are parsed numbers already; this is only a fallback.
        Err(_) => (
            phone
                .trim_start_matches('+')
                .get(..1)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
            None,
        ),
    }
}

/// Which cap a throttled send hit; each has its own stable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleReason {
    /// Sends to one country calling code.
    Country,
    /// Sends to one number prefix.
    Prefix,
    /// A prefix whose codes are sent but not verified (SMS pumping), cooling down.
    Pumping,
    /// The gate-wide SMS budget (messages or estimated cost) for the hour or the day.
    Budget,
}

impl ThrottleReason {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self {
            ThrottleReason::Country | ThrottleReason::Prefix | ThrottleReason::Pumping => {
                "destination_throttled"
            }
            ThrottleReason::Budget => "sms_budget_exhausted",
        }
    }

    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ThrottleReason::Country => "country",
            ThrottleReason::Prefix => "prefix",
            ThrottleReason::Pumping => "pumping",
            ThrottleReason::Budget => "budget",
        }
    }
}
