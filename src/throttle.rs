//! Login, registration and anonymous upload throttling, sans-IO: decides whether an
//! attempt may run now.
//!
//! The event loop asks before it hands a login or a registration to a worker, and
//! reports the outcome of each password check back. Nothing here reads a clock or
//! touches a socket: every call takes the caller's `now`, so tests run on virtual time.
//!
//! Three independent limits for logins and registrations, all of which must agree before
//! an attempt runs, and one for uploads without a session:
//!
//! ```text
//!   per address  ── logins:             GCRA, N per minute, burst max(N/2, 1)
//!                ── registrations:      GCRA, N per hour,   burst min(N, 5)
//!                ── anonymous uploads:  GCRA, the registrations' N per hour, burst min(N, 5)
//!   per account  ── only while it has failed in the last 15 minutes:
//!                   a delay after the 4th and later consecutive failures (1, 2, 4 … 60 s)
//!                   and at most N password checks in any rolling minute
//! ```
//!
//! An address is keyed by its IPv4 address, or by the /64 prefix of its IPv6 address
//! (one host usually owns a whole /64, so keying by full address would give it 2^64
//! buckets). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket
//! reports for IPv4 peers) are keyed as the IPv4 address they carry: by /64 they would
//! all share one bucket. Loopback is not exempt: a local proxy in front of the server
//! would otherwise exempt every client behind it.
//!
//! Memory is bounded: each map holds at most
//! [`max_tracked`](crate::throttle::ThrottleConfig::max_tracked) keys. When an address
//! map is full and a new address arrives, the throttle sweeps (at most once a second, so
//! a flood cannot make every request pay a full scan) and, if still full, refuses the
//! new address for 1 s. That fails closed: under a flood from more addresses than the
//! map holds, new addresses wait, while the ones already tracked keep their own limits.
//! An unknown address cannot be told apart from an attacker's next address, and
//! admitting it untracked would make the limit vanish exactly when it matters. The
//! account map instead evicts the entry whose last failure is oldest, the nearest to
//! being forgotten anyway: refusing a new failing account would mean leaving its
//! failures uncounted, which is failing open where it matters most, on the account
//! under attack now. (An attacker can flush a victim's failures this way only with
//! `max_tracked` failed logins, each a password hash and an address token.)
//!
//! Maps keep their allocated capacity after a sweep; it is bounded by `max_tracked`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The window of the per-address login limit and of the per-account check limit.
const MINUTE: Duration = Duration::from_secs(60);

/// The window of the per-address registration limit.
const HOUR: Duration = Duration::from_secs(60 * 60);

/// Registrations one address may make at once: a household or an office may sign up a
/// few people together, but not an hour's worth in one go.
const REGISTER_BURST: u32 = 5;

/// Uploads without a session one address may make at once: an avatar for each of the
/// registrations it may make at once. (fastIM's register page uploads the avatar
/// before the account exists; each upload is stored, at most a day, until an account
/// takes it.)
const ANONYMOUS_UPLOAD_BURST: u32 = REGISTER_BURST;

/// An account's failures are remembered this long after the last one, then forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Consecutive failures that cost no delay: typos should not make a user wait.
const FREE_FAILURES: u32 = 3;

/// The longest delay between checks of a failing account.
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(60);

/// The wait given to a new address while its map is full.
const FULL_RETRY: Duration = Duration::from_secs(1);

/// A map found full sweeps at most this often; the caller's periodic sweep does the rest.
const FORCED_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Account keys longer than this are cut: a client must not make us store megabytes
/// per entry, and no mobile number comes near it.
const ACCOUNT_KEY_MAX: usize = 64;

/// The throttle's limits, each with its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Login attempts one address may make per minute, sustained (default 30); it may
    /// make half of them (at least one) at once. 0 disables this limit.
    pub login_per_address_per_minute: u32,
    /// Registrations one address may make per hour, sustained (default 20); it may make
    /// up to 5 of them at once. 0 disables this limit. Uploads without a session (an
    /// avatar before its account exists) have a limit of their own at the same rate,
    /// also 5 at once, disabled with it.
    pub register_per_address_per_hour: u32,
    /// Once an account has failed a login (in the last 15 minutes), at most this many
    /// password checks against it may run in any rolling minute, from all addresses
    /// together (default 10). 0 disables this limit; the delay after repeated failures
    /// stays.
    pub account_checks_per_minute: u32,
    /// Most keys each of the four maps (login addresses, registration addresses,
    /// anonymous upload addresses, failing accounts) holds (default 100 000). Values
    /// below 1 count as 1.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            login_per_address_per_minute: 30,
            register_per_address_per_hour: 20,
            account_checks_per_minute: 10,
            max_tracked: 100_000,
        }
    }
}

