//! Lists: selectors, pagination, and rendering as a list, Table or metadata.

use std::sync::Arc;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use skiff_api::registry::ResourceType;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_store::{RangeRequest, Revision, StoreError};

use crate::body::Representation;
use crate::cache::{Cached, type_prefix};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::request::Query;
use crate::rest::Rest;
use crate::views;

/// Label and field selectors of a list or watch.
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    rt: &'static ResourceType,
}

impl Filter {
    /// Parses the selectors in `query` for type `rt`; unknown fields are 400.
    pub fn new(rt: &'static ResourceType, query: &Query) -> ApiResult<Filter> {
        let labels = query
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = query
            .field_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(FieldSelector::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        if let Some(fields) = &fields {
            // A type's lookup answers every field it supports, even on an
            // empty object, and None for the rest.
            let probe = json!({});
            for field in fields.fields() {
                let generic = matches!(field, "metadata.name" | "metadata.namespace");
                if !generic && (rt.field_selector)(&probe, field).is_none() {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {field}"
                    )));
                }
            }
        }
        Ok(Filter { labels, fields, rt })
    }

    /// True if the object passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(labels) = &self.labels
            && !labels.matches(&object::labels(obj))
        {
            return false;
        }
        if let Some(fields) = &self.fields {
            let rt = self.rt;
            return fields.matches(|field| match field {
                "metadata.name" => Some(object::name(obj).to_string()),
                "metadata.namespace" => Some(object::namespace(obj).to_string()),
                other => (rt.field_selector)(obj, other),
            });
        }
        true
    }
}

/// A continue token: where the next page starts and at which revision.
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let token = serde_json::to_vec(&ContinueToken {
        rv,
        start: start.to_string(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ApiError::bad_request("invalid continue token"))?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::bad_request("invalid continue token"))
}

/// One page of a list.
pub struct Page {
    /// Matching objects.
    pub items: Vec<Arc<Cached>>,
    /// The revision the list is consistent at.
    pub revision: Revision,
    /// Continue token for the next page.
    pub continue_token: Option<String>,
}

/// Lists a type, from the cache when unpaginated and from the store (at a
/// pinned revision) when `limit`/`continue` are used.
pub async fn list(
    rest: &Rest,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    query: &Query,
    filter: &Filter,
) -> ApiResult<Page> {
    let limit = Query::int(&query.limit, "limit")?.filter(|l| *l > 0);
    let continue_token = query.continue_token.as_deref().filter(|c| !c.is_empty());
    let rv = query.resource_version.as_deref().unwrap_or_default();
    let exact = query.resource_version_match.as_deref() == Some("Exact");
    if limit.is_none() && continue_token.is_none() && !exact {
        match rv {
            // "0" means any cached state is fine.
            "0" => {}
            "" => rest.cache.sync().await.map_err(cache_error)?,
            n => {
                let n = parse_rv(n)?;
                rest.cache.wait_for(n).await.map_err(cache_error)?;
            }
        }
        let (all, revision) = rest.cache.list(rt, namespace);
        let items = all
            .into_iter()
            .map(|c| views::present(rt, c))
            .filter(|c| filter.matches(&c.object))
            .collect();
        return Ok(Page {
            items,
            revision,
            continue_token: None,
        });
    }
    let prefix = match namespace {
        Some(ns) if rt.namespaced() => format!("{}{ns}/", type_prefix(rt)),
        _ => type_prefix(rt),
    };
    let mut request = RangeRequest::prefix(&prefix);
    if let Some(token) = continue_token {
        let token = decode_continue(token)?;
        if !token.start.starts_with(&prefix) {
            return Err(ApiError::bad_request(
                "continue token does not match this list",
            ));
        }
        request.keys.start = token.start;
        request.revision = token.rv;
    } else if exact || (!rv.is_empty() && rv != "0") {
        request.revision = parse_rv(rv)?;
    }
    let want = limit.map(|l| l as usize).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut next_start = None;
    let mut revision;
    loop {
        request.limit = want.saturating_sub(items.len()).clamp(1, 10_000);
        let page = rest.store().range(request.clone()).await.map_err(|e| match e {
            StoreError::Compacted { .. } if continue_token.is_some() => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ),
            other => ApiError::from_store(rt, "", other),
        })?;
        revision = page.revision;
        request.revision = page.revision;
        for kv in &page.kvs {
            let cached = crate::rest::decode(rt, kv)?;
            if filter.matches(&cached.object) {
                items.push(cached);
            }
        }
        let last = page.kvs.last().map(|kv| format!("{}\0", kv.key));
        if !page.more {
            break;
        }
        if items.len() >= want {
            next_start = last;
            break;
        }
        match last {
            Some(start) => request.keys.start = start,
            None => break,
        }
    }
    Ok(Page {
        items,
        revision,
        continue_token: next_start.map(|start| encode_continue(revision, &start)),
    })
}

