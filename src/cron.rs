//! Pure: the fire times of a backup schedule, as the CronJob controller reads it (five fields
//! or a macro, robfig/cron's standard parser, names such as `MON` and `JAN`, `?` as `*`), for
//! the `guestbook_operator_backup_schedule_interval_seconds` metric: the `BackupTooOld` alert
//! compares the last success with two intervals.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use std::collections::BTreeSet;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: BTreeSet<i8>,
    hours: BTreeSet<i8>,
    days: BTreeSet<i8>,
    months: BTreeSet<i8>,
    weekdays: BTreeSet<i8>,
    /// Day of month or day of week given as `*`/`?`: then both must match, else either
    /// (cron's rule, which robfig/cron keeps).
    day_star: bool,
}

/// Why a schedule could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("schedule {schedule:?}: {why}")]
pub struct ParseError {
    schedule: String,
    why: String,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let fail = |why: String| ParseError {
            schedule: text.to_string(),
            why,
        };
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [mi, h, dom, mo, dow] = fields[..] else {
            return Err(fail(format!("{} fields, want five", fields.len())));
        };
        let field = |f: &str, lo: i8, hi: i8, names: &[&str], base: i8| {
            parse_field(f, lo, hi, names, base).map_err(&fail)
        };
        let mut weekdays = field(dow, 0, 7, &WEEKDAYS, 0)?;
        if weekdays.remove(&7) {
            weekdays.insert(0);
        }
        let star = |f: &str| f.starts_with('*') || f.starts_with('?');
        Ok(Self {
            minutes: field(mi, 0, 59, &[], 0)?,
            hours: field(h, 0, 23, &[], 0)?,
            days: field(dom, 1, 31, &[], 1)?,
            months: field(mo, 1, 12, &MONTHS, 1)?,
            weekdays,
            day_star: star(dom) || star(dow),
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days.contains(&d.day());
        let dow = self.weekdays.contains(&d.weekday().to_sunday_zero_offset());
        if self.day_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first fire time strictly after `after`, in `tz`; `None` when there is none within
    /// five years (a date that never comes, such as 30 February).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let mut t = local.date().at(local.hour(), local.minute(), 0, 0);
        t = t.checked_add(Span::new().minutes(1)).ok()?;
        let end = local.date().checked_add(Span::new().years(5)).ok()?;
        while t.date() < end {
            if !self.months.contains(&t.month()) {
                t = next_month(t)?;
            } else if !self.day_matches(t.date()) {
                t = t.date().tomorrow().ok()?.at(0, 0, 0, 0);
            } else if !self.hours.contains(&t.hour()) {
                t = t
                    .date()
                    .at(t.hour(), 0, 0, 0)
                    .checked_add(Span::new().hours(1))
                    .ok()?;
            } else if !self.minutes.contains(&t.minute()) {
                t = t.checked_add(Span::new().minutes(1)).ok()?;
            } else {
                let at = tz.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
                // A time skipped by a DST change lands after the gap, possibly not after `after`.
                if at > after {
                    return Some(at);
                }
                t = t.checked_add(Span::new().minutes(1)).ok()?;
            }
        }
        None
    }

    /// Seconds between the next two fire times after `now`.
    pub fn interval_after(&self, now: Timestamp, tz: &TimeZone) -> Option<i64> {
        let first = self.next(now, tz)?;
        let second = self.next(first, tz)?;
        Some(second.as_second() - first.as_second())
    }
}

fn next_month(t: DateTime) -> Option<DateTime> {
    let first = t.date().first_of_month();
    Some(
        first
            .checked_add(Span::new().months(1))
            .ok()?
            .at(0, 0, 0, 0),
    )
}

fn parse_value(v: &str, names: &[&str], base: i8) -> Result<i8, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
        return Ok(i as i8 + base);
    }
    v.parse::<i8>()
        .map_err(|_| format!("{v:?} is not a number"))
}

