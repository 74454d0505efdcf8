//! The date of an mbox `From ` line (RFC 4155: `From SENDER DATE`, DATE in `asctime` form,
//! `Mon Jan  1 00:00:00 2024`), read robustly.
//!
//! Writers disagree on the details, so the line is searched for the pattern instead of being
//! split by position: a month name, a day of month, a time `hh:mm[:ss]`, then a year within the
//! next three tokens (a time zone such as `+0000` or `UTC` may come between, as some MDAs
//! write, and `remote from host` may follow, as UUCP did). The sender may itself contain
//! spaces (a quoted local part), which position-based parsing gets wrong. The weekday is not
//! required. The time is taken as UTC: `asctime` has no zone, and expiry counts whole days.

/// Seconds since the epoch of the date in `line` (the whole `From ` line, without its
/// newline), `None` when no date can be found.
pub fn from_line_time(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?;
    let toks: Vec<&str> = text.split_ascii_whitespace().collect();
    // The first token is "From", the second the sender: a date starts after them.
    (2..toks.len()).find_map(|i| date_at(&toks, i))
}

fn month(tok: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    if tok.len() != 3 {
        return None;
    }
    let lower = tok.to_ascii_lowercase();
    MONTHS
        .iter()
        .position(|m| *m == lower)
        .map(|i| i as u32 + 1)
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
    if day == 0 || day > days_in_month(year, mon) {
        return None;
    }
    Some(days_from_civil(i64::from(year), mon, day) * 86_400 + i64::from(secs))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
