//! The resource endpoint: every `/api/v1/...` and `/apis/{g}/{v}/...` request
//! is parsed into a [`Target`] and dispatched by verb, with no per-type code.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::body::{self, MAX_BODY_BYTES, Representation};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Filter};
use crate::namespaces;
use crate::object;
use crate::request::{Query, Target, parse_path};
use crate::rest::{self, DeleteOptions, Mutation, ObjectRef, Rest, WriteContext};
use crate::strategy;
use crate::watch::{self, WatchRequest};
use skiff_api::apply::ApplyError;
use skiff_api::managed_fields::BuiltinSchema;

/// Serves one resource request.
pub async fn serve(rest: Arc<Rest>, request: axum::extract::Request) -> Response {
    if crate::node_proxy::is_node_subresource(request.uri().path()) {
        return crate::node_proxy::serve(rest, request).await;
    }
    if let Some(issuer) = crate::service_account::token_request::issuer_for(&request) {
        return crate::service_account::token_request::serve(rest, issuer, request).await;
    }
    let (parts, body) = request.into_parts();
    let result = async {
        let target =
            parse_path(parts.uri.path())?.ok_or_else(|| ApiError::no_route(parts.uri.path()))?;
        let query = Query::parse(parts.uri.query())?;
        let body = read_body(body).await?;
        dispatch(&rest, &parts.method, &parts.headers, target, query, body).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn read_body(body: Body) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(MAX_BODY_BYTES))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading request body: {e}"
        ))),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn dispatch(
    rest: &Arc<Rest>,
    method: &Method,
    headers: &HeaderMap,
    target: Target,
    query: Query,
    body: Bytes,
) -> ApiResult<Response> {
    let repr = body::negotiate(header_str(headers, header::ACCEPT))?;
    let content_type = header_str(headers, header::CONTENT_TYPE);
    let mut ctx = write_context(headers, &query)?;
    let rt = target.rt;
    let ns = target.namespace.as_deref();
    let name = target.name.as_deref();
    let sub = target.subresource.as_deref();
    match (method.clone(), name, sub) {
        (Method::GET, None, None) => {
            let filter = Filter::new(rt, &query)?;
            if Query::flag(&query.watch, "watch")? {
                let request = WatchRequest::new(rt, target.namespace.clone(), filter, repr, query)?;
                let stream = watch::watch(rest.clone(), request).await?;
                let mut response = Response::new(Body::from_stream(stream));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return Ok(response);
            }
            let page = list::list(rest, rt, ns, &query, &filter).await?;
            Ok(json_response(
                StatusCode::OK,
                list::render(rt, &page, repr, &query)?,
                &ctx,
            ))
        }
        (Method::GET, Some(name), sub) => {
            let at = ObjectRef {
                rt,
                namespace: ns,
                name,
            };
            let current = rest.get(at).await?;
            let object = match sub {
                None | Some("status") => current.object.clone(),
                Some("resize") if strategy::writes_through(rt, "resize") => current.object.clone(),
                Some("scale") => strategy::scale_of(rt, &current.object)?,
                Some(other) => return Err(unserved_subresource(rt, other)),
            };
            respond_object(StatusCode::OK, &object, rt, repr, &query, &ctx, sub)
        }
        (Method::POST, None, None) => {
            let obj = body::decode_object(content_type, &body)?;
            let created = rest.create(rt, ns, obj, &mut ctx).await?;
            respond_object(StatusCode::CREATED, &created, rt, repr, &query, &ctx, None)
        }
        (Method::POST, Some(name), Some("binding")) => {
            let binding = body::decode_object(content_type, &body)?;
            bind_pod(
                rest,
                ObjectRef {
                    rt,
                    namespace: ns,
                    name,
                },
                &binding,
            )
            .await?;
            Ok(success(StatusCode::CREATED))
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let eviction = body::decode_object(content_type, &body)?;
            let at = ObjectRef {
                rt,
                namespace: ns,
                name,
            };
            crate::admission::eviction::evict(rest, at, &eviction, ctx.dry_run).await?;
            Ok(success(StatusCode::CREATED))
        }
        (Method::POST, Some(_), Some(other)) => Err(unserved_subresource(rt, other)),
        (Method::PUT, Some(name), sub) => {
            let obj = body::decode_object(content_type, &body)?;
            let at = ObjectRef {
                rt,
                namespace: ns,
                name,
            };
            let updated = update(rest, at, sub, obj, &mut ctx).await?;
            respond_object(StatusCode::OK, &updated, rt, repr, &query, &ctx, sub)
        }
        (Method::PATCH, Some(name), sub) => {
            let at = ObjectRef {
                rt,
                namespace: ns,
                name,
            };
            let media = body::media_type(content_type);
            let force = Query::flag(&query.force, "force")?;
            let (status, patched) = patch(rest, at, sub, &media, &body, force, &mut ctx).await?;
            respond_object(status, &patched, rt, repr, &query, &ctx, sub)
        }
        (Method::DELETE, Some(name), None) => {
            let options = delete_options(content_type, &body, &query)?;
            let at = ObjectRef {
                rt,
                namespace: ns,
                name,
            };
            let deleted = if rt.group.is_empty() && rt.kind == "Namespace" {
                namespaces::delete(rest, name, &options, ctx.dry_run).await?
            } else {
                rest.delete(at, &options, ctx.dry_run).await?
            };
            respond_object(StatusCode::OK, &deleted, rt, repr, &query, &ctx, None)
        }
        (Method::DELETE, None, None) => {
            let options = delete_options(content_type, &body, &query)?;
            let filter = Filter::new(rt, &query)?;
            let page = list::list(rest, rt, ns, &Query::default(), &filter).await?;
            let mut deleted = Vec::new();
            for item in &page.items {
                let at = ObjectRef {
                    rt,
                    namespace: Some(object::namespace(&item.object)).filter(|n| !n.is_empty()),
                    name: object::name(&item.object),
                };
                match rest.delete(at, &options, ctx.dry_run).await {
                    Ok(obj) => deleted.push(obj),
                    Err(e) if e.code == StatusCode::NOT_FOUND => {}
                    Err(e) => return Err(e),
                }
            }
            let list = json!({
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": rest.cache.revision().to_string()},
                "items": deleted,
            });
            Ok(json_response(StatusCode::OK, list::to_bytes(&list)?, &ctx))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// Subresources in discovery that this server does not serve yet: the
/// streaming ones belong to the node agent, the rest are not implemented.
fn unserved_subresource(rt: &skiff_api::registry::ResourceType, subresource: &str) -> ApiError {
    match subresource {
        "log" | "exec" | "attach" | "portforward" | "proxy" => ApiError::bad_request(format!(
            "the {subresource} subresource of {} is served by the node agent, which is not running",
            rt.plural
        )),
        other => ApiError::method_not_allowed(format!(
            "the {other} subresource of {} is not supported by this server yet",
            rt.plural
        )),
    }
}

fn write_context(headers: &HeaderMap, query: &Query) -> ApiResult<WriteContext> {
    let field_manager = match query.field_manager.as_deref().filter(|m| !m.is_empty()) {
        Some(m) if m.len() > 128 => {
            return Err(ApiError::bad_request(
                "fieldManager must be at most 128 characters",
            ));
        }
        Some(m) => m.to_string(),
        // Upstream derives the manager from the User-Agent's product token.
        None => header_str(headers, header::USER_AGENT)
            .and_then(|ua| ua.split('/').next())
            .filter(|p| !p.is_empty())
            .unwrap_or("unknown")
            .chars()
            .take(128)
            .collect(),
    };
    Ok(WriteContext {
        dry_run: query.dry_run()?,
        field_manager,
        field_validation: query.field_validation()?,
        warnings: Vec::new(),
        applied: false,
    })
}

fn delete_options(
    content_type: Option<&str>,
    body: &[u8],
    query: &Query,
) -> ApiResult<DeleteOptions> {
    let mut options = DeleteOptions {
        grace_period_seconds: Query::int(&query.grace_period_seconds, "gracePeriodSeconds")?,
        propagation_policy: query.propagation_policy.clone(),
        ..DeleteOptions::default()
    };
    if Query::flag(&query.orphan_dependents, "orphanDependents")? {
        options.propagation_policy = Some("Orphan".into());
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        let parsed = body::decode_object(content_type, body)?;
        if let Some(g) = parsed.get("gracePeriodSeconds").and_then(Value::as_i64) {
            options.grace_period_seconds = Some(g);
        }
        if let Some(p) = parsed.get("propagationPolicy").and_then(Value::as_str) {
            options.propagation_policy = Some(p.to_string());
        }
        if parsed.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            options.propagation_policy = Some("Orphan".into());
        }
        let pre = &parsed["preconditions"];
        options.precondition_uid = pre["uid"].as_str().map(String::from);
        options.precondition_rv = pre["resourceVersion"].as_str().map(String::from);
    }
    match options.propagation_policy.as_deref() {
        None | Some("Orphan" | "Background" | "Foreground") => Ok(options),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy must be one of Orphan, Background, Foreground; got {other:?}"
        ))),
    }
}

