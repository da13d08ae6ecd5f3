//! Kubernetes JSON to protobuf messages, the inverse of `to_json`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value as PValue,
};
use serde_json::Value;

use crate::go_types::{self, GoJson, Special};
use crate::{MAX_DEPTH, ProtoError};

/// Builds a message of type `descriptor` from a JSON object.
pub(crate) fn message(
    descriptor: MessageDescriptor,
    object: &Value,
) -> Result<DynamicMessage, ProtoError> {
    Converter { depth: 0 }.message(descriptor, object)
}

struct Converter {
    depth: usize,
}

impl Converter {
    fn message(
        &mut self,
        descriptor: MessageDescriptor,
        json: &Value,
    ) -> Result<DynamicMessage, ProtoError> {
        self.nested(|this| match Special::of(descriptor.full_name()) {
            Some(special) => this.special(special, descriptor, json),
            None => this.object(descriptor, json),
        })
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

    fn object(
        &mut self,
        descriptor: MessageDescriptor,
        json: &Value,
    ) -> Result<DynamicMessage, ProtoError> {
        let Value::Object(object) = json else {
            return Err(mismatch("an object", json));
        };
        let go_fields = go_types::go_message(descriptor.full_name())
            .fields
            .as_slice();
        let mut message = DynamicMessage::new(descriptor.clone());
        for (name, value) in object {
            // Fields without a schema (including apiVersion and kind) cannot
            // travel in protobuf; Go would drop them when decoding too.
            let Some(field) = field_by_json_name(&descriptor, go_fields, name) else {
                continue;
            };
            let converted = self.field(&field, value).map_err(|e| e.within(name))?;
            if let Some(converted) = converted {
                set(&mut message, &field, converted)?;
            }
        }
        // Embedded Go structs take their fields from this same JSON object.
        for &(number, go) in go_fields {
            let Some(field) = descriptor
                .get_field(number)
                .filter(|_| go == GoJson::Inline)
            else {
                continue;
            };
            let Kind::Message(inner) = field.kind() else {
                continue;
            };
            let inner = self.nested(|this| this.object(inner, json))?;
            if inner.fields().next().is_some() {
                set(&mut message, &field, PValue::Message(inner))?;
            }
        }
        Ok(message)
    }

    /// The value for `field`, or `None` to leave it unset.
    fn field(
        &mut self,
        field: &FieldDescriptor,
        json: &Value,
    ) -> Result<Option<PValue>, ProtoError> {
        if json.is_null() {
            // Go's zero Time and empty embedded documents travel as empty
            // messages, which decode to null again.
            let null_form = matches!(
                field.kind(),
                Kind::Message(m) if matches!(
                    Special::of(m.full_name()),
                    Some(Special::Time | Special::MicroTime | Special::RawExtension | Special::FieldsV1)
                )
            );
            return Ok(match field.kind() {
                Kind::Message(m) if null_form && !field.is_list() => {
                    Some(PValue::Message(DynamicMessage::new(m)))
                }
                _ => None,
            });
        }
        let kind = field.kind();
        if field.is_map() {
            let Value::Object(entries) = json else {
                return Err(mismatch("an object", json));
            };
            let Kind::Message(entry) = &kind else {
                return Err(invalid("map field without an entry type"));
            };
            let key_kind = entry.map_entry_key_field().kind();
            let value_kind = entry.map_entry_value_field().kind();
            let mut map = std::collections::HashMap::with_capacity(entries.len());
            for (key, value) in entries {
                let parsed_key = map_key(&key_kind, key).map_err(|e| e.within(key))?;
                let parsed = self.single(&value_kind, value).map_err(|e| e.within(key))?;
                map.insert(parsed_key, parsed);
            }
            return Ok(Some(PValue::Map(map)));
        }
        if field.is_list() {
            let Value::Array(items) = json else {
                return Err(mismatch("an array", json));
            };
            let values = items
                .iter()
                .enumerate()
                .map(|(i, item)| self.single(&kind, item).map_err(|e| e.within_index(i)))
                .collect::<Result<_, _>>()?;
            return Ok(Some(PValue::List(values)));
        }
        self.single(&kind, json).map(Some)
    }

    fn single(&mut self, kind: &Kind, json: &Value) -> Result<PValue, ProtoError> {
        let out_of_range = || invalid(format!("{json} is out of range"));
        Ok(match kind {
            Kind::Bool => PValue::Bool(json.as_bool().ok_or_else(|| mismatch("a boolean", json))?),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                let n = json.as_i64().ok_or_else(|| mismatch("an integer", json))?;
                PValue::I32(i32::try_from(n).map_err(|_| out_of_range())?)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                PValue::I64(json.as_i64().ok_or_else(|| mismatch("an integer", json))?)
            }
            Kind::Uint32 | Kind::Fixed32 => {
                let n = json
                    .as_u64()
                    .ok_or_else(|| mismatch("an unsigned integer", json))?;
                PValue::U32(u32::try_from(n).map_err(|_| out_of_range())?)
            }
            Kind::Uint64 | Kind::Fixed64 => PValue::U64(
                json.as_u64()
                    .ok_or_else(|| mismatch("an unsigned integer", json))?,
            ),
            // Narrowing to f32 is what a float field means.
            #[allow(clippy::cast_possible_truncation)]
            Kind::Float => {
                PValue::F32(json.as_f64().ok_or_else(|| mismatch("a number", json))? as f32)
            }
            Kind::Double => PValue::F64(json.as_f64().ok_or_else(|| mismatch("a number", json))?),
            Kind::String => PValue::String(
                json.as_str()
                    .ok_or_else(|| mismatch("a string", json))?
                    .to_owned(),
            ),
            Kind::Bytes => {
                let text = json
                    .as_str()
                    .ok_or_else(|| mismatch("a base64 string", json))?;
                let bytes = BASE64
                    .decode(text)
                    .map_err(|e| invalid(format!("invalid base64: {e}")))?;
                PValue::Bytes(bytes.into())
            }
            Kind::Enum(e) => match json {
                Value::String(name) => PValue::EnumNumber(
                    e.get_value_by_name(name)
                        .ok_or_else(|| invalid(format!("unknown enum value {name:?}")))?
                        .number(),
                ),
                _ => {
                    let n = json
                        .as_i64()
                        .ok_or_else(|| mismatch("an enum value", json))?;
                    PValue::EnumNumber(i32::try_from(n).map_err(|_| out_of_range())?)
                }
            },
            Kind::Message(m) => PValue::Message(self.message(m.clone(), json)?),
        })
    }

