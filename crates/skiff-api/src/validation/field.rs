//! Field paths, upstream-style error constructors and read helpers over JSON objects.

use std::fmt;

use serde_json::{Map, Value};

use crate::registry::FieldError;

/// A field path rendered the way upstream renders `field.Path`:
/// `spec.containers[0].resources.limits[cpu]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn new(name: &str) -> Self {
        Path(name.to_string())
    }

    pub(crate) fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        Path(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value shown after `Invalid value:`: strings quoted, numbers bare, anything else
/// as JSON with sorted keys (upstream marshals Go maps with sorted keys).
pub(crate) trait BadValue {
    fn render(&self) -> String;
}

impl BadValue for &str {
    fn render(&self) -> String {
        Value::String((*self).to_string()).to_string()
    }
}

impl BadValue for String {
    fn render(&self) -> String {
        self.as_str().render()
    }
}

impl BadValue for i64 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl BadValue for usize {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl BadValue for &Value {
    fn render(&self) -> String {
        let mut out = String::new();
        write_sorted(self, &mut out);
        out
    }
}

fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn error(reason: &'static str, path: &Path, message: String) -> FieldError {
    FieldError {
        reason,
        field: path.to_string(),
        message,
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// `Required value[: detail]`
pub(crate) fn required(path: &Path, detail: &str) -> FieldError {
    error(
        "FieldValueRequired",
        path,
        with_detail("Required value".into(), detail),
    )
}

/// `Invalid value: <value>[: detail]`
pub(crate) fn invalid(path: &Path, value: impl BadValue, detail: &str) -> FieldError {
    error(
        "FieldValueInvalid",
        path,
        with_detail(format!("Invalid value: {}", value.render()), detail),
    )
}

/// `Unsupported value: <value>: supported values: "A", "B"`
pub(crate) fn not_supported(path: &Path, value: impl BadValue, supported: &[&str]) -> FieldError {
    let list: Vec<String> = supported.iter().map(|s| s.render()).collect();
    let detail = if list.is_empty() {
        String::new()
    } else {
        format!("supported values: {}", list.join(", "))
    };
    error(
        "FieldValueNotSupported",
        path,
        with_detail(format!("Unsupported value: {}", value.render()), &detail),
    )
}

/// `Duplicate value: <value>`
pub(crate) fn duplicate(path: &Path, value: impl BadValue) -> FieldError {
    error(
        "FieldValueDuplicate",
        path,
        format!("Duplicate value: {}", value.render()),
    )
}

/// `Not found: <value>`
pub(crate) fn not_found(path: &Path, value: impl BadValue) -> FieldError {
    error(
        "FieldValueNotFound",
        path,
        format!("Not found: {}", value.render()),
    )
}

/// `Forbidden[: detail]`
pub(crate) fn forbidden(path: &Path, detail: &str) -> FieldError {
    error(
        "FieldValueForbidden",
        path,
        with_detail("Forbidden".into(), detail),
    )
}

/// `Too long: may not be more than N bytes`
pub(crate) fn too_long(path: &Path, max: usize) -> FieldError {
    let unit = if max == 1 { "byte" } else { "bytes" };
    error(
        "FieldValueTooLong",
        path,
        format!("Too long: may not be more than {max} {unit}"),
    )
}

/// `Too many: N: must have at most M items`
pub(crate) fn too_many(path: &Path, actual: usize, max: usize) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    error(
        "FieldValueTooMany",
        path,
        format!("Too many: {actual}: must have at most {max} {unit}"),
    )
}

/// One `Invalid value` error per message of a name check.
pub(crate) fn invalid_each(
    errs: &mut Vec<FieldError>,
    path: &Path,
    value: &str,
    messages: Vec<String>,
) {
    errs.extend(messages.iter().map(|m| invalid(path, value, m)));
}

/// `field is immutable` when `new` differs from `old` (missing and null are equal).
pub(crate) fn immutable(errs: &mut Vec<FieldError>, path: &Path, new: &Value, old: &Value) {
    if !same(new, old) {
        errs.push(invalid(path, new, "field is immutable"));
    }
}

/// Equality in Go's terms: an absent field equals its zero value (`null`, `""`, `0`,
/// `false`, `{}`, `[]`), since upstream compares typed structs in which an omitted
/// field and a zero one are the same. Lenient on purpose: a client re-sending a
/// stored object without its zero fields must not be told it changed something.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Object(m) => m.values().all(empty),
            Value::Array(a) => a.is_empty(),
        }
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.iter()
                .all(|(k, v)| same(v, y.get(k).unwrap_or(&Value::Null)))
                && y.iter()
                    .all(|(k, v)| x.contains_key(k) || same(v, &Value::Null))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ if empty(a) && empty(b) => true,
        _ => a == b,
    }
}

