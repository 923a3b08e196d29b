//! Points in time, as data.
//!
//! The core never reads a clock. Every instant it sees is either the broker's
//! stored time of an event (from JetStream message metadata) or a `now` the
//! caller passes in; services derive `now` from a monotonic clock, tests and
//! backtests from virtual time.

use std::{fmt, num::NonZeroU64, time::Duration};

/// Nanoseconds since the UNIX epoch (UTC).
///
/// Stored as nanoseconds plus one, so that `Option<Time>` takes no more room
/// than a `Time` (task state holds many optional instants).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(NonZeroU64);

impl Default for Time {
    fn default() -> Self {
        Time::EPOCH
    }
}

const fn nanos_plus_one(nanos: u64) -> NonZeroU64 {
    match NonZeroU64::new(nanos.saturating_add(1)) {
        Some(n) => n,
        None => NonZeroU64::MAX,
    }
}

impl Time {
    /// The UNIX epoch.
    pub const EPOCH: Time = Time(NonZeroU64::MIN);

    /// From nanoseconds since the UNIX epoch.
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        Time(nanos_plus_one(nanos))
    }

    /// From milliseconds since the UNIX epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Time::from_unix_nanos(millis.saturating_mul(1_000_000))
    }

    /// From seconds and nanoseconds since the UNIX epoch; `None` before it.
    pub fn from_unix(seconds: i64, nanos: u32) -> Option<Self> {
        let seconds = u64::try_from(seconds).ok()?;
        seconds
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(u64::from(nanos)))
            .filter(|n| *n < u64::MAX)
            .map(Time::from_unix_nanos)
    }

    /// Nanoseconds since the UNIX epoch.
    pub const fn unix_nanos(self) -> u64 {
        self.0.get() - 1
    }

    /// Whole seconds and the nanosecond remainder since the UNIX epoch.
    pub const fn unix_parts(self) -> (i64, u32) {
        (
            (self.unix_nanos() / 1_000_000_000) as i64,
            (self.unix_nanos() % 1_000_000_000) as u32,
        )
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Time {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Time::from_unix_nanos(self.unix_nanos().saturating_add(nanos))
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Time {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Time::from_unix_nanos(self.unix_nanos().saturating_sub(nanos))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.unix_nanos().saturating_sub(earlier.unix_nanos()))
    }

    /// RFC 3339 in UTC with millisecond precision, e.g.
    /// `2026-11-23T20:54:52.123Z`.
    pub fn to_rfc3339(self) -> String {
        let (secs, nanos) = self.unix_parts();
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60,
            nanos / 1_000_000
        )
    }
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic
/// Gregorian), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Formats a duration for people: `750ms`, `42s`, `3m05s`, `2h10m`, `3d4h`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d{}h", s / 86_400, (s / 3600) % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Time::EPOCH.to_rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2026-11-23T20:54:52.123Z
        let t = Time::from_unix(1_795_467_292, 123_000_000).expect("after epoch");
        assert_eq!(t.to_rfc3339(), "2026-11-23T20:54:52.123Z");
        let leap = Time::from_unix(951_782_400, 0).expect("after epoch");
        assert_eq!(leap.to_rfc3339(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn optional_time_takes_no_extra_room() {
        assert_eq!(std::mem::size_of::<Option<Time>>(), 8);
        let t = Time::from_unix_nanos(123);
        assert_eq!(t.unix_nanos(), 123);
        assert_eq!(Time::EPOCH.unix_nanos(), 0);
        assert!(Time::from_unix_nanos(0) < Time::from_unix_nanos(1));
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_unix_millis(1000);
        assert_eq!(t.saturating_sub(Duration::from_secs(5)), Time::EPOCH);
        assert_eq!(
            t.since(t.saturating_add(Duration::from_secs(1))),
            Duration::ZERO
        );
        assert_eq!(
            t.saturating_add(Duration::from_millis(500)).since(t),
            Duration::from_millis(500)
        );
        assert_eq!(Time::from_unix(-1, 0), None);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_millis(750)), "750ms");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(7800)), "2h10m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d4h"
        );
    }
}
