//! When a cron schedule fires, in a time zone.
//!
//! The syntax (five fields, names, ranges, steps, `@hourly` and friends,
//! `@every`) is parsed by [`skiff_api::validation::cron`], which validation
//! shares; this module adds the arithmetic upstream gets from robfig/cron:
//! the next fire time after an instant and the last one at or before it.
//!
//! Fields are matched against the wall clock of the schedule's time zone.
//! Daylight saving time makes that clock skip and repeat: a wall time in a
//! skipped hour never fires (as with robfig/cron), and a repeated wall time
//! fires once, at its first occurrence. So the fire times are the instants of
//! the matching wall times, which keeps "next" and "last" consistent with
//! each other.
//!
//! A schedule may name its zone with a `CRON_TZ=` or `TZ=` prefix (deprecated
//! upstream, refused by validation on new objects, still honoured);
//! otherwise `spec.timeZone` applies, else the controller's own zone.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use skiff_api::validation::cron::{self, Parsed};

/// How far ahead or back a calendar search looks before it gives up (a
/// schedule such as `0 0 30 2 *` never fires); robfig/cron stops at five
/// years too.
const SEARCH_YEARS: i16 = 5;

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("{0}")]
    Syntax(String),
    /// The time zone is not in the time zone database.
    #[error("unknown time zone {name}")]
    UnknownTimeZone {
        /// The name given.
        name: String,
    },
}

/// A parsed schedule bound to a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

#[derive(Debug, Clone)]
enum Kind {
    Calendar(cron::Schedule),
    /// `@every`: a fixed interval in whole seconds (at least one).
    Every(i64),
}

/// Looks a time zone up by its IANA name (`""` and `"UTC"` are UTC, as Go's
/// `time.LoadLocation` has them).
pub fn time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    if name.is_empty() || name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone {
        name: name.to_string(),
    })
}

impl Schedule {
    /// Parses `spec` (optionally prefixed `CRON_TZ=<zone> ` or `TZ=<zone> `)
    /// to fire in `tz` unless the prefix names another zone.
    pub fn parse(spec: &str, tz: TimeZone) -> Result<Self, ScheduleError> {
        let spec = spec.trim();
        let (tz, expression) = match spec
            .strip_prefix("CRON_TZ=")
            .or_else(|| spec.strip_prefix("TZ="))
        {
            Some(rest) => {
                let (zone, expression) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    ScheduleError::Syntax(format!("missing schedule after time zone: {spec}"))
                })?;
                (time_zone(zone)?, expression)
            }
            None => (tz, spec),
        };
        let kind = match cron::parse(expression).map_err(ScheduleError::Syntax)? {
            Parsed::Calendar(fields) => Kind::Calendar(fields),
            Parsed::Every(seconds) => {
                Kind::Every(i64::try_from(seconds.max(1)).unwrap_or(i64::MAX))
            }
        };
        Ok(Self { kind, tz })
    }

    /// The time zone the fields are matched in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first fire time strictly after `t`, or `None` if there is none in
    /// the next five years.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(seconds) => {
                // robfig/cron: whole seconds after `t` with its fraction dropped.
                Timestamp::from_second(t.as_second().checked_add(*seconds)?).ok()
            }
            Kind::Calendar(fields) => {
                let start = self.tz.to_datetime(t);
                let limit = start.year().saturating_add(SEARCH_YEARS);
                let mut at = minute_floor(start)
                    .checked_add(SignedDuration::from_mins(1))
                    .ok()?;
                loop {
                    let found = search_forward(fields, at, limit)?;
                    if let Some(instant) = self.instant(found)
                        && instant > t
                    {
                        return Some(instant);
                    }
                    at = found.checked_add(SignedDuration::from_mins(1)).ok()?;
                }
            }
        }
    }

    /// The last fire time at or before `t` and after `since` (exclusive),
    /// if any. For `@every` the fire times are counted from `since`.
    pub fn last_at_or_before(&self, t: Timestamp, since: Timestamp) -> Option<Timestamp> {
        if t <= since {
            return None;
        }
        match &self.kind {
            Kind::Every(seconds) => {
                let first = self.next_after(since)?;
                if first > t {
                    return None;
                }
                let steps = (t.as_second() - first.as_second()) / seconds;
                Timestamp::from_second(first.as_second() + steps * seconds).ok()
            }
            Kind::Calendar(fields) => {
                // A wall time later than `t`'s may still be earlier in
                // absolute time when the clock was set back; start two
                // hours ahead to see it.
                let start = minute_floor(self.tz.to_datetime(t))
                    .checked_add(SignedDuration::from_hours(2))
                    .ok()?;
                let floor = self.tz.to_datetime(since).year().saturating_sub(1);
                let limit = start.year().saturating_sub(SEARCH_YEARS).max(floor);
                let mut at = start;
                loop {
                    let found = search_backward(fields, at, limit)?;
                    if let Some(instant) = self.instant(found) {
                        if instant <= since {
                            return None;
                        }
                        if instant <= t {
                            return Some(instant);
                        }
                    }
                    at = found.checked_sub(SignedDuration::from_mins(1)).ok()?;
                }
            }
        }
    }

    /// The instant of a wall time: none in a skipped hour, the first of a
    /// repeated one.
    fn instant(&self, at: DateTime) -> Option<Timestamp> {
        let offset = match self.tz.to_ambiguous_timestamp(at).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            AmbiguousOffset::Fold { before, .. } => before,
            AmbiguousOffset::Gap { .. } => return None,
        };
        offset.to_timestamp(at).ok()
    }
}