pub(crate) static NULL: Value = Value::Null;

/// The member `key` of `v`, or `null`.
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&NULL)
}

/// The string member `key`, or `""` when absent or not a string.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The integer member `key`, if present.
pub(crate) fn int_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// The boolean member `key`, false when absent.
pub(crate) fn bool_of(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The array member `key`, empty when absent.
pub(crate) fn arr_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

static EMPTY_MAP: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// The object member `key`, empty when absent.
pub(crate) fn map_of<'a>(v: &'a Value, key: &str) -> &'a Map<String, Value> {
    v.get(key).and_then(Value::as_object).unwrap_or(&EMPTY_MAP)
}

/// Whether member `key` is present and not null.
pub(crate) fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// Non-negative check with upstream's message.
pub(crate) fn non_negative(errs: &mut Vec<FieldError>, v: &Value, key: &str, path: &Path) {
    if let Some(n) = int_of(v, key)
        && n < 0
    {
        errs.push(invalid(
            &path.child(key),
            n,
            "must be greater than or equal to 0",
        ));
    }
}

/// Enumerated string member: when present and non-empty, it must be one of `allowed`.
pub(crate) fn one_of(
    errs: &mut Vec<FieldError>,
    v: &Value,
    key: &str,
    path: &Path,
    allowed: &[&str],
) {
    let value = str_of(v, key);
    if !value.is_empty() && !allowed.contains(&value) {
        errs.push(not_supported(&path.child(key), value, allowed));
    }
}

/// Helpers the rule modules' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::Value;

    use crate::registry::FieldError;
    use crate::validation::KindCheck;

    /// Errors as `field: message` lines, the way the 422 message lists them.
    pub(crate) fn lines(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    /// The [`lines`] of what one kind's `check` finds in `obj`, an update of `old`
    /// when given.
    pub(crate) fn run(check: KindCheck, obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = Vec::new();
        check(&mut errs, obj, old);
        lines(&errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_render_like_upstream() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("resources")
            .child("limits")
            .key("cpu");
        assert_eq!(p.to_string(), "spec.containers[0].resources.limits[cpu]");
        assert_eq!(Path::default().child("data").to_string(), "data");
    }

    #[test]
    fn messages_render_like_upstream() {
        let p = Path::new("x");
        assert_eq!(required(&p, "").message, "Required value");
        assert_eq!(required(&p, "why").message, "Required value: why");
        assert_eq!(
            invalid(&p, "a\"b", "bad").message,
            "Invalid value: \"a\\\"b\": bad"
        );
        assert_eq!(invalid(&p, -1i64, "neg").message, "Invalid value: -1: neg");
        assert_eq!(
            invalid(&p, &json!({"b": 1, "a": "x"}), "m").message,
            "Invalid value: {\"a\":\"x\",\"b\":1}: m"
        );
        assert_eq!(
            not_supported(&p, "X", &["A", "B"]).message,
            "Unsupported value: \"X\": supported values: \"A\", \"B\""
        );
        assert_eq!(duplicate(&p, "a").message, "Duplicate value: \"a\"");
        assert_eq!(
            too_long(&p, 262144).message,
            "Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            too_many(&p, 1001, 1000).message,
            "Too many: 1001: must have at most 1000 items"
        );
        assert_eq!(forbidden(&p, "no").message, "Forbidden: no");
    }

    #[test]
    fn same_ignores_empty_vs_absent() {
        assert!(same(&json!({"a": 1, "b": null}), &json!({"a": 1})));
        assert!(same(&json!({"a": []}), &json!({})));
        assert!(!same(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!same(&json!([1]), &json!([])));
        assert!(same(&json!({"a": "", "b": 0, "c": false}), &json!({})));
        assert!(!same(&json!({"a": "x"}), &json!({})));
    }
}