/// Login and registration throttling state; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    login: Buckets,
    register: Buckets,
    anonymous_upload: Buckets,
    accounts: HashMap<Box<[u8]>, Failing>,
    /// When the last sweep ran, so that a full map does not sweep on every request.
    last_sweep: Option<Instant>,
}

impl Throttle {
    /// A throttle with nothing tracked yet.
    pub fn new(config: ThrottleConfig) -> Self {
        let logins = config.login_per_address_per_minute;
        let registrations = config.register_per_address_per_hour;
        Self {
            login: Buckets::new(Gcra::new(MINUTE, logins, logins / 2)),
            register: Buckets::new(Gcra::new(HOUR, registrations, REGISTER_BURST)),
            anonymous_upload: Buckets::new(Gcra::new(HOUR, registrations, ANONYMOUS_UPLOAD_BURST)),
            accounts: HashMap::new(),
            last_sweep: None,
            config,
        }
    }

    /// May this login run now? `Err(retry_after)` if not: the wait until the earliest
    /// moment the same call would succeed, if nothing else happens meanwhile (exact,
    /// not rounded; a `Retry-After` header rounds it up).
    ///
    /// An `Ok` counts: it takes a token from the address's bucket and, if the account is
    /// failing, one of its checks for the minute. An `Err` costs nothing, so a client
    /// that retries too early does not push its own wait further out.
    pub fn check_login(
        &mut self,
        now: Instant,
        addr: IpAddr,
        account: &str,
    ) -> Result<(), Duration> {
        let addr = AddrKey::of(addr);
        let account = account_key(account);
        let checks_limit = self.config.account_checks_per_minute;
        let account_wait = match self.accounts.get(account) {
            Some(failing) if failing.live(now) => failing.wait(now, checks_limit),
            _ => Duration::ZERO,
        };
        let address_wait = self.address_wait(now, Kind::Login, addr);
        // Both waits only shrink as time passes, so the later of the two is when both pass.
        let wait = account_wait.max(address_wait);
        if !wait.is_zero() {
            return Err(wait);
        }
        self.login.admit(now, addr);
        if let Some(failing) = self.accounts.get_mut(account) {
            if failing.live(now) {
                failing.record_check(now, checks_limit);
            }
        }
        Ok(())
    }

    /// The password check of a login allowed by [`check_login`](Self::check_login) failed.
    ///
    /// Failures are counted per account; `addr` is taken so that the caller reports
    /// what it knows and a per-address failure policy can be added without changing it.
    pub fn login_failed(&mut self, now: Instant, _addr: IpAddr, account: &str) {
        let key = account_key(account);
        let checks_limit = self.config.account_checks_per_minute;
        if let Some(failing) = self.accounts.get_mut(key) {
            if failing.live(now) {
                failing.failures = failing.failures.saturating_add(1);
                failing.last_failure = now;
            } else {
                // Failures older than the memory are forgotten: this one starts afresh.
                *failing = Failing::first(now, checks_limit);
            }
            return;
        }
        let max = self.max_tracked();
        if self.accounts.len() >= max {
            self.sweep_if_due(now);
        }
        if self.accounts.len() >= max {
            // Linear, but only on a full map, and every failure follows a password hash
            // that costs far more than a scan.
            let oldest = self
                .accounts
                .iter()
                .min_by_key(|(_, failing)| failing.last_failure)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.accounts.remove(&oldest);
            }
        }
        self.accounts
            .insert(key.into(), Failing::first(now, checks_limit));
    }

    /// The password check of a login succeeded: the account's failures are forgotten.
    ///
    /// `now` is taken so every call gets the same time from the caller; a reset needs none.
    pub fn login_succeeded(&mut self, _now: Instant, account: &str) {
        self.accounts.remove(account_key(account));
    }

    /// May this registration run now? `Err(retry_after)` if not, as for
    /// [`check_login`](Self::check_login); an `Ok` takes a token from the address's bucket.
    pub fn check_register(&mut self, now: Instant, addr: IpAddr) -> Result<(), Duration> {
        let addr = AddrKey::of(addr);
        let wait = self.address_wait(now, Kind::Register, addr);
        if !wait.is_zero() {
            return Err(wait);
        }
        self.register.admit(now, addr);
        Ok(())
    }

    /// May this upload without a session run now? `Err(retry_after)` if not, as for
    /// [`check_register`](Self::check_register), with a bucket of its own.
    pub fn check_anonymous_upload(&mut self, now: Instant, addr: IpAddr) -> Result<(), Duration> {
        let addr = AddrKey::of(addr);
        let wait = self.address_wait(now, Kind::AnonymousUpload, addr);
        if !wait.is_zero() {
            return Err(wait);
        }
        self.anonymous_upload.admit(now, addr);
        Ok(())
    }

    /// Forgets entries that no longer restrict anything (call every few seconds): address
    /// buckets that have refilled, and accounts whose last failure is 15 minutes old.
    pub fn sweep(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        self.login.sweep(now);
        self.register.sweep(now);
        self.anonymous_upload.sweep(now);
        self.accounts.retain(|_, failing| failing.live(now));
    }

    /// Entries held, in all maps together, for tests and metrics.
    pub fn tracked(&self) -> usize {
        self.login.tats.len()
            + self.register.tats.len()
            + self.anonymous_upload.tats.len()
            + self.accounts.len()
    }

    fn max_tracked(&self) -> usize {
        self.config.max_tracked.max(1)
    }

    fn buckets(&self, kind: Kind) -> &Buckets {
        match kind {
            Kind::Login => &self.login,
            Kind::Register => &self.register,
            Kind::AnonymousUpload => &self.anonymous_upload,
        }
    }

    /// How long `addr` must wait before its bucket of `kind` has a token; a new address
    /// waits [`FULL_RETRY`] while the map stays full after a sweep.
    fn address_wait(&mut self, now: Instant, kind: Kind, addr: AddrKey) -> Duration {
        let max = self.max_tracked();
        if let Some(wait) = self.buckets(kind).wait(now, addr, max) {
            return wait;
        }
        self.sweep_if_due(now);
        self.buckets(kind)
            .wait(now, addr, max)
            .unwrap_or(FULL_RETRY)
    }

    fn sweep_if_due(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_none_or(|last| now >= last + FORCED_SWEEP_INTERVAL)
        {
            self.sweep(now);
        }
    }
}

