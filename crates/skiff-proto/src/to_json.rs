//! Decoded protobuf messages to Kubernetes JSON.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage as _, Value as PValue};
use serde_json::{Map, Number, Value};

use crate::go_types::{self, GoJson, Special};
use crate::{MAX_DEPTH, ProtoError};

/// Adds the present fields of `message` to `object`, keyed by field name,
/// except those the Go types would leave out of JSON for being zero.
pub(crate) fn fields_into(
    message: &DynamicMessage,
    object: &mut Map<String, Value>,
) -> Result<(), ProtoError> {
    Converter { depth: 0 }.fields_into(message, object)
}

struct Converter {
    depth: usize,
}

impl Converter {
    fn fields_into(
        &mut self,
        message: &DynamicMessage,
        object: &mut Map<String, Value>,
    ) -> Result<(), ProtoError> {
        let go_message = go_types::go_message(message.descriptor().full_name());
        for (field, value) in message.fields() {
            let go = go_message
                .fields
                .iter()
                .find(|(n, _)| *n == field.number())
                .map(|(_, go)| *go);
            match (go, value) {
                (Some(GoJson::Inline), PValue::Message(inner)) => self
                    .nested(|this| this.fields_into(inner, object))
                    .map_err(|e| e.within(field.name()))?,
                (go, value) => {
                    let name = match go {
                        Some(GoJson::Rename(name)) => name,
                        _ => field.name(),
                    };
                    let json = self
                        .value(&field.kind(), value)
                        .map_err(|e| e.within(name))?;
                    if is_zero(&json) && go_message.omit_empty.contains(&field.number()) {
                        continue;
                    }
                    object.insert(name.to_owned(), json);
                }
            }
        }
        Ok(())
    }

    /// Runs `f` one nesting level deeper, failing past [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ProtoError>,
    ) -> Result<T, ProtoError> {
        if self.depth >= MAX_DEPTH {
            return Err(ProtoError::TooDeep);
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn message(&mut self, message: &DynamicMessage) -> Result<Value, ProtoError> {
        self.nested(|this| match Special::of(message.descriptor().full_name()) {
            Some(special) => this.special(special, message),
            None => {
                let mut object = Map::new();
                this.fields_into(message, &mut object)
                    .map(|()| Value::Object(object))
            }
        })
    }

    fn value(&mut self, kind: &Kind, value: &PValue) -> Result<Value, ProtoError> {
        Ok(match value {
            PValue::Bool(b) => Value::Bool(*b),
            PValue::I32(n) | PValue::EnumNumber(n) => Value::from(*n),
            PValue::I64(n) => Value::from(*n),
            PValue::U32(n) => Value::from(*n),
            PValue::U64(n) => Value::from(*n),
            PValue::F32(n) => float(f64::from(*n))?,
            PValue::F64(n) => float(*n)?,
            PValue::String(s) => Value::String(s.clone()),
            PValue::Bytes(b) => Value::String(BASE64.encode(b)),
            PValue::Message(m) => self.message(m)?,
            PValue::List(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(kind, item).map_err(|e| e.within_index(i)))
                    .collect::<Result<_, _>>()?,
            ),
            PValue::Map(entries) => {
                let value_kind = match kind {
                    Kind::Message(entry) => entry.map_entry_value_field().kind(),
                    _ => return Err(invalid("map field without an entry type")),
                };
                // Sorted, as Go's encoding/json writes maps, so that equal
                // objects serialize to equal bytes.
                let mut sorted: Vec<(String, &PValue)> =
                    entries.iter().map(|(k, v)| (map_key(k), v)).collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut object = Map::with_capacity(sorted.len());
                for (key, item) in sorted {
                    let json = self.value(&value_kind, item).map_err(|e| e.within(&key))?;
                    object.insert(key, json);
                }
                Value::Object(object)
            }
        })
    }

    fn special(&mut self, special: Special, message: &DynamicMessage) -> Result<Value, ProtoError> {
        Ok(match special {
            Special::Time | Special::MicroTime => {
                // Go writes the zero time as an empty message, and JSON as null.
                if !message.has_field_by_number(1) && !message.has_field_by_number(2) {
                    return Ok(Value::Null);
                }
                let seconds = int_field(message, 1);
                let nanos = i32::try_from(int_field(message, 2)).unwrap_or(0);
                let formatted =
                    go_types::format_time(seconds, nanos, special == Special::MicroTime)
                        .ok_or_else(|| invalid(format!("time {seconds}s is out of range")))?;
                Value::String(formatted)
            }
            Special::Duration => Value::String(go_types::format_duration(int_field(message, 1))),
            Special::Quantity => {
                let text = string_field(message, 1);
                // The zero Quantity prints as "0" in Go.
                Value::String(if text.is_empty() {
                    "0".to_owned()
                } else {
                    text
                })
            }
            Special::IntOrString => match int_field(message, 1) {
                0 => Value::from(int_field(message, 2)),
                1 => Value::String(string_field(message, 3)),
                other => {
                    return Err(invalid(format!(
                        "IntOrString type {other} is neither 0 nor 1"
                    )));
                }
            },
            Special::RawExtension | Special::FieldsV1 => {
                let raw = match message.get_field_by_number(1).as_deref() {
                    Some(PValue::Bytes(raw)) => raw.clone(),
                    _ => Default::default(),
                };
                if raw.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&raw)
                        .map_err(|e| invalid(format!("embedded object is not JSON: {e}")))?
                }
            }
            Special::ListWrapper => match message.descriptor().get_field(1) {
                Some(field) if message.has_field(&field) => {
                    self.value(&field.kind(), &message.get_field(&field))?
                }
                _ => Value::Array(Vec::new()),
            },
        })
    }
}

/// Whether `json` is the JSON form of a Go zero value that `omitempty` (or
/// `omitzero`, for times) leaves out. `build.rs` only lets such fields be
/// scalars, slices, maps or times, so an empty object here is an empty map.
fn is_zero(json: &Value) -> bool {
    match json {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(entries) => entries.is_empty(),
        Value::Bool(true) => false,
    }
}

fn int_field(message: &DynamicMessage, number: u32) -> i64 {
    match message.get_field_by_number(number).as_deref() {
        Some(PValue::I64(n)) => *n,
        Some(PValue::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn string_field(message: &DynamicMessage, number: u32) -> String {
    match message.get_field_by_number(number).as_deref() {
        Some(PValue::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn float(n: f64) -> Result<Value, ProtoError> {
    Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| invalid(format!("{n} has no JSON form")))
}

fn invalid(reason: impl Into<String>) -> ProtoError {
    ProtoError::InvalidValue {
        path: String::new(),
        reason: reason.into(),
    }
}