/// PUT of an object or its status/scale subresource.
async fn update(
    rest: &Rest,
    at: ObjectRef<'_>,
    sub: Option<&str>,
    body: Value,
    ctx: &mut WriteContext,
) -> ApiResult<Value> {
    if sub == Some("scale") {
        return write_scale(rest, at, ctx, |_| Ok(body.clone())).await;
    }
    check_subresource(at, sub)?;
    let dry_run = ctx.dry_run;
    rest.guaranteed_update(at, |current| {
        let mutation = rest.admit_update(at, sub, current, body.clone(), ctx)?;
        Ok(dry_run_guard(mutation, dry_run))
    })
    .await
}

fn check_subresource(at: ObjectRef<'_>, sub: Option<&str>) -> ApiResult<()> {
    match sub {
        None => Ok(()),
        Some(sub) if strategy::writes_through(at.rt, sub) => Ok(()),
        Some(other) => Err(unserved_subresource(at.rt, other)),
    }
}

/// Dry runs stop before the write: the admitted object is answered as is.
fn dry_run_guard(mutation: Mutation, dry_run: bool) -> Mutation {
    match mutation {
        Mutation::Write(obj) if dry_run => Mutation::DryRun(obj),
        other => other,
    }
}

/// The scale subresource: read the Scale view, let `change` produce a new
/// one, write its replicas back.
async fn write_scale<F>(
    rest: &Rest,
    at: ObjectRef<'_>,
    ctx: &mut WriteContext,
    mut change: F,
) -> ApiResult<Value>
where
    F: FnMut(&Value) -> ApiResult<Value>,
{
    let rt = at.rt;
    let dry_run = ctx.dry_run;
    let updated = rest
        .guaranteed_update(at, |current| {
            let scale = strategy::scale_of(rt, current)?;
            let new_scale = change(&scale)?;
            let mut new = current.clone();
            strategy::apply_scale(&mut new, &new_scale)?;
            let mutation = rest.admit_update(at, None, current, new, ctx)?;
            Ok(dry_run_guard(mutation, dry_run))
        })
        .await?;
    strategy::scale_of(rt, &updated)
}

