//! Parsing resource URLs and their query parameters.

use serde::Deserialize;
use skiff_api::registry::{self, ResourceType};

use crate::error::{ApiError, ApiResult};

/// What a resource URL addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource type.
    pub rt: &'static ResourceType,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object name, if the URL names one.
    pub name: Option<String>,
    /// The subresource, if any (`status`, `scale`, ...).
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` or `/apis/{group}/{version}/...` into a [`Target`].
/// Returns `Ok(None)` when the path is not a resource path at all.
pub fn parse_path(path: &str) -> ApiResult<Option<Target>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(None),
    };
    let find = |plural: &str| {
        registry::by_plural(group, version, plural).ok_or_else(|| ApiError::no_route(path))
    };
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty() && tail.is_empty() && is_namespace_subresource(plural)) =>
        {
            let rt = find(plural)?;
            if !rt.namespaced() {
                return Err(ApiError::no_route(path));
            }
            let (name, subresource) = split_tail(tail, path)?;
            Target {
                rt,
                namespace: Some((*ns).to_string()),
                name,
                subresource,
            }
        }
        [plural, tail @ ..] => {
            let rt = find(plural)?;
            let (name, subresource) = split_tail(tail, path)?;
            if rt.namespaced() && name.is_some() {
                return Err(ApiError::no_route(path));
            }
            Target {
                rt,
                namespace: None,
                name,
                subresource,
            }
        }
        [] => return Ok(None),
    };
    if let Some(sub) = &target.subresource
        && target.rt.subresource(sub).is_none()
    {
        return Err(ApiError::no_route(path));
    }
    Ok(Some(target))
}

fn is_namespace_subresource(segment: &str) -> bool {
    registry::by_plural("", "v1", "namespaces").is_some_and(|rt| rt.subresource(segment).is_some())
}

fn split_tail(tail: &[&str], path: &str) -> ApiResult<(Option<String>, Option<String>)> {
    match tail {
        [] => Ok((None, None)),
        [name] => Ok((Some((*name).to_string()), None)),
        [name, sub] => Ok((Some((*name).to_string()), Some((*sub).to_string()))),
        _ => Err(ApiError::no_route(path)),
    }
}

/// Query parameters of resource requests (`ListOptions`, `CreateOptions`,
/// `PatchOptions`, `DeleteOptions` flattened), kept as strings so that bad values
/// get a proper 400 rather than an extractor rejection.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<String>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: Option<String>,
    pub allow_watch_bookmarks: Option<String>,
    pub timeout_seconds: Option<String>,
    pub send_initial_events: Option<String>,
    pub dry_run: Option<String>,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub force: Option<String>,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<String>,
    pub orphan_dependents: Option<String>,
    pub include_object: Option<String>,
}

impl Query {
    /// Parses a raw query string. Unknown parameters are ignored, as upstream does.
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        let Some(raw) = raw else {
            return Ok(Query::default());
        };
        // Repeated keys (e.g. dryRun=All&dryRun=All) are legal; keep the last.
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        let mut map = serde_json::Map::new();
        for (key, value) in pairs {
            map.insert(key, serde_json::Value::String(value));
        }
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {e}")))
    }

    /// A boolean parameter; absent is `false`.
    pub fn flag(value: &Option<String>, name: &str) -> ApiResult<bool> {
        match value.as_deref() {
            None | Some("") | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value for {name}: {other:?}"
            ))),
        }
    }

    /// An integer parameter.
    pub fn int(value: &Option<String>, name: &str) -> ApiResult<Option<i64>> {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v:?}")))
            })
            .transpose()
    }

    /// True for `dryRun=All`; any other non-empty value is refused as upstream does.
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun value: {other:?}: supported values: \"All\""
            ))),
        }
    }

    /// `fieldValidation`; absent means Warn, upstream's server default.
    pub fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.field_validation.as_deref() {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// How unknown or duplicate fields in a request body are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and answer with a `Warning` header per field.
    Warn,
    /// Refuse the request with 400.
    Strict,
}
