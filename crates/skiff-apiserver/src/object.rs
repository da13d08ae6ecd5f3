//! Small accessors for `metadata` of objects held as JSON.

use serde_json::{Map, Value};
use skiff_store::Revision;

/// `metadata`, if present and an object.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// `metadata`, created if missing (replacing a non-object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = ensure_object(obj);
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    ensure_object(meta)
}

fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// A string field of `metadata`, or "".
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.name`
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace`
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

/// `metadata.uid`
pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

/// `metadata.resourceVersion`, or "".
pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    meta_mut(obj).insert(
        "resourceVersion".to_string(),
        Value::String(revision.to_string()),
    );
}

/// `json` (a stored object, as serialized) with `metadata.resourceVersion`
/// set to `revision`: the bytes [`set_resource_version`] and a fresh encoding
/// would give (the field is appended to `metadata`, as a map that keeps
/// insertion order appends it), spliced in without decoding and re-encoding
/// the object. `None` when the splice cannot stand for that encoding: no
/// top-level `metadata` object, a resourceVersion already there (it would be
/// replaced in place), escaped key names, or not a JSON object at all.
pub fn splice_resource_version(json: &[u8], revision: Revision) -> Option<bytes::Bytes> {
    let mut s = Scanner { bytes: json, at: 0 };
    s.skip_ws();
    s.expect(b'{')?;
    let mut meta_end = None;
    s.skip_ws();
    if s.peek()? == b'}' {
        return None;
    }
    loop {
        s.skip_ws();
        let key = s.key()?;
        s.skip_ws();
        s.expect(b':')?;
        s.skip_ws();
        if key == b"metadata" {
            if meta_end.is_some() {
                return None;
            }
            meta_end = Some(s.metadata()?);
        } else {
            s.value()?;
        }
        s.skip_ws();
        match s.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    s.skip_ws();
    if s.at != json.len() {
        return None;
    }
    let (close, empty) = meta_end?;
    let revision = revision.to_string();
    let mut out = bytes::BytesMut::with_capacity(json.len() + revision.len() + 22);
    out.extend_from_slice(&json[..close]);
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(revision.as_bytes());
    out.extend_from_slice(b"\"");
    out.extend_from_slice(&json[close..]);
    Some(out.freeze())
}

/// A cursor over JSON text already known to be valid.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    /// Skips a string; returns its raw contents and whether it has escapes.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            match self.next()? {
                b'"' => return Some((&self.bytes[start..self.at - 1], escaped)),
                b'\\' => {
                    escaped = true;
                    self.next()?;
                }
                _ => {}
            }
        }
    }

    /// An object key without escapes (an escaped one could spell any name).
    fn key(&mut self) -> Option<&'a [u8]> {
        match self.string()? {
            (key, false) => Some(key),
            (_, true) => None,
        }
    }

    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }

    /// Skips the metadata object; returns the offset of its closing brace and
    /// whether it is empty, or `None` if it holds a resourceVersion.
    fn metadata(&mut self) -> Option<(usize, bool)> {
        self.expect(b'{')?;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some((self.at - 1, true));
        }
        loop {
            self.skip_ws();
            if self.key()? == b"resourceVersion" {
                return None;
            }
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            self.value()?;
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b'}' => return Some((self.at - 1, false)),
                _ => return None,
            }
        }
    }
}

/// A copy of `obj` without `metadata.resourceVersion`: the starting point of
/// a mutation that must not pin the revision it read.
pub fn without_resource_version(obj: &Value) -> Value {
    let mut obj = obj.clone();
    meta_mut(&mut obj).remove("resourceVersion");
    obj
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `metadata.finalizers`, removing the field when empty.
pub fn set_finalizers(obj: &mut Value, finalizers: &[String]) {
    let meta = meta_mut(obj);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert(
            "finalizers".to_string(),
            Value::Array(finalizers.iter().cloned().map(Value::String).collect()),
        );
    }
}

/// True if `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|v| !v.is_null()))
}

/// `metadata.labels` as a map (empty if absent).
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A timestamp in Kubernetes' `Time` format (RFC 3339, seconds precision, UTC).
pub fn format_time(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A JSON path lookup: `spec.nodeName` → the value there.
pub fn lookup<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, part| v.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_accessors() {
        let mut obj = json!({"metadata": {"name": "a", "finalizers": ["x"]}});
        assert_eq!(name(&obj), "a");
        assert_eq!(namespace(&obj), "");
        set_resource_version(&mut obj, 42);
        assert_eq!(resource_version(&obj), "42");
        assert_eq!(finalizers(&obj), vec!["x".to_string()]);
        set_finalizers(&mut obj, &[]);
        assert!(obj["metadata"].get("finalizers").is_none());
        let mut bare = json!("not an object");
        meta_mut(&mut bare).insert("name".into(), json!("b"));
        assert_eq!(name(&bare), "b");
    }

    #[test]
    fn spliced_resource_version_matches_a_fresh_encoding() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "}"}},
                "spec": {"containers": [{"name": "c", "args": ["\"{", "\\"]}]}}),
            json!({"metadata": {}, "data": {"k": "v"}}),
            json!({"data": [1, 2.5, -3, true, null, {"a": []}], "metadata": {"annotations": {"q": "\u{1}\"}"}}}),
            json!({"kind": "Event", "metadata": {"managedFields": [{"fieldsV1": {"f:a": {}}}]}, "z": "é"}),
        ];
        for obj in objects {
            let stored = serde_json::to_vec(&obj).unwrap();
            let mut expected = obj.clone();
            set_resource_version(&mut expected, 42);
            assert_eq!(
                splice_resource_version(&stored, 42).as_deref(),
                Some(serde_json::to_vec(&expected).unwrap().as_slice()),
                "{obj}"
            );
            let pretty = serde_json::to_vec_pretty(&obj).unwrap();
            let spliced = splice_resource_version(&pretty, 42).unwrap();
            let parsed: Value = serde_json::from_slice(&spliced).unwrap();
            assert_eq!(parsed, expected);
        }
    }

    #[test]
    fn splice_declines_what_it_cannot_reproduce() {
        for obj in [
            json!({"kind": "X"}),
            json!({"metadata": {"resourceVersion": "3", "name": "a"}}),
            json!({"metadata": "odd"}),
            json!({}),
            json!([1]),
        ] {
            let stored = serde_json::to_vec(&obj).unwrap();
            assert_eq!(splice_resource_version(&stored, 7), None, "{obj}");
        }
        let escaped = br#"{"meta\u0064ata":{"name":"a"}}"#;
        assert_eq!(splice_resource_version(escaped, 7), None);
    }

    #[test]
    fn time_format_is_seconds_utc() {
        let ts: jiff::Timestamp = "2024-01-02T03:04:05.678Z".parse().unwrap();
        assert_eq!(format_time(ts), "2024-01-02T03:04:05Z");
    }
}