/// Which per-address limit.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Login,
    Register,
    AnonymousUpload,
}

/// What an address is counted as: IPv4 by address, IPv6 by /64 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AddrKey {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl AddrKey {
    fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                // The upper 64 bits are the prefix; the shift leaves nothing to truncate.
                None => Self::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// An account as a key: the trimmed name, cut to [`ACCOUNT_KEY_MAX`] bytes (bytes, not
/// characters: the key is only hashed and compared, never shown).
fn account_key(account: &str) -> &[u8] {
    let bytes = account.trim().as_bytes();
    &bytes[..bytes.len().min(ACCOUNT_KEY_MAX)]
}

/// The generic cell rate algorithm: a token bucket kept as one instant per key, the
/// "theoretical arrival time" (TAT) of the next cell if cells came at exactly the
/// sustained rate. A cell conforms when it is at most `tolerance` early for the TAT.
///
/// Written here rather than taken from `governor`: governor's limiters read their own
/// clock, have no way to ask "how long would this wait" without taking a token (needed
/// to combine the address and account waits), and do not expose whether a key is
/// tracked or idle (needed for the bound and the sweep).
#[derive(Clone, Copy, Debug)]
struct Gcra {
    /// Time between cells at the sustained rate.
    interval: Duration,
    /// How early a cell may come: (burst - 1) intervals.
    tolerance: Duration,
}

impl Gcra {
    /// `count` cells per `period`, up to `burst` at once (at least 1, at most `count`);
    /// `None` when `count` is 0, which disables the limit.
    fn new(period: Duration, count: u32, burst: u32) -> Option<Self> {
        if count == 0 {
            return None;
        }
        let interval = period / count;
        let burst = burst.clamp(1, count);
        Some(Self {
            interval,
            tolerance: interval * (burst - 1),
        })
    }

    /// The wait before a cell conforms, given the key's TAT (`None`: a fresh key).
    fn wait(&self, now: Instant, tat: Option<Instant>) -> Duration {
        tat.map_or(Duration::ZERO, |tat| {
            tat.saturating_duration_since(now + self.tolerance)
        })
    }

    /// The TAT after a conforming cell at `now`.
    fn next_tat(&self, now: Instant, tat: Option<Instant>) -> Instant {
        tat.map_or(now, |tat| tat.max(now)) + self.interval
    }
}

/// One per-address limit: its rate (`None`: disabled) and a TAT per address.
#[derive(Clone, Debug)]
struct Buckets {
    gcra: Option<Gcra>,
    tats: HashMap<AddrKey, Instant>,
}

impl Buckets {
    fn new(gcra: Option<Gcra>) -> Self {
        Self {
            gcra,
            tats: HashMap::new(),
        }
    }