/// PATCH in any of the four patch types.
async fn patch(
    rest: &Rest,
    at: ObjectRef<'_>,
    sub: Option<&str>,
    media: &str,
    body: &[u8],
    force: bool,
    ctx: &mut WriteContext,
) -> ApiResult<(StatusCode, Value)> {
    let rt = at.rt;
    let patch_body = match media {
        "application/apply-patch+yaml" => body::decode_yaml(body)?,
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => body::decode_json(body)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let apply_patch = |current: &Value| -> ApiResult<Value> {
        let result = match media {
            "application/json-patch+json" => {
                skiff_api::patch::apply_json_patch(current, &patch_body)
            }
            "application/merge-patch+json" => {
                skiff_api::patch::apply_merge_patch(current, &patch_body)
            }
            _ => skiff_api::patch::apply_strategic_merge(rt.group, rt.kind, current, &patch_body),
        };
        result.map_err(|e| ApiError::bad_request(e.to_string()))
    };
    if sub == Some("scale") {
        let scale = write_scale(rest, at, ctx, |scale| {
            apply_patch(&object::without_resource_version(scale))
        })
        .await?;
        return Ok((StatusCode::OK, scale));
    }
    check_subresource(at, sub)?;
    if media == "application/apply-patch+yaml" {
        return server_side_apply(rest, at, sub, patch_body, force, ctx).await;
    }
    let dry_run = ctx.dry_run;
    let updated = rest
        .guaranteed_update(at, |current| {
            let patched = apply_patch(current)?;
            let mutation = rest.admit_update(at, sub, current, patched, ctx)?;
            Ok(dry_run_guard(mutation, dry_run))
        })
        .await?;
    Ok((StatusCode::OK, updated))
}

async fn server_side_apply(
    rest: &Rest,
    at: ObjectRef<'_>,
    sub: Option<&str>,
    applied: Value,
    force: bool,
    ctx: &mut WriteContext,
) -> ApiResult<(StatusCode, Value)> {
    let rt = at.rt;
    if ctx.field_manager.is_empty() || ctx.field_manager == "unknown" {
        return Err(ApiError::bad_request(
            "PATCH of type application/apply-patch+yaml requires the fieldManager parameter",
        ));
    }
    let manager = ctx.field_manager.clone();
    let api_version = rt.api_version();
    let schema = BuiltinSchema {
        group: rt.group,
        kind: rt.kind,
    };
    let field_manager = rest::field_manager(&schema, rt, &api_version, &manager, sub);
    let run_apply = |live: Option<&Value>| -> ApiResult<Value> {
        field_manager
            .apply(live, &applied, force)
            .map_err(apply_error)
    };
    ctx.applied = true;
    match rest.get(at).await {
        Err(e) if e.code == StatusCode::NOT_FOUND && sub.is_none() => {
            let mut created = run_apply(None)?;
            object::meta_mut(&mut created).insert("name".into(), json!(at.name));
            let obj = rest.create(rt, at.namespace, created, ctx).await?;
            Ok((StatusCode::CREATED, obj))
        }
        Err(e) => Err(e),
        Ok(_) => {
            let dry_run = ctx.dry_run;
            let updated = rest
                .guaranteed_update(at, |current| {
                    let mut merged = run_apply(Some(&object::without_resource_version(current)))?;
                    let precondition = object::resource_version(&applied);
                    if !precondition.is_empty() {
                        object::meta_mut(&mut merged)
                            .insert("resourceVersion".into(), json!(precondition));
                    }
                    let mutation = rest.admit_update(at, sub, current, merged, ctx)?;
                    Ok(dry_run_guard(mutation, dry_run))
                })
                .await?;
            Ok((StatusCode::OK, updated))
        }
    }
}

fn apply_error(e: ApplyError) -> ApiError {
    match e {
        ApplyError::Conflicts(conflicts) => {
            let causes = conflicts
                .iter()
                .map(|c| {
                    json!({
                        "reason": "FieldManagerConflict",
                        "message": c.cause_message(),
                        "field": c.field(),
                    })
                })
                .collect();
            ApiError::conflict_with_causes(skiff_api::apply::conflicts_message(&conflicts), causes)
        }
        ApplyError::InvalidObject(e) => ApiError::unprocessable(e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// `pods/binding`: assigns a pod to a node, once.
async fn bind_pod(rest: &Rest, at: ObjectRef<'_>, binding: &Value) -> ApiResult<()> {
    let node = binding["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding.target.name is required"))?
        .to_string();
    rest.guaranteed_update(at, |current| {
        if object::is_deleting(current) {
            return Err(ApiError::conflict(
                at.rt,
                at.name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) = current["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                at.rt,
                at.name,
                &format!("pod {} is already assigned to node \"{existing}\"", at.name),
            ));
        }
        let mut new = object::without_resource_version(current);
        new["spec"]["nodeName"] = json!(node);
        let condition = json!({
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": object::format_time(jiff::Timestamp::now()),
        });
        let conditions = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(condition);
        new["status"]["conditions"] = Value::Array(conditions);
        Ok(Mutation::Write(new))
    })
    .await
    .map(|_| ())
}

fn success(code: StatusCode) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn respond_object(
    code: StatusCode,
    obj: &Value,
    rt: &skiff_api::registry::ResourceType,
    repr: Representation,
    query: &Query,
    ctx: &WriteContext,
    sub: Option<&str>,
) -> ApiResult<Response> {
    let body = match repr {
        Representation::Table if sub.is_none() => {
            let mut meta = Map::new();
            meta.insert(
                "resourceVersion".into(),
                json!(object::resource_version(obj)),
            );
            let row = list::TableRow {
                object: obj,
                json: None,
            };
            list::table(rt, std::iter::once(row), meta, query, true)?
        }
        Representation::Metadata => list::to_bytes(&list::partial_metadata(obj))?,
        _ => list::to_bytes(obj)?,
    };
    Ok(json_response(code, body, ctx))
}

fn json_response(code: StatusCode, body: Bytes, ctx: &WriteContext) -> Response {
    let mut response = (code, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for warning in &ctx.warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, value);
        }
    }
    response
}
