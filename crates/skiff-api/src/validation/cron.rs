//! The CronJob schedule syntax: five fields (minute hour day-of-month month
//! day-of-week) or a descriptor such as `@hourly` or `@every 1h30m`.
//!
//! Validation only needs to know whether a schedule parses; the CronJob controller
//! can reuse [`Schedule`] to compute run times.

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Minutes 0–59.
    pub minutes: u64,
    /// Hours 0–23.
    pub hours: u64,
    /// Days of the month 1–31.
    pub days_of_month: u64,
    /// Months 1–12.
    pub months: u64,
    /// Days of the week 0–6, Sunday first.
    pub days_of_week: u64,
    /// Whether day-of-month or day-of-week was `*`/`?`; cron matches a day when
    /// either field matches unless one of them is unrestricted.
    pub dom_star: bool,
    /// See `dom_star`.
    pub dow_star: bool,
}

/// A `@every` interval, in seconds, or a calendar schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Five-field or descriptor schedule.
    Calendar(Schedule),
    /// `@every <duration>`.
    Every(u64),
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

fn all(b: &Bounds) -> u64 {
    (b.min..=b.max).fold(0, |acc, i| acc | 1 << i)
}

/// Parses a schedule; the error text is shown to users after `Invalid value`.
pub fn parse(spec: &str) -> Result<Parsed, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        return parse_descriptor(descriptor, spec);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let minutes = parse_field(fields[0], &MINUTES)?;
    let hours = parse_field(fields[1], &HOURS)?;
    let days_of_month = parse_field(fields[2], &DOM)?;
    let months = parse_field(fields[3], &MONTHS)?;
    let days_of_week = parse_field(fields[4], &DOW)?;
    Ok(Parsed::Calendar(Schedule {
        minutes,
        hours,
        days_of_month,
        months,
        days_of_week,
        dom_star: matches!(fields[2], "*" | "?"),
        dow_star: matches!(fields[4], "*" | "?"),
    }))
}

fn parse_descriptor(descriptor: &str, spec: &str) -> Result<Parsed, String> {
    let at = |minutes: u64, hours: u64, dom: u64, months: u64, dow: u64, dom_star, dow_star| {
        Ok(Parsed::Calendar(Schedule {
            minutes,
            hours,
            days_of_month: dom,
            months,
            days_of_week: dow,
            dom_star,
            dow_star,
        }))
    };
    match descriptor {
        "yearly" | "annually" => at(1, 1, 1 << 1, 1 << 1, all(&DOW), false, true),
        "monthly" => at(1, 1, 1 << 1, all(&MONTHS), all(&DOW), false, true),
        "weekly" => at(1, 1, all(&DOM), all(&MONTHS), 1, true, false),
        "daily" | "midnight" => at(1, 1, all(&DOM), all(&MONTHS), all(&DOW), true, true),
        "hourly" => at(
            1,
            all(&HOURS),
            all(&DOM),
            all(&MONTHS),
            all(&DOW),
            true,
            true,
        ),
        _ => match descriptor.strip_prefix("every ") {
            Some(d) => parse_duration(d.trim())
                .map(Parsed::Every)
                .ok_or_else(|| format!("failed to parse duration {spec}")),
            None => Err(format!("unrecognized descriptor: {spec}")),
        },
    }
}

/// A Go-style duration (`1h30m`, `90s`, `1.5h`) rounded down to whole seconds.
fn parse_duration(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        if num_len == 0 {
            return None;
        }
        // Digits and dots are ASCII, so `num_len` is a char boundary.
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphabetic() || *c == 'µ'))
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
    }
    Some(total as u64)
}

fn parse_field(field: &str, bounds: &Bounds) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in field.split(',') {
        bits |= parse_range(part, bounds)?;
    }
    Ok(bits)
}

fn parse_range(expr: &str, b: &Bounds) -> Result<u64, String> {
    let (range, step) = match expr.split_once('/') {
        Some((range, step)) => {
            if step.contains('/') {
                return Err(format!("too many slashes: {expr}"));
            }
            let step = parse_int(step)?;
            if step == 0 {
                return Err(format!("step of range should be a positive number: {expr}"));
            }
            (range, Some(step))
        }
        None => (expr, None),
    };
    let (start, end) = if range == "*" || range == "?" {
        (b.min, b.max)
    } else {
        match range.split_once('-') {
            Some((lo, hi)) => {
                if hi.contains('-') {
                    return Err(format!("too many hyphens: {expr}"));
                }
                (parse_value(lo, b)?, parse_value(hi, b)?)
            }
            None => {
                let v = parse_value(range, b)?;
                // `N/step` means from N to the end.
                (v, if step.is_some() { b.max } else { v })
            }
        }
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    let step = step.unwrap_or(1);
    Ok((start..=end)
        .step_by(step as usize)
        .fold(0, |acc, i| acc | 1 << i))
}

fn parse_value(s: &str, b: &Bounds) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(b.min + i as u32);
    }
    parse_int(s)
}

fn parse_int(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing \"{s}\": invalid syntax"
        ));
    }
    s.parse().map_err(|_| {
        format!("failed to parse int from {s}: strconv.Atoi: parsing \"{s}\": value out of range")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_schedules() {
        for ok in [
            "* * * * *",
            "*/5 * * * *",
            "0 0 * * 0",
            "0 9-17 * * MON-FRI",
            "15,45 */2 1 jan,jul ?",
            "5/15 * * * *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@every 1h30m",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok));
        }
    }

    #[test]
    fn rejects_bad_schedules() {
        assert_eq!(
            parse("foo").unwrap_err(),
            "expected exactly 5 fields, found 1: [foo]"
        );
        assert_eq!(
            parse("60 * * * *").unwrap_err(),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(
            parse("@sometimes").unwrap_err(),
            "unrecognized descriptor: @sometimes"
        );
        assert!(parse("* * 0 * *").is_err());
        assert!(parse("5-1 * * * *").is_err());
        assert!(parse("*/0 * * * *").is_err());
        assert!(parse("* * * * 7").is_err());
        assert!(parse("@every x").is_err());
        assert!(parse("").is_err());
        assert!(
            parse("@every 1\u{80}").is_err(),
            "non-ASCII units must not panic"
        );
    }

    #[test]
    fn bits() {
        let Ok(Parsed::Calendar(s)) = parse("*/15 0 1 * *") else {
            panic!("parse failed");
        };
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, 1);
        assert_eq!(s.days_of_month, 1 << 1);
        assert!(!s.dom_star && s.dow_star);
        assert_eq!(parse("@every 90s"), Ok(Parsed::Every(90)));
    }
}