    /// The wait for `addr`, or `None` if it is new and the map holds `max` keys already.
    fn wait(&self, now: Instant, addr: AddrKey, max: usize) -> Option<Duration> {
        let Some(gcra) = self.gcra else {
            return Some(Duration::ZERO);
        };
        match self.tats.get(&addr) {
            Some(&tat) => Some(gcra.wait(now, Some(tat))),
            None if self.tats.len() >= max => None,
            None => Some(Duration::ZERO),
        }
    }

    /// Takes a token for `addr`; the caller checked [`wait`](Self::wait) first.
    fn admit(&mut self, now: Instant, addr: AddrKey) {
        if let Some(gcra) = self.gcra {
            let tat = self.tats.get(&addr).copied();
            self.tats.insert(addr, gcra.next_tat(now, tat));
        }
    }

    /// Drops buckets that are full again: a TAT in the past is the same as no entry.
    fn sweep(&mut self, now: Instant) {
        self.tats.retain(|_, tat| *tat > now);
    }
}

/// An account that has failed a login recently.
#[derive(Clone, Debug)]
struct Failing {
    /// Consecutive failures, since the last success or since failures were forgotten.
    failures: u32,
    last_failure: Instant,
    /// Times of the latest password checks, at most `account_checks_per_minute` of them
    /// (older ones cannot decide anything): a sliding log, so the limit holds in every
    /// rolling minute and not only on average as a token bucket would.
    checks: VecDeque<Instant>,
}

impl Failing {
    /// The state after a first failure. That failure's check is counted here: it ran
    /// while the account was not tracked, so [`Throttle::check_login`] did not count it.
    fn first(now: Instant, checks_limit: u32) -> Self {
        let mut checks = VecDeque::new();
        if checks_limit > 0 {
            checks.push_back(now);
        }
        Self {
            failures: 1,
            last_failure: now,
            checks,
        }
    }

    /// Whether the failures still count: the last one is less than 15 minutes old.
    fn live(&self, now: Instant) -> bool {
        now < self.last_failure + FAILURE_MEMORY
    }

    /// The wait before the next check of this account may run.
    fn wait(&self, now: Instant, checks_limit: u32) -> Duration {
        let delayed =
            (self.last_failure + failure_delay(self.failures)).saturating_duration_since(now);
        let limited = match self.checks.front() {
            // The log holds at most `checks_limit` checks, so when it is full its oldest
            // is the one that must leave the minute before another may run.
            Some(&oldest) if checks_limit > 0 && self.checks.len() >= checks_limit as usize => {
                (oldest + MINUTE).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        };
        delayed.max(limited)
    }

    fn record_check(&mut self, now: Instant, checks_limit: u32) {
        if checks_limit == 0 {
            return;
        }
        self.checks.push_back(now);
        while self.checks.len() > checks_limit as usize {
            self.checks.pop_front();
        }
    }
}

/// The delay after `failures` consecutive failures: none for the first
/// [`FREE_FAILURES`], then 1 s, doubling with each further failure, at most 60 s.
fn failure_delay(failures: u32) -> Duration {
    let Some(doublings) = failures.checked_sub(FREE_FAILURES + 1) else {
        return Duration::ZERO;
    };
    // 2^6 s is past the cap already; stopping there keeps the shift in range.
    let delay = Duration::from_secs(1 << doublings.min(6));
    delay.min(MAX_FAILURE_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const SEC: Duration = Duration::from_secs(1);

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// The `i`-th of many distinct IPv4 addresses.
    fn nth_v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    fn only_accounts() -> ThrottleConfig {
        ThrottleConfig {
            login_per_address_per_minute: 0,
            register_per_address_per_hour: 0,
            ..ThrottleConfig::default()
        }
    }

    #[test]
    fn login_burst_then_refusal_with_exact_wait_and_recovery() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig::default());
        let addr = v4(192, 0, 2, 1);
        // 30 per minute: one every 2 s sustained, 15 at once.
        for i in 0..15 {
            assert_eq!(
                th.check_login(t0, addr, &format!("user{i}")),
                Ok(()),
                "attempt {i}"
            );
        }
        assert_eq!(th.check_login(t0, addr, "user"), Err(2 * SEC));
        // A refusal costs nothing: asking again later gives the remaining wait.
        assert_eq!(
            th.check_login(t0 + 1500 * Duration::from_millis(1), addr, "user"),
            Err(Duration::from_millis(500))
        );
        assert_eq!(th.check_login(t0 + 2 * SEC, addr, "user"), Ok(()));
        assert_eq!(th.check_login(t0 + 2 * SEC, addr, "user"), Err(2 * SEC));
        // Another address has its own bucket.
        assert_eq!(th.check_login(t0, v4(192, 0, 2, 2), "user"), Ok(()));
        // Idle for the whole burst's worth of time, the bucket is full again.
        let later = t0 + 2 * SEC + 30 * SEC;
        for i in 0..15 {
            assert_eq!(th.check_login(later, addr, "user"), Ok(()), "attempt {i}");
        }
        assert!(th.check_login(later, addr, "user").is_err());
    }