/// One field: `*`, `?`, values, ranges `a-b`, steps `/n`, lists.
fn parse_field(f: &str, lo: i8, hi: i8, names: &[&str], base: i8) -> Result<BTreeSet<i8>, String> {
    let mut out = BTreeSet::new();
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step = s
                    .parse::<i8>()
                    .map_err(|_| format!("bad step in {part:?}"))?;
                if step <= 0 {
                    return Err(format!("bad step in {part:?}"));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (start, end) = match range {
            "*" | "?" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (parse_value(a, names, base)?, parse_value(b, names, base)?),
                // `5/15` runs from 5 to the end, as robfig/cron reads it.
                None => {
                    let a = parse_value(r, names, base)?;
                    (a, if step.is_some() { hi } else { a })
                }
            },
        };
        if start < lo || end > hi || start > end {
            return Err(format!("{part:?} is outside {lo}-{hi}"));
        }
        let step = step.unwrap_or(1) as usize;
        out.extend((start..=end).step_by(step));
    }
    Ok(out)
}

/// The interval of `schedule` in `time_zone` (UTC when omitted or unknown to this process:
/// only a DST change would make the two differ) after `now`.
pub fn interval_seconds(schedule: &str, time_zone: Option<&str>, now: Timestamp) -> Option<i64> {
    let tz = time_zone
        .and_then(|name| TimeZone::get(name).ok())
        .unwrap_or(TimeZone::UTC);
    Schedule::parse(schedule).ok()?.interval_after(now, &tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn intervals_of_common_schedules() {
        let now = at("2026-03-04T10:17:00Z");
        let cases = [
            ("0 * * * *", 3600),
            ("@hourly", 3600),
            ("*/15 * * * *", 900),
            ("5/20 * * * *", 1200),
            ("30 2 * * *", 86400),
            ("@daily", 86400),
            ("0 0 * * 0", 7 * 86400),
            ("0 3,15 * * *", 12 * 3600),
            ("0 0 1 * *", 30 * 86400), // 1 April to 1 May
        ];
        for (schedule, want) in cases {
            assert_eq!(
                interval_seconds(schedule, None, now),
                Some(want),
                "{schedule}"
            );
        }
    }

    #[test]
    fn weekdays_only_and_names() {
        // Wednesday 10:17: next Thursday 09:00, then Friday 09:00.
        let now = at("2026-03-04T10:17:00Z");
        assert_eq!(interval_seconds("0 9 * * MON-FRI", None, now), Some(86400));
        // Friday evening: next Monday 09:00, then Tuesday.
        let friday = at("2026-03-06T18:00:00Z");
        assert_eq!(interval_seconds("0 9 * * 1-5", None, friday), Some(86400));
        // Thursday evening: Friday 09:00, then Monday.
        let thursday = at("2026-03-05T18:00:00Z");
        assert_eq!(
            interval_seconds("0 9 * * 1-5", None, thursday),
            Some(3 * 86400)
        );
        assert_eq!(
            interval_seconds("0 0 1 jan *", None, now),
            Some(365 * 86400)
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        // The 1st or any Sunday, cron's OR: Sunday 8 March, then Sunday 15 March.
        let now = at("2026-03-04T10:17:00Z");
        let s = Schedule::parse("0 0 1 * 0").expect("valid");
        let next = s.next(now, &TimeZone::UTC).expect("a fire time");
        assert_eq!(next, at("2026-03-08T00:00:00Z"));
    }

    #[test]
    fn the_time_zone_decides_across_a_dst_change() {
        // Europe/Berlin moves from UTC+1 to UTC+2 on 29 March 2026 at 02:00 local time: the
        // day that holds the change is 23 hours long.
        let Ok(tz) = TimeZone::get("Europe/Berlin") else {
            eprintln!("skipped: no time zone database on this machine");
            return;
        };
        let now = at("2026-03-27T12:00:00Z");
        let s = Schedule::parse("0 3 * * *").expect("valid");
        // 28 March 03:00 CET, 29 March 03:00 CEST: 23 hours apart.
        assert_eq!(s.interval_after(now, &tz), Some(23 * 3600));
        assert_eq!(s.interval_after(now, &TimeZone::UTC), Some(24 * 3600));
        assert_eq!(
            interval_seconds("0 3 * * *", Some("Europe/Berlin"), now),
            Some(23 * 3600)
        );
    }

    #[test]
    fn bad_schedules_have_no_interval() {
        let now = at("2026-03-04T10:17:00Z");
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "x * * * *",
            "0 0 30 2 *",
        ] {
            assert_eq!(interval_seconds(bad, None, now), None, "{bad:?}");
        }
    }
}