fn minute_floor(at: DateTime) -> DateTime {
    at.date()
        .to_datetime(Time::constant(at.hour(), at.minute(), 0, 0))
}

fn has(bits: u64, value: i64) -> bool {
    (0..64).contains(&value) && bits & (1 << value) != 0
}

fn day_matches(fields: &cron::Schedule, date: Date) -> bool {
    let dom = has(fields.days_of_month, i64::from(date.day()));
    let dow = has(
        fields.days_of_week,
        i64::from(date.weekday().to_sunday_zero_offset()),
    );
    if fields.dom_star || fields.dow_star {
        dom && dow
    } else {
        dom || dow
    }
}

/// The first value in `from..=max` whose bit is set.
fn next_bit(bits: u64, from: i8, max: i8) -> Option<i8> {
    (from..=max).find(|v| has(bits, i64::from(*v)))
}

/// The last value in `min..=from` whose bit is set.
fn prev_bit(bits: u64, from: i8, min: i8) -> Option<i8> {
    (min..=from).rev().find(|v| has(bits, i64::from(*v)))
}

fn at_time(date: Date, hour: i8, minute: i8) -> DateTime {
    date.to_datetime(Time::constant(hour, minute, 0, 0))
}

/// The first wall time at or after `from` matching every field.
fn search_forward(fields: &cron::Schedule, from: DateTime, limit: i16) -> Option<DateTime> {
    let (mut date, mut hour, mut minute) = (from.date(), from.hour(), from.minute());
    loop {
        if date.year() > limit {
            return None;
        }
        if !has(fields.months, i64::from(date.month())) {
            date = date
                .first_of_month()
                .checked_add(jiff::Span::new().months(1))
                .ok()?;
            (hour, minute) = (0, 0);
            continue;
        }
        if !day_matches(fields, date) {
            date = date.tomorrow().ok()?;
            (hour, minute) = (0, 0);
            continue;
        }
        let Some(h) = next_bit(fields.hours, hour, 23) else {
            date = date.tomorrow().ok()?;
            (hour, minute) = (0, 0);
            continue;
        };
        if h != hour {
            (hour, minute) = (h, 0);
        }
        match next_bit(fields.minutes, minute, 59) {
            Some(m) => return Some(at_time(date, hour, m)),
            None if hour < 23 => (hour, minute) = (hour + 1, 0),
            None => {
                date = date.tomorrow().ok()?;
                (hour, minute) = (0, 0);
            }
        }
    }
}