    fn special(
        &mut self,
        special: Special,
        descriptor: MessageDescriptor,
        json: &Value,
    ) -> Result<DynamicMessage, ProtoError> {
        let mut message = DynamicMessage::new(descriptor.clone());
        let field_of = |number: u32| {
            descriptor
                .get_field(number)
                .ok_or_else(|| invalid(format!("{} has no field {number}", descriptor.full_name())))
        };
        let mut put = |number: u32, value: PValue| -> Result<(), ProtoError> {
            let field = field_of(number)?;
            set(&mut message, &field, value)
        };
        match special {
            Special::Time | Special::MicroTime => {
                let text = json
                    .as_str()
                    .ok_or_else(|| mismatch("an RFC 3339 time", json))?;
                let (seconds, nanos) = go_types::parse_time(text)
                    .ok_or_else(|| invalid(format!("invalid RFC 3339 time {text:?}")))?;
                put(1, PValue::I64(seconds))?;
                if nanos != 0 {
                    put(2, PValue::I32(nanos))?;
                }
            }
            Special::Duration => {
                let text = json
                    .as_str()
                    .ok_or_else(|| mismatch("a duration string", json))?;
                let nanos = go_types::parse_duration(text)
                    .ok_or_else(|| invalid(format!("invalid duration {text:?}")))?;
                put(1, PValue::I64(nanos))?;
            }
            Special::Quantity => {
                // Go accepts unquoted numbers for quantities as well.
                let text = match json {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(mismatch("a quantity", json)),
                };
                put(1, PValue::String(text))?;
            }
            Special::IntOrString => match json {
                Value::String(s) => {
                    put(1, PValue::I64(1))?;
                    put(3, PValue::String(s.clone()))?;
                }
                _ => {
                    let n = json
                        .as_i64()
                        .ok_or_else(|| mismatch("an integer or a string", json))?;
                    let n =
                        i32::try_from(n).map_err(|_| invalid(format!("{n} is out of range")))?;
                    put(1, PValue::I64(0))?;
                    put(2, PValue::I32(n))?;
                }
            },
            Special::RawExtension | Special::FieldsV1 => {
                let raw = serde_json::to_vec(json).map_err(|e| invalid(e.to_string()))?;
                put(1, PValue::Bytes(raw.into()))?;
            }
            Special::ListWrapper => {
                let field = field_of(1)?;
                if let Some(items) = self.field(&field, json)? {
                    set(&mut message, &field, items)?;
                }
            }
        }
        Ok(message)
    }
}

/// The field whose Go JSON key is `name`, honouring renames; inlined fields
/// have no key of their own.
fn field_by_json_name(
    descriptor: &MessageDescriptor,
    go_fields: &[(u32, GoJson)],
    name: &str,
) -> Option<FieldDescriptor> {
    if let Some((number, _)) = go_fields
        .iter()
        .find(|(_, go)| matches!(go, GoJson::Rename(json) if *json == name))
    {
        return descriptor.get_field(*number);
    }
    let field = descriptor.get_field_by_name(name)?;
    let overridden = go_fields
        .iter()
        .any(|(number, _)| *number == field.number());
    (!overridden).then_some(field)
}

fn set(
    message: &mut DynamicMessage,
    field: &FieldDescriptor,
    value: PValue,
) -> Result<(), ProtoError> {
    message
        .try_set_field(field, value)
        .map_err(|e| invalid(format!("cannot set {}: {e}", field.name())))
}

fn map_key(kind: &Kind, key: &str) -> Result<MapKey, ProtoError> {
    let bad = || invalid(format!("invalid map key {key:?}"));
    Ok(match kind {
        Kind::String => MapKey::String(key.to_owned()),
        Kind::Bool => MapKey::Bool(key.parse().map_err(|_| bad())?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(key.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(key.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(key.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(key.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}

fn mismatch(expected: &str, json: &Value) -> ProtoError {
    let found = match json {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    invalid(format!("expected {expected}, found {found}"))
}

fn invalid(reason: impl Into<String>) -> ProtoError {
    ProtoError::InvalidValue {
        path: String::new(),
        reason: reason.into(),
    }
}
