//! Messages whose Go types have custom JSON encodings, and the string forms
//! those encodings use (RFC 3339 times, Go duration strings).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

/// A message whose JSON form is not an object of its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// `metav1.Time` {seconds, nanos}: RFC 3339 with whole seconds, or `null`.
    Time,
    /// `metav1.MicroTime` {seconds, nanos}: RFC 3339 with 6 fraction digits.
    MicroTime,
    /// `metav1.Duration` {duration ns}: a Go duration string such as `1m30s`.
    Duration,
    /// `resource.Quantity` {string}: the string.
    Quantity,
    /// `intstr.IntOrString` {type, intVal, strVal}: a number or a string.
    IntOrString,
    /// `runtime.RawExtension` {raw}: the embedded JSON document.
    RawExtension,
    /// `metav1.FieldsV1` {Raw}: the embedded JSON document.
    FieldsV1,
    /// A Go named slice (`metav1.Verbs`, `authenticationv1.ExtraValue`):
    /// `{items}` as a plain array.
    ListWrapper,
}

/// List wrappers found in the IDL by `build.rs`.
const LIST_WRAPPERS: &[&str] = include!(concat!(env!("OUT_DIR"), "/list_wrappers.rs"));

impl Special {
    /// The special JSON form of the message named `full_name`, if it has one.
    pub(crate) fn of(full_name: &str) -> Option<Self> {
        let special = match full_name {
            "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => Self::Time,
            "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => Self::MicroTime,
            "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => Self::Duration,
            "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => Self::FieldsV1,
            "k8s.io.apimachinery.pkg.api.resource.Quantity" => Self::Quantity,
            "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Self::IntOrString,
            "k8s.io.apimachinery.pkg.runtime.RawExtension" => Self::RawExtension,
            name if LIST_WRAPPERS.contains(&name) => Self::ListWrapper,
            _ => return None,
        };
        Some(special)
    }
}

/// Where a field's Go JSON encoding departs from "proto name as the key".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoJson {
    /// An embedded Go struct: its fields sit in the parent JSON object.
    Inline,
    /// The JSON key differs from the proto field name.
    Rename(&'static str),
}

/// One row of `go-json-fields.tsv`, as `build.rs` renders it.
#[derive(Debug, Clone, Copy)]
enum GoRow {
    Inline,
    Rename(&'static str),
    /// `omitempty` on a non-pointer scalar, slice or map, or `omitzero` on a
    /// time: Go leaves the field out of JSON when it holds its zero value.
    OmitEmpty,
}

/// What the Go struct tags of one message say about its JSON form.
#[derive(Debug, Default)]
pub(crate) struct GoMessage {
    /// Fields whose JSON form is not "proto name as the key", by number.
    pub(crate) fields: Vec<(u32, GoJson)>,
    /// Numbers of the fields that Go writes only when they are not zero
    /// (`0`, `false`, `""`, empty list or map, zero time). Go clients put
    /// every non-pointer field on the wire, so without this a decoded body
    /// carries keys the API server's own JSON would never show.
    pub(crate) omit_empty: Vec<u32>,
}

/// `(message, field number, row)` from `go-json-fields.tsv`, validated
/// against the descriptors by `build.rs`.
const GO_JSON_FIELDS: &[(&str, u32, GoRow)] =
    include!(concat!(env!("OUT_DIR"), "/go_json_fields.rs"));

static GO_MESSAGES: LazyLock<HashMap<&'static str, GoMessage>> = LazyLock::new(|| {
    let mut by_message: HashMap<&str, GoMessage> = HashMap::new();
    for &(message, number, row) in GO_JSON_FIELDS {
        let entry = by_message.entry(message).or_default();
        match row {
            GoRow::Inline => entry.fields.push((number, GoJson::Inline)),
            GoRow::Rename(name) => entry.fields.push((number, GoJson::Rename(name))),
            GoRow::OmitEmpty => entry.omit_empty.push(number),
        }
    }
    by_message
});

/// The Go JSON facts for the message named `message` (empty for most).
pub(crate) fn go_message(message: &str) -> &'static GoMessage {
    static NONE: GoMessage = GoMessage {
        fields: Vec::new(),
        omit_empty: Vec::new(),
    };
    GO_MESSAGES.get(message).unwrap_or(&NONE)
}

