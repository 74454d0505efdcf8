//! The date of an mbox `From ` line (RFC 4155: `From SENDER DATE`, DATE in `asctime` form,
//! `Mon Jan  1 00:00:00 2024`): written by `pop-deliver` (and the benchmark's generator) with
//! [`asctime_utc`], read robustly by `pop-spool expire` with [`from_line_time`]. The calendar
//! arithmetic is the `time` crate's.
//!
//! Reading:
//! Writers disagree on the details, so the line is searched for the pattern instead of being
//! split by position: a month name, a day of month, a time `hh:mm[:ss]`, then a year within the
//! next three tokens (a time zone such as `+0000` or `UTC` may come between, as some MDAs
//! write, and `remote from host` may follow, as UUCP did). The sender may itself contain
//! spaces (a quoted local part), which position-based parsing gets wrong. The weekday is not
//! required. The time is taken as UTC: `asctime` has no zone, and expiry counts whole days.

#![forbid(unsafe_code)]

use time::{Date, Month, OffsetDateTime, Weekday};

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mon Jan  1 00:00:00 2024`, in UTC: the `From ` line date (asctime format, RFC 4155). UTC
/// because the MTA's children run with whatever `TZ` they inherited, and a date that does
/// not depend on it is the same whoever runs us (qmail-local does the same). Times outside
/// the years -9999..=9999 are written as the epoch.
pub fn asctime_utc(unix_secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        weekday_name(t.weekday()),
        month_name(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// `Mon` ... `Sun`, as asctime and RFC 5322 write them.
pub fn weekday_name(d: Weekday) -> &'static str {
    WEEKDAYS[usize::from(d.number_days_from_monday())]
}

/// `Jan` ... `Dec`, as asctime and RFC 5322 write them.
pub fn month_name(m: Month) -> &'static str {
    MONTHS[usize::from(u8::from(m)) - 1]
}

/// Seconds since the epoch of the date in `line` (the whole `From ` line, without its
/// newline), `None` when no date can be found.
pub fn from_line_time(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?;
    let toks: Vec<&str> = text.split_ascii_whitespace().collect();
    // The first token is "From", the second the sender: a date starts after them.
    (2..toks.len()).find_map(|i| date_at(&toks, i))
}

fn month(tok: &str) -> Option<Month> {
    let i = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(tok))?;
    Month::try_from(i as u8 + 1).ok()
}

fn number(tok: &str, max_len: usize) -> Option<u32> {
    if tok.is_empty() || tok.len() > max_len || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    tok.parse().ok()
}

fn time(tok: &str) -> Option<u32> {
    let mut parts = tok.split(':');
    let h = number(parts.next()?, 2)?;
    let m = number(parts.next()?, 2)?;
    let s = match parts.next() {
        Some(p) => number(p, 2)?,
        None => 0,
    };
    if parts.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(h * 3600 + m * 60 + s)
}

fn date_at(toks: &[&str], i: usize) -> Option<i64> {
    let mon = month(toks[i])?;
    let day = number(toks.get(i + 1)?, 2)?;
    let secs = time(toks.get(i + 2)?)?;
    let year = toks
        .iter()
        .skip(i + 3)
        .take(3)
        .find_map(|t| number(t, 4).filter(|y| (1970..=9999).contains(y)))?;
    // An impossible day (Feb 30, day 0) is no date.
    let date = Date::from_calendar_date(year as i32, mon, u8::try_from(day).ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() + i64::from(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn asctime_table() {
        let table = [
            (0, "Thu Jan  1 00:00:00 1970"),
            (1_704_067_200, "Mon Jan  1 00:00:00 2024"),
            (951_782_400, "Tue Feb 29 00:00:00 2000"),
            (4_102_444_799, "Thu Dec 31 23:59:59 2099"),
            (-1, "Wed Dec 31 23:59:59 1969"),
            (1_700_000_000, "Tue Nov 14 22:13:20 2023"),
        ];
        for (t, want) in table {
            assert_eq!(asctime_utc(t), want);
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, Option<i64>)] = &[
            ("From a@b Thu Jan  1 00:00:00 1970", Some(0)),
            ("From a@b Mon Jan  1 00:00:00 2024", Some(1_704_067_200)),
            ("From a@b Mon Jan 1 00:00:01 2024", Some(1_704_067_201)),
            ("From a@b Thu Feb 29 12:00:00 2024", Some(1_709_208_000)),
            ("From a@b Fri Mar  1 00:00 2024", Some(1_709_251_200)),
            // Zones between the time and the year, and UUCP's suffix.
            (
                "From a@b Mon Jan  1 00:00:00 +0000 2024",
                Some(1_704_067_200),
            ),
            ("From a@b Mon Jan  1 00:00:00 UTC 2024", Some(1_704_067_200)),
            (
                "From a@b Mon Jan  1 00:00:00 2024 remote from x",
                Some(1_704_067_200),
            ),
            // A sender with spaces, and no weekday.
            ("From \"a b\"@c Jan  1 00:00:00 2024", Some(1_704_067_200)),
            (
                "From MAILER-DAEMON Sat Jan  3 01:05:34 1996",
                Some(820_631_134),
            ),
            ("From a@b mon JAN  1 00:00:00 2024", Some(1_704_067_200)),
            // Unparsable.
            ("From a@b", None),
            ("From a@b yesterday", None),
            ("From a@b Mon Feb 30 00:00:00 2023", None),
            ("From a@b Mon Jan  1 25:00:00 2024", None),
            ("From a@b Mon Jan  1 00:00:00", None),
            ("From a@b Mon Jan  1 00:00:00 1969", None),
            ("From a@b Mon Jan 123 00:00:00 2024", None),
            ("From ", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(from_line_time(line.as_bytes()), *want, "{line}");
        }
        assert_eq!(from_line_time(b"From a \xff\xfe Jan 1 00:00:00 2024"), None);
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = from_line_time(&line);
        }

        #[test]
        fn roundtrips_every_day(days in 0i64..2_932_896, secs in 0i64..86_400) {
            // Format the date the way asctime does and read it back.
            let t = days * 86_400 + secs;
            let (y, m, d) = civil_from_days(days);
            const M: [&str; 12] = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"];
            let line = format!(
                "From x@y Mon {} {:2} {:02}:{:02}:{:02} {}",
                M[(m - 1) as usize], d, secs / 3600, secs / 60 % 60, secs % 60, y
            );
            prop_assert_eq!(from_line_time(line.as_bytes()), Some(t), "{}", line);
        }
    }

    fn civil_from_days(z: i64) -> (i64, u32, u32) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }
}