    #[test]
    fn loopback_is_limited_too() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig {
            login_per_address_per_minute: 2,
            ..ThrottleConfig::default()
        });
        let lo = v4(127, 0, 0, 1);
        assert_eq!(th.check_login(t0, lo, "a"), Ok(()));
        assert_eq!(th.check_login(t0, lo, "a"), Err(30 * SEC));
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(th.check_login(t0, lo6, "a"), Ok(()));
        assert_eq!(th.check_login(t0, lo6, "a"), Err(30 * SEC));
    }

    #[test]
    fn registrations_per_hour_with_burst_of_five() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig::default());
        let addr = v4(198, 51, 100, 7);
        // 20 per hour: one every 3 minutes sustained, 5 at once.
        for i in 0..5 {
            assert_eq!(th.check_register(t0, addr), Ok(()), "registration {i}");
        }
        let interval = 3 * 60 * SEC;
        assert_eq!(th.check_register(t0, addr), Err(interval));
        assert_eq!(th.check_register(t0 + interval - SEC, addr), Err(SEC));
        assert_eq!(th.check_register(t0 + interval, addr), Ok(()));
        // Registering does not touch the login limit, nor the other way round.
        assert_eq!(th.check_login(t0 + interval, addr, "x"), Ok(()));
        // Over a whole hour from a full bucket: 5 at once and then one per 3 minutes.
        let mut th = Throttle::new(ThrottleConfig::default());
        let mut ok = 0;
        let mut t = t0;
        while t < t0 + HOUR {
            if th.check_register(t, addr).is_ok() {
                ok += 1;
            }
            t += SEC;
        }
        assert_eq!(ok, 5 + 19, "burst plus the later arrivals within the hour");
    }

    #[test]
    fn anonymous_uploads_have_their_own_bucket_at_the_registration_rate() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig::default());
        let addr = v4(198, 51, 100, 8);
        // 20 per hour: one every 3 minutes sustained, 5 at once.
        for i in 0..5 {
            assert_eq!(th.check_anonymous_upload(t0, addr), Ok(()), "upload {i}");
        }
        let interval = 3 * 60 * SEC;
        assert_eq!(th.check_anonymous_upload(t0, addr), Err(interval));
        // A refusal costs nothing.
        assert_eq!(
            th.check_anonymous_upload(t0 + interval - SEC, addr),
            Err(SEC)
        );
        assert_eq!(th.check_anonymous_upload(t0 + interval, addr), Ok(()));
        assert!(th.check_anonymous_upload(t0 + interval, addr).is_err());
        // Registrations and logins from the same address are not held by it, nor it by them.
        for _ in 0..5 {
            assert_eq!(th.check_register(t0, addr), Ok(()));
        }
        assert_eq!(th.check_login(t0, addr, "x"), Ok(()));
        assert_eq!(th.check_anonymous_upload(t0, v4(198, 51, 100, 9)), Ok(()));
        // Loopback is limited too; IPv6 by /64.
        let lo = v4(127, 0, 0, 1);
        let host = IpAddr::V6("2001:db8:5::1".parse().expect("literal"));
        let same_net = IpAddr::V6("2001:db8:5::2".parse().expect("literal"));
        for _ in 0..5 {
            assert_eq!(th.check_anonymous_upload(t0, lo), Ok(()));
            assert_eq!(th.check_anonymous_upload(t0, host), Ok(()));
        }
        assert_eq!(th.check_anonymous_upload(t0, lo), Err(interval));
        assert_eq!(th.check_anonymous_upload(t0, same_net), Err(interval));
        // Swept once refilled: an idle hour later nothing is held.
        th.sweep(t0 + HOUR);
        assert_eq!(th.tracked(), 0);
        // Its own rate follows --register-per-hour: 2 an hour gives a burst of 2.
        let mut th = Throttle::new(ThrottleConfig {
            register_per_address_per_hour: 2,
            ..ThrottleConfig::default()
        });
        assert_eq!(th.check_anonymous_upload(t0, addr), Ok(()));
        assert_eq!(th.check_anonymous_upload(t0, addr), Ok(()));
        assert_eq!(th.check_anonymous_upload(t0, addr), Err(30 * 60 * SEC));
    }

    #[test]
    fn failure_delays_grow_from_the_fourth_failure_and_cap_at_60_s() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig {
            account_checks_per_minute: 0,
            ..only_accounts()
        });
        let addr = v4(203, 0, 113, 9);
        let expected = [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60];
        let mut t = t0;
        for (i, &delay) in expected.iter().enumerate() {
            let failures = i + 1;
            assert_eq!(
                th.check_login(t, addr, "5551234"),
                Ok(()),
                "check before failure {failures}"
            );
            th.login_failed(t, addr, "5551234");
            let delay = Duration::from_secs(delay);
            if delay.is_zero() {
                continue;
            }
            assert_eq!(
                th.check_login(t, addr, "5551234"),
                Err(delay),
                "after failure {failures}"
            );
            let nearly = t + delay - Duration::from_millis(1);
            assert_eq!(
                th.check_login(nearly, addr, "5551234"),
                Err(Duration::from_millis(1))
            );
            t += delay;
        }
        assert_eq!(failure_delay(u32::MAX), MAX_FAILURE_DELAY);
    }

    #[test]
    fn failing_account_gets_at_most_ten_checks_a_minute_from_any_addresses() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig::default());
        // One failure: no delay yet, but the account is now watched.
        assert_eq!(th.check_login(t0, nth_v4(0), "5550000"), Ok(()));
        th.login_failed(t0, nth_v4(0), "5550000");
        // The failed check was the first of ten; nine more run, from nine addresses.
        let step = Duration::from_millis(100);
        for i in 1..10 {
            assert_eq!(
                th.check_login(t0 + i * step, nth_v4(i), "5550000"),
                Ok(()),
                "check {i}"
            );
        }
        let t = t0 + 10 * step;
        assert_eq!(
            th.check_login(t, nth_v4(10), "5550000"),
            Err(MINUTE - 10 * step)
        );
        // The limit is on the account: other accounts from the same address are not held.
        assert_eq!(th.check_login(t, nth_v4(10), "5559999"), Ok(()));
        // A minute after the failed check, one more check fits; another waits for the next.
        assert_eq!(th.check_login(t0 + MINUTE, nth_v4(11), "5550000"), Ok(()));
        assert_eq!(
            th.check_login(t0 + MINUTE, nth_v4(12), "5550000"),
            Err(step)
        );
    }

    #[test]
    fn success_resets_the_account() {
        let t0 = Instant::now();
        let mut th = Throttle::new(only_accounts());
        let addr = v4(192, 0, 2, 50);
        for _ in 0..5 {
            th.login_failed(t0, addr, "5551111");
        }
        assert_eq!(th.check_login(t0, addr, "5551111"), Err(2 * SEC));
        th.login_succeeded(t0, " 5551111 ");
        assert_eq!(th.tracked(), 0);
        for _ in 0..20 {
            assert_eq!(th.check_login(t0, addr, "5551111"), Ok(()));
        }
        // Failing again starts from the first failure: no delay.
        th.login_failed(t0, addr, "5551111");
        assert_eq!(th.check_login(t0, addr, "5551111"), Ok(()));
    }

    #[test]
    fn account_without_failures_is_not_limited_from_many_addresses() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig::default());
        for i in 0..1000 {
            assert_eq!(
                th.check_login(t0, nth_v4(i), "5552222"),
                Ok(()),
                "address {i}"
            );
        }
        // Only the address buckets are held, no account entry.
        assert_eq!(th.tracked(), 1000);
    }

    #[test]
    fn failures_are_forgotten_after_15_minutes() {
        let t0 = Instant::now();
        let mut th = Throttle::new(only_accounts());
        let addr = v4(192, 0, 2, 60);
        for _ in 0..10 {
            th.login_failed(t0, addr, "5553333");
        }
        assert_eq!(th.check_login(t0 + 59 * SEC, addr, "5553333"), Err(SEC));
        th.sweep(t0 + FAILURE_MEMORY - SEC);
        assert_eq!(th.tracked(), 1);
        assert_eq!(th.check_login(t0 + FAILURE_MEMORY, addr, "5553333"), Ok(()));
        // Unswept and stale, the entry starts over on the next failure.
        th.login_failed(t0 + FAILURE_MEMORY, addr, "5553333");
        assert_eq!(th.check_login(t0 + FAILURE_MEMORY, addr, "5553333"), Ok(()));
        th.sweep(t0 + 2 * FAILURE_MEMORY);
        assert_eq!(th.tracked(), 0);
    }

    #[test]
    fn account_keys_are_trimmed_and_cut_to_64_bytes() {
        let t0 = Instant::now();
        let mut th = Throttle::new(only_accounts());
        let addr = v4(192, 0, 2, 70);
        let long = "9".repeat(64);
        for _ in 0..4 {
            th.login_failed(t0, addr, &format!("{long}0"));
        }
        // The same first 64 bytes, with padding and a different tail: the same account.
        assert_eq!(th.check_login(t0, addr, &format!("  {long}1\t")), Err(SEC));
        assert_eq!(th.tracked(), 1);
        // A cut inside a multi-byte character is fine: keys are bytes.
        th.login_failed(t0, addr, &"é".repeat(40));
        assert_eq!(th.tracked(), 2);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig {
            login_per_address_per_minute: 2,
            ..ThrottleConfig::default()
        });
        let host: Ipv6Addr = "2001:db8:1:2::1".parse().expect("literal");
        let same_net: Ipv6Addr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("literal");
        let next_net: Ipv6Addr = "2001:db8:1:3::1".parse().expect("literal");
        assert_eq!(th.check_login(t0, IpAddr::V6(host), "a"), Ok(()));
        assert_eq!(th.check_login(t0, IpAddr::V6(same_net), "a"), Err(30 * SEC));
        assert_eq!(th.check_login(t0, IpAddr::V6(next_net), "a"), Ok(()));
        // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; by /64 they would all
        // share one bucket.
        let a = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        let b = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 2).to_ipv6_mapped());
        assert_eq!(th.check_login(t0, a, "a"), Ok(()));
        assert_eq!(th.check_login(t0, b, "a"), Ok(()));
        assert_eq!(th.check_login(t0, v4(192, 0, 2, 1), "a"), Err(30 * SEC));
    }

    #[test]
    fn zero_disables_each_limit() {
        let t0 = Instant::now();
        let addr = v4(192, 0, 2, 80);
        let mut th = Throttle::new(ThrottleConfig {
            login_per_address_per_minute: 0,
            register_per_address_per_hour: 0,
            account_checks_per_minute: 0,
            ..ThrottleConfig::default()
        });
        th.login_failed(t0, addr, "5554444");
        for _ in 0..100 {
            assert_eq!(th.check_login(t0, addr, "5554444"), Ok(()));
            assert_eq!(th.check_register(t0, addr), Ok(()));
            assert_eq!(th.check_anonymous_upload(t0, addr), Ok(()));
        }
        // Disabled limits track nothing; the failing account is still held for its delay.
        assert_eq!(th.tracked(), 1);
        // With the per-minute check limit off, the delay after repeated failures stays.
        for _ in 0..3 {
            th.login_failed(t0, addr, "5554444");
        }
        assert_eq!(th.check_login(t0, addr, "5554444"), Err(SEC));
    }

    #[test]
    fn full_address_map_refuses_new_addresses_until_a_sweep_frees_it() {
        let t0 = Instant::now();
        let max = 8;
        let mut th = Throttle::new(ThrottleConfig {
            max_tracked: max,
            ..ThrottleConfig::default()
        });
        for i in 0..100 {
            let result = th.check_login(t0, nth_v4(i), "user");
            if (i as usize) < max {
                assert_eq!(result, Ok(()), "address {i}");
            } else {
                // Fail closed: a new address waits while the map is full.
                assert_eq!(result, Err(FULL_RETRY), "address {i}");
            }
            assert!(th.tracked() <= max);
        }
        // Known addresses keep their own limits meanwhile.
        assert_eq!(th.check_login(t0, nth_v4(0), "user"), Ok(()));
        // A login leaves its bucket short for one interval (2 s; address 0, with two,
        // for 4 s); after that the sweep forced by the full map frees them all.
        let t = t0 + 4 * SEC;
        assert_eq!(th.check_login(t, nth_v4(100), "user"), Ok(()));
        assert_eq!(th.tracked(), 1);
        // The same for registrations, each with its own map.
        for i in 0..20 {
            let result = th.check_register(t, nth_v4(i));
            assert_eq!(result.is_ok(), (i as usize) < max, "address {i}");
        }
        assert_eq!(th.tracked(), 1 + max);
        // And for anonymous uploads.
        for i in 0..20 {
            let result = th.check_anonymous_upload(t, nth_v4(i));
            if (i as usize) < max {
                assert_eq!(result, Ok(()), "address {i}");
            } else {
                assert_eq!(result, Err(FULL_RETRY), "address {i}");
            }
        }
        assert_eq!(th.tracked(), 1 + 2 * max);
        th.sweep(t + 3 * 60 * SEC);
        assert_eq!(th.tracked(), 0);
    }

    #[test]
    fn full_map_sweeps_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig {
            max_tracked: 1,
            ..ThrottleConfig::default()
        });
        assert_eq!(th.check_login(t0, nth_v4(0), "u"), Ok(()));
        th.sweep(t0 + 2 * SEC - Duration::from_millis(500));
        // The bucket is refilled at t0 + 2 s, but the sweep just ran: no forced one yet.
        let t = t0 + 2 * SEC;
        assert_eq!(th.check_login(t, nth_v4(1), "u"), Err(FULL_RETRY));
        assert_eq!(
            th.check_login(t + Duration::from_millis(500), nth_v4(1), "u"),
            Ok(())
        );
    }

    #[test]
    fn full_account_map_evicts_the_oldest_failure() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig {
            max_tracked: 3,
            ..only_accounts()
        });
        let addr = v4(192, 0, 2, 90);
        for (i, account) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            for _ in 0..4 {
                th.login_failed(t0 + i as u32 * SEC, addr, account);
            }
            assert!(th.tracked() <= 3);
        }
        // "a" and "b" were evicted; "c" (last failure at t0 + 2 s) still waits 1 s from it.
        let t = t0 + 2 * SEC;
        assert_eq!(th.check_login(t, addr, "a"), Ok(()));
        assert_eq!(th.check_login(t, addr, "b"), Ok(()));
        assert_eq!(th.check_login(t, addr, "c"), Err(SEC));
        assert_eq!(th.tracked(), 3);
    }

    #[test]
    fn wait_is_the_later_of_address_and_account() {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig {
            login_per_address_per_minute: 2,
            ..ThrottleConfig::default()
        });
        let addr = v4(192, 0, 2, 100);
        for _ in 0..5 {
            th.login_failed(t0, addr, "5556666");
        }
        // Account: 2 s after the 5th failure. Address: fresh.
        assert_eq!(th.check_login(t0, addr, "5556666"), Err(2 * SEC));
        // A refused check took no token: the address still has its one.
        assert_eq!(th.check_login(t0, addr, "other"), Ok(()));
        // Account free at 2 s, address (one per 30 s) not until 30 s.
        assert_eq!(th.check_login(t0 + 2 * SEC, addr, "5556666"), Err(28 * SEC));
        assert_eq!(th.check_login(t0 + 30 * SEC, addr, "5556666"), Ok(()));
    }

    /// The Oks of an hour of attempts every 100 ms against one account, from rotating
    /// addresses; `fails(n)` says whether the `n`-th allowed check fails its password.
    /// Checks each refusal's wait against a copy: not a moment sooner, but then.
    fn simulate_hour(fails: impl Fn(usize) -> bool) -> Vec<Instant> {
        let t0 = Instant::now();
        let mut th = Throttle::new(ThrottleConfig::default());
        let step = Duration::from_millis(100);
        let mut oks = Vec::new();
        let mut refusals = 0;
        for i in 0..36_000u32 {
            let now = t0 + i * step;
            // 60 addresses: each tries every 6 s, well within its own limit.
            let addr = nth_v4(i % 60);
            match th.check_login(now, addr, "5557777") {
                Ok(()) => {
                    if fails(oks.len()) {
                        th.login_failed(now, addr, "5557777");
                    }
                    oks.push(now);
                }
                Err(wait) => {
                    assert!(!wait.is_zero());
                    refusals += 1;
                    if refusals % 50 == 0 {
                        let tiny = Duration::from_nanos(1);
                        let mut early = th.clone();
                        assert_eq!(
                            early.check_login(now + wait - tiny, addr, "5557777"),
                            Err(tiny)
                        );
                        let mut then = th.clone();
                        assert_eq!(then.check_login(now + wait, addr, "5557777"), Ok(()));
                    }
                }
            }
        }
        oks
    }

    /// The most Oks in any minute [s, s + 60 s) starting at an Ok.
    fn busiest_minute(oks: &[Instant]) -> usize {
        (0..oks.len())
            .map(|i| {
                oks[i..]
                    .iter()
                    .take_while(|&&t| t < oks[i] + MINUTE)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn simulated_hour_allows_at_most_ten_checks_in_any_rolling_minute() {
        // Every check fails: the growing delay dominates, one check a minute at the end.
        let always = simulate_hour(|_| true);
        assert!(busiest_minute(&always) <= 10);
        assert!(
            always.len() >= 60,
            "at least one check a minute: {}",
            always.len()
        );
        // One check in eight fails (the others never report): the per-minute limit binds.
        let sometimes = simulate_hour(|n| n % 8 == 0);
        assert_eq!(busiest_minute(&sometimes), 10);
    }
}