/// `2024-01-02T03:04:05Z`; `micros` adds six fraction digits, as MicroTime does.
pub(crate) fn format_time(seconds: i64, nanos: i32, micros: bool) -> Option<String> {
    let nanos = if micros { nanos } else { 0 };
    let timestamp = jiff::Timestamp::new(seconds, nanos).ok()?;
    let whole = timestamp.strftime("%Y-%m-%dT%H:%M:%S");
    Some(if micros {
        format!("{whole}.{:06}Z", timestamp.subsec_microsecond())
    } else {
        format!("{whole}Z")
    })
}

/// Parses an RFC 3339 time into (seconds, nanos) since the Unix epoch.
pub(crate) fn parse_time(text: &str) -> Option<(i64, i32)> {
    let timestamp: jiff::Timestamp = text.parse().ok()?;
    Some((timestamp.as_second(), timestamp.subsec_nanosecond()))
}

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;

/// Formats nanoseconds the way Go's `time.Duration.String` does: `0s`,
/// `1.5ms`, `300µs`, `1h0m0s`, `-2m3.5s`.
pub(crate) fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if nanos < 0 {
        out.push('-');
    }
    let n = nanos.unsigned_abs();
    if n < NANOS_PER_SECOND {
        let (unit, scale) = match n {
            _ if n < NANOS_PER_MICRO => ("ns", 1),
            _ if n < NANOS_PER_MILLI => ("µs", NANOS_PER_MICRO),
            _ => ("ms", NANOS_PER_MILLI),
        };
        push_decimal(&mut out, n / scale, n % scale, scale);
        out.push_str(unit);
        return out;
    }
    let hours = n / NANOS_PER_HOUR;
    let minutes = n % NANOS_PER_HOUR / NANOS_PER_MINUTE;
    let rest = n % NANOS_PER_MINUTE;
    if hours > 0 {
        write!(out, "{hours}h").expect("writing to a String");
    }
    if hours > 0 || minutes > 0 {
        write!(out, "{minutes}m").expect("writing to a String");
    }
    push_decimal(
        &mut out,
        rest / NANOS_PER_SECOND,
        rest % NANOS_PER_SECOND,
        NANOS_PER_SECOND,
    );
    out.push('s');
    out
}

/// Writes `whole.fraction` with `fraction` in units of `1/scale`, trailing
/// zeros (and a bare point) removed.
fn push_decimal(out: &mut String, whole: u64, fraction: u64, scale: u64) {
    write!(out, "{whole}").expect("writing to a String");
    if fraction == 0 {
        return;
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    out.push('.');
    out.push_str(digits.trim_end_matches('0'));
}

/// Parses a Go duration string (`1h30m`, `1.5s`, `-300ms`, `0`) into
/// nanoseconds, as `time.ParseDuration` does.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => NANOS_PER_MICRO,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SECOND,
            "m" => NANOS_PER_MINUTE,
            "h" => NANOS_PER_HOUR,
            _ => return None,
        };
        let whole: u64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = whole.checked_mul(scale)?;
        // Fraction digits past nanosecond resolution cannot change the result.
        let mut place = scale;
        for digit in frac_part.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            value = value.checked_add(u64::from(digit - b'0') * place)?;
        }
        total = total.checked_add(value)?;
        rest = after;
    }
    if negative {
        0i64.checked_sub_unsigned(total)
    } else {
        i64::try_from(total).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_kubernetes_json() {
        assert_eq!(
            format_time(1_704_164_645, 999, false).as_deref(),
            Some("2024-01-02T03:04:05Z")
        );
        assert_eq!(
            format_time(1_704_164_645, 123_456_789, true).as_deref(),
            Some("2024-01-02T03:04:05.123456Z")
        );
        assert_eq!(
            format_time(0, 0, true).as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
        assert_eq!(format_time(i64::MAX, 0, false), None);
        assert_eq!(parse_time("2024-01-02T03:04:05Z"), Some((1_704_164_645, 0)));
        assert_eq!(
            parse_time("2024-01-02T04:04:05.5+01:00"),
            Some((1_704_164_645, 500_000_000))
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn durations_match_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (300_000_000, "300ms"),
            (1_000_000_000, "1s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-2_000_000_000, "-2s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(format_duration(nanos), text);
            assert_eq!(parse_duration(text), Some(nanos), "{text}");
        }
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("2us"), Some(2_000));
        assert_eq!(parse_duration(".5s"), Some(500_000_000));
        for bad in [
            "",
            "-",
            "5",
            "1x",
            "1.s.",
            "s",
            "3000000h",
            "9223372036854775808ns",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
