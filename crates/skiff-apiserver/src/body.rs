//! Request bodies in, response bodies out: content types and negotiation.

use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Largest request body accepted, as upstream's apiserver (3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// `application/vnd.kubernetes.protobuf`
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The media type of a request body, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Decodes an object body (create, update) by its media type. A missing
/// Content-Type is JSON, as the Python client sends it.
pub fn decode_object(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    let media = media_type(content_type);
    let value = match media.as_str() {
        "" | "application/json" | "*/*" => decode_json(body)?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body)?,
        PROTOBUF => {
            skiff_proto::decode_envelope(body)
                .map_err(|e| ApiError::bad_request(format!("unable to decode protobuf body: {e}")))?
                .object
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    Ok(value)
}

/// Parses JSON, mapping syntax errors to 400.
pub fn decode_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
}

/// Parses YAML (one document), mapping syntax errors to 400.
pub fn decode_yaml(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("YAML body is not valid UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))
}

/// What representation the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The object (or list) itself, as JSON.
    Object,
    /// A `meta.k8s.io/v1` Table.
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// Picks the first representation in `Accept` that we serve. A client that
/// accepts protobuf gets JSON: client-go decodes by the response Content-Type.
pub fn negotiate(accept: Option<&str>) -> ApiResult<Representation> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Representation::Object);
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut as_kind = None;
        let mut group = None;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                match k.trim() {
                    "as" => as_kind = Some(v.trim().to_string()),
                    "g" => group = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let json_like = matches!(
            media.as_str(),
            "application/json" | "*/*" | "application/*" | "application/yaml"
        );
        if !json_like && media != PROTOBUF {
            continue;
        }
        match (as_kind.as_deref(), group.as_deref()) {
            (None, _) => return Ok(Representation::Object),
            (Some("Table"), Some("meta.k8s.io")) if media != PROTOBUF => {
                return Ok(Representation::Table);
            }
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io"))
                if media != PROTOBUF =>
            {
                return Ok(Representation::Metadata);
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json;as=Table;v=v1;g=meta.k8s.io (got {accept:?})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_asks_for_a_table() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(accept)).unwrap(), Representation::Table);
    }

    #[test]
    fn protobuf_first_then_json() {
        let accept = "application/vnd.kubernetes.protobuf, */*";
        assert_eq!(negotiate(Some(accept)).unwrap(), Representation::Object);
        assert_eq!(negotiate(None).unwrap(), Representation::Object);
        assert_eq!(
            negotiate(Some("application/json;as=Unknown;g=x, application/json")).unwrap(),
            Representation::Object
        );
    }

    #[test]
    fn unacceptable_media_is_406() {
        let err = negotiate(Some("text/html")).unwrap_err();
        assert_eq!(err.code.as_u16(), 406);
    }

    #[test]
    fn bodies_decode_by_media_type() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n";
        let obj = decode_object(Some("application/yaml"), yaml).unwrap();
        assert_eq!(obj["metadata"]["name"], "x");
        let json = br#"{"kind":"ConfigMap"}"#;
        assert_eq!(decode_object(None, json).unwrap()["kind"], "ConfigMap");
        assert_eq!(
            decode_object(None, b"{nope").unwrap_err().code.as_u16(),
            400
        );
        assert_eq!(decode_object(None, b"[1]").unwrap_err().code.as_u16(), 400);
        assert_eq!(
            decode_object(Some("text/plain"), b"x")
                .unwrap_err()
                .code
                .as_u16(),
            415
        );
    }
}