fn parse_rv(rv: &str) -> ApiResult<Revision> {
    rv.parse::<Revision>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))
}

fn cache_error(e: crate::cache::CacheError) -> ApiError {
    match e {
        crate::cache::CacheError::Timeout(rev) => {
            ApiError::timeout(format!("Too large resource version: {rev}, current: older"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// Renders a page in the representation the client asked for.
pub fn render(
    rt: &ResourceType,
    page: &Page,
    repr: Representation,
    query: &Query,
) -> ApiResult<Bytes> {
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(page.revision.to_string()));
    if let Some(token) = &page.continue_token {
        meta.insert("continue".into(), json!(token));
    }
    match repr {
        Representation::Table => table(
            rt,
            page.items.iter().map(|c| TableRow::from(c.as_ref())),
            meta,
            query,
            true,
        ),
        Representation::Metadata => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|c| partial_metadata(&c.object))
                .collect();
            to_bytes(&json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items,
            }))
        }
        Representation::Object => {
            // Assemble the list from each object's cached bytes.
            let head =
                json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": meta});
            let head = serde_json::to_vec(&head).map_err(|e| ApiError::internal(e.to_string()))?;
            let size =
                head.len() + page.items.iter().map(|c| c.json().len() + 1).sum::<usize>() + 16;
            let mut out = BytesMut::with_capacity(size);
            out.put_slice(&head[..head.len() - 1]);
            out.put_slice(b",\"items\":[");
            for (i, item) in page.items.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                out.put_slice(item.json());
            }
            out.put_slice(b"]}");
            Ok(out.freeze())
        }
    }
}

/// One object to print as a Table row, with its JSON if already encoded.
pub struct TableRow<'a> {
    /// The object.
    pub object: &'a Value,
    /// `object` serialized, when the caller has it (the watch cache does).
    pub json: Option<&'a [u8]>,
}

impl<'a> From<&'a Cached> for TableRow<'a> {
    fn from(cached: &'a Cached) -> Self {
        TableRow {
            object: &cached.object,
            json: Some(cached.json()),
        }
    }
}

/// A `meta.k8s.io/v1` Table of `rows`, assembled as bytes: each row's object
/// is the cached JSON (or its metadata), never a copy of the object tree.
pub fn table<'a>(
    rt: &ResourceType,
    rows: impl Iterator<Item = TableRow<'a>>,
    meta: Map<String, Value>,
    query: &Query,
    headers: bool,
) -> ApiResult<Bytes> {
    let now = jiff::Timestamp::now();
    let include = query.include_object.as_deref().unwrap_or("Metadata");
    let columns: Vec<Value> = if headers {
        rt.columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let head = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
    });
    let encode = |v: &Value| serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()));
    let head = encode(&head)?;
    let mut out = BytesMut::with_capacity(head.len() + 64);
    out.put_slice(&head[..head.len() - 1]);
    out.put_slice(b",\"rows\":[");
    for (i, row) in rows.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(b"{\"cells\":");
        out.put_slice(&encode(&Value::Array((rt.row)(row.object, now)))?);
        match include {
            "None" => {}
            "Object" => {
                out.put_slice(b",\"object\":");
                match row.json {
                    Some(json) => out.put_slice(json),
                    None => out.put_slice(&encode(row.object)?),
                }
            }
            _ => {
                out.put_slice(b",\"object\":{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":");
                match row.object.get("metadata") {
                    Some(metadata) => out.put_slice(&encode(metadata)?),
                    None => out.put_slice(b"{}"),
                }
                out.put_u8(b'}');
            }
        }
        out.put_u8(b'}');
    }
    out.put_slice(b"]}");
    Ok(out.freeze())
}

/// `PartialObjectMetadata` for an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Serializes a JSON value.
pub fn to_bytes(value: &Value) -> ApiResult<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "/registry/core/pods/default/a\0");
        let back = decode_continue(&token).unwrap();
        assert_eq!(back.rv, 42);
        assert_eq!(back.start, "/registry/core/pods/default/a\0");
        assert_eq!(decode_continue("!!!").unwrap_err().code.as_u16(), 400);
    }
}