/// The last wall time at or before `from` matching every field.
fn search_backward(fields: &cron::Schedule, from: DateTime, limit: i16) -> Option<DateTime> {
    let (mut date, mut hour, mut minute) = (from.date(), from.hour(), from.minute());
    loop {
        if date.year() < limit {
            return None;
        }
        if !has(fields.months, i64::from(date.month())) {
            date = date.first_of_month().yesterday().ok()?;
            (hour, minute) = (23, 59);
            continue;
        }
        if !day_matches(fields, date) {
            date = date.yesterday().ok()?;
            (hour, minute) = (23, 59);
            continue;
        }
        let Some(h) = prev_bit(fields.hours, hour, 0) else {
            date = date.yesterday().ok()?;
            (hour, minute) = (23, 59);
            continue;
        };
        if h != hour {
            (hour, minute) = (h, 59);
        }
        match prev_bit(fields.minutes, minute, 0) {
            Some(m) => return Some(at_time(date, hour, m)),
            None if hour > 0 => (hour, minute) = (hour - 1, 59),
            None => {
                date = date.yesterday().ok()?;
                (hour, minute) = (23, 59);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc(spec: &str) -> Schedule {
        Schedule::parse(spec, TimeZone::UTC).unwrap()
    }

    fn nexts(schedule: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = ts(from);
        (0..n)
            .map(|_| {
                t = schedule.next_after(t).unwrap();
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            nexts(&utc("*/15 * * * *"), "2024-01-01T10:07:30Z", 3),
            [
                "2024-01-01T10:15:00Z",
                "2024-01-01T10:30:00Z",
                "2024-01-01T10:45:00Z"
            ]
        );
        assert_eq!(
            nexts(&utc("5,35 9-10 * * *"), "2024-01-01T09:35:00Z", 4),
            [
                "2024-01-01T10:05:00Z",
                "2024-01-01T10:35:00Z",
                "2024-01-02T09:05:00Z",
                "2024-01-02T09:35:00Z"
            ]
        );
        // `N/step` runs from N to the end of the range.
        assert_eq!(
            nexts(&utc("50/5 * * * *"), "2024-01-01T00:00:00Z", 3),
            [
                "2024-01-01T00:50:00Z",
                "2024-01-01T00:55:00Z",
                "2024-01-01T01:50:00Z"
            ]
        );
    }

    #[test]
    fn next_is_strictly_after_even_on_a_fire_time() {
        let every_minute = utc("* * * * *");
        assert_eq!(
            every_minute.next_after(ts("2024-01-01T10:00:00Z")),
            Some(ts("2024-01-01T10:01:00Z"))
        );
        assert_eq!(
            every_minute.next_after(ts("2024-01-01T10:00:59.9Z")),
            Some(ts("2024-01-01T10:01:00Z"))
        );
    }

    #[test]
    fn names_and_weekday_ranges() {
        // 2024-01-05 is a Friday.
        assert_eq!(
            nexts(&utc("0 9 * * MON-FRI"), "2024-01-05T12:00:00Z", 2),
            ["2024-01-08T09:00:00Z", "2024-01-09T09:00:00Z"]
        );
        assert_eq!(
            nexts(&utc("0 0 1 jan,JUL *"), "2024-02-01T00:00:00Z", 2),
            ["2024-07-01T00:00:00Z", "2025-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 13th, or any Friday (2024-09-06 and 2024-09-13 are Fridays).
        assert_eq!(
            nexts(&utc("0 0 13 * 5"), "2024-09-01T00:00:00Z", 3),
            [
                "2024-09-06T00:00:00Z",
                "2024-09-13T00:00:00Z",
                "2024-09-20T00:00:00Z"
            ]
        );
        // With one unrestricted, both must match: Fridays only.
        assert_eq!(
            nexts(&utc("0 0 * * 5"), "2024-09-06T00:00:00Z", 1),
            ["2024-09-13T00:00:00Z"]
        );
    }

    #[test]
    fn descriptors() {
        let from = "2024-02-29T13:30:00Z";
        assert_eq!(nexts(&utc("@hourly"), from, 1), ["2024-02-29T14:00:00Z"]);
        assert_eq!(nexts(&utc("@daily"), from, 1), ["2024-03-01T00:00:00Z"]);
        assert_eq!(nexts(&utc("@midnight"), from, 1), ["2024-03-01T00:00:00Z"]);
        // 2024-03-03 is a Sunday.
        assert_eq!(nexts(&utc("@weekly"), from, 1), ["2024-03-03T00:00:00Z"]);
        assert_eq!(nexts(&utc("@monthly"), from, 1), ["2024-03-01T00:00:00Z"]);
        assert_eq!(nexts(&utc("@yearly"), from, 1), ["2025-01-01T00:00:00Z"]);
        assert_eq!(nexts(&utc("@annually"), from, 1), ["2025-01-01T00:00:00Z"]);
        assert_eq!(
            nexts(&utc("@every 90s"), "2024-01-01T00:00:00.5Z", 2),
            ["2024-01-01T00:01:30Z", "2024-01-01T00:03:00Z"]
        );
    }

    #[test]
    fn leap_days_and_impossible_dates() {
        assert_eq!(
            nexts(&utc("0 0 29 2 *"), "2024-03-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        assert_eq!(
            utc("0 0 30 2 *").next_after(ts("2024-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn fields_match_the_wall_clock_of_the_time_zone() {
        let tokyo = Schedule::parse("0 9 * * *", time_zone("Asia/Tokyo").unwrap()).unwrap();
        assert_eq!(
            nexts(&tokyo, "2024-01-01T00:00:00Z", 1),
            ["2024-01-02T00:00:00Z"]
        );
        let prefixed = Schedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *", TimeZone::UTC).unwrap();
        assert_eq!(
            nexts(&prefixed, "2024-01-01T00:00:00Z", 1),
            ["2024-01-02T00:00:00Z"]
        );
        let tz_prefixed = Schedule::parse("TZ=Asia/Tokyo 0 9 * * *", TimeZone::UTC).unwrap();
        assert_eq!(tz_prefixed.time_zone(), tokyo.time_zone());
        assert_eq!(
            time_zone("Mars/Olympus").unwrap_err(),
            ScheduleError::UnknownTimeZone {
                name: "Mars/Olympus".into()
            }
        );
        assert!(Schedule::parse("TZ=Mars/Olympus 0 * * * *", TimeZone::UTC).is_err());
        assert!(matches!(
            Schedule::parse("61 * * * *", TimeZone::UTC),
            Err(ScheduleError::Syntax(_))
        ));
    }

    #[test]
    fn skipped_wall_times_never_fire_and_repeated_ones_fire_once() {
        let new_york = time_zone("America/New_York").unwrap();
        // 2024-03-10: 02:00 EST jumps to 03:00 EDT.
        let spring = Schedule::parse("30 2 * * *", new_york.clone()).unwrap();
        assert_eq!(
            nexts(&spring, "2024-03-09T12:00:00Z", 2),
            ["2024-03-11T06:30:00Z", "2024-03-12T06:30:00Z"]
        );
        // 2024-11-03: 02:00 EDT falls back to 01:00 EST.
        let fall = Schedule::parse("30 1 * * *", new_york).unwrap();
        assert_eq!(
            nexts(&fall, "2024-11-03T00:00:00Z", 2),
            ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"]
        );
        // After the clock went back, the last fire is still the first 01:30.
        assert_eq!(
            fall.last_at_or_before(ts("2024-11-03T06:45:00Z"), ts("2024-11-01T00:00:00Z")),
            Some(ts("2024-11-03T05:30:00Z"))
        );
    }

    #[test]
    fn last_fire_time_at_or_before_an_instant() {
        let hourly = utc("0 * * * *");
        let since = ts("2024-01-01T00:00:00Z");
        assert_eq!(
            hourly.last_at_or_before(ts("2024-01-01T05:30:00Z"), since),
            Some(ts("2024-01-01T05:00:00Z"))
        );
        assert_eq!(
            hourly.last_at_or_before(ts("2024-01-01T05:00:00Z"), since),
            Some(ts("2024-01-01T05:00:00Z"))
        );
        // Nothing after `since` yet.
        assert_eq!(
            hourly.last_at_or_before(ts("2024-01-01T00:59:00Z"), since),
            None
        );
        // Far in the past is fine: the search runs backwards from `t`.
        let weekdays = utc("0 9 * * 1-5");
        assert_eq!(
            weekdays.last_at_or_before(ts("2030-06-09T12:00:00Z"), ts("2000-01-01T00:00:00Z")),
            Some(ts("2030-06-07T09:00:00Z"))
        );
        let every = utc("@every 1h");
        assert_eq!(
            every.last_at_or_before(ts("2024-01-01T05:30:00Z"), ts("2024-01-01T00:10:00Z")),
            Some(ts("2024-01-01T05:10:00Z"))
        );
    }
}
