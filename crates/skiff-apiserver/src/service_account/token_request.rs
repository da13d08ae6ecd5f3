//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: a
//! `authentication.k8s.io/v1` TokenRequest in, the same with `status.token`
//! and `status.expirationTimestamp` out (201), as upstream's TokenREST.
//!
//! - `spec.expirationSeconds` defaults to 3600 and must be 600 to 2^32;
//! - `spec.audiences` defaults to the API server's;
//! - `spec.boundObjectRef` may name a Pod (of the same account; the token
//!   then also names the pod's node), a Secret or a Node, which must exist
//!   (404) and, when the reference has a uid, have it (409);
//! - a pod-bound token for the API server asking for exactly 3607 seconds
//!   (what the ServiceAccount admission plugin mounts) is valid for a year
//!   and carries `warnafter` at 3607 seconds, upstream's default
//!   `--service-account-extend-token-expiration`.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::jwt::{Claims, KubernetesClaims, ObjectClaim};
use super::{TokenIssuer, core, username};
use crate::body::{self, MAX_BODY_BYTES};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{ObjectRef, Rest};

const GROUP: &str = "authentication.k8s.io";
const API_VERSION: &str = "authentication.k8s.io/v1";
const KIND: &str = "TokenRequest";
/// `spec.expirationSeconds` when the request has none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The lifetime that marks a projected token for extension.
const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// What such a token's lifetime is extended to: a year.
const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 60 * 60;

/// The issuer, when `request` is a TokenRequest and this server issues
/// tokens.
pub fn issuer_for(request: &Request) -> Option<Arc<TokenIssuer>> {
    if request.method() != Method::POST {
        return None;
    }
    account_of(request.uri().path())?;
    request.extensions().get::<Arc<TokenIssuer>>().cloned()
}

/// The namespace and account of a `serviceaccounts/{name}/token` path.
fn account_of(path: &str) -> Option<(&str, &str)> {
    match path
        .trim_end_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        [
            "",
            "api",
            "v1",
            "namespaces",
            ns,
            "serviceaccounts",
            name,
            "token",
        ] if !ns.is_empty() && !name.is_empty() => Some((ns, name)),
        _ => None,
    }
}

/// Serves one TokenRequest.
pub async fn serve(rest: Arc<Rest>, issuer: Arc<TokenIssuer>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let result = async {
        let (namespace, name) =
            account_of(parts.uri.path()).ok_or_else(|| ApiError::no_route(parts.uri.path()))?;
        let bytes = http_body_util::Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| ApiError::bad_request(format!("error reading request body: {e}")))?
            .to_bytes();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let token_request = body::decode_object(content_type, &bytes)?;
        create(
            &rest,
            &issuer,
            namespace,
            name,
            token_request,
            jiff::Timestamp::now(),
        )
        .await
    }
    .await;
    match result {
        Ok(created) => (
            StatusCode::CREATED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            created.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// What the token is bound to.
#[derive(Default)]
struct Bound {
    pod: Option<ObjectClaim>,
    secret: Option<ObjectClaim>,
    node: Option<ObjectClaim>,
}

/// Issues a token for account `namespace/name` as `request` asks, at `now`.
pub async fn create(
    rest: &Rest,
    issuer: &TokenIssuer,
    namespace: &str,
    name: &str,
    mut request: Value,
    now: jiff::Timestamp,
) -> ApiResult<Value> {
    check_type(&request)?;
    let mut meta = request["metadata"].as_object().cloned().unwrap_or_default();
    let given = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (given_name, given_namespace, given_uid) =
        (given("name"), given("namespace"), given("uid"));
    if !given_name.is_empty() && given_name != name {
        return Err(invalid(
            name,
            "metadata.name",
            &json!(given_name),
            "must match the service account name if specified",
        ));
    }
    if !given_namespace.is_empty() && given_namespace != namespace {
        return Err(invalid(
            name,
            "metadata.namespace",
            &json!(given_namespace),
            "must match the service account namespace if specified",
        ));
    }
    let account = rest
        .get(ObjectRef {
            rt: core("serviceaccounts"),
            namespace: Some(namespace),
            name,
        })
        .await?;
    let account_uid = object::uid(&account.object).to_string();
    if !given_uid.is_empty() && given_uid != account_uid {
        return Err(conflict(
            &format!("{KIND}.{GROUP}"),
            GROUP,
            KIND,
            name,
            &format!(
                "the UID in the token request ({given_uid}) does not match the UID of the service account ({account_uid})"
            ),
        ));
    }

    let spec = request["spec"].as_object().cloned().unwrap_or_default();
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| {
                a.as_str()
                    .map(String::from)
                    .ok_or_else(|| ApiError::bad_request("spec.audiences must be strings"))
            })
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(ApiError::bad_request("spec.audiences must be a list")),
    };
    let audiences = if audiences.is_empty() {
        issuer.audiences().to_vec()
    } else {
        audiences
    };
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }

    let bound = match spec.get("boundObjectRef").filter(|r| !r.is_null()) {
        Some(reference) => bind(rest, namespace, name, reference).await?,
        None => Bound::default(),
    };

    let extend = bound.pod.is_some()
        && expiration == WARN_ONLY_EXPIRATION_SECONDS
        && audiences.iter().all(|a| issuer.audiences().contains(a));
    let issued_at = now.as_second();
    let lifetime = if extend {
        EXTENDED_EXPIRATION_SECONDS
    } else {
        expiration
    };
    let claims = Claims {
        aud: audiences.clone(),
        exp: issued_at + lifetime,
        iat: issued_at,
        iss: issuer.issuer().to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaims {
            namespace: namespace.to_string(),
            node: bound.node,
            pod: bound.pod,
            secret: bound.secret,
            serviceaccount: ObjectClaim {
                name: name.to_string(),
                uid: account_uid.clone(),
            },
            warnafter: extend.then_some(issued_at + expiration),
        },
        nbf: issued_at,
        sub: username(namespace, name),
    };
    let token = issuer.sign(&claims);

    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    if given_uid.is_empty() {
        meta.insert("uid".into(), json!(account_uid));
    }
    meta.insert("creationTimestamp".into(), json!(object::format_time(now)));
    let expires = now
        .checked_add(jiff::SignedDuration::from_secs(expiration))
        .map_err(|e| ApiError::internal(format!("token expiry out of range: {e}")))?;
    let mut spec = spec;
    spec.insert("audiences".into(), json!(audiences));
    spec.insert("expirationSeconds".into(), json!(expiration));
    request["apiVersion"] = json!(API_VERSION);
    request["kind"] = json!(KIND);
    request["metadata"] = Value::Object(meta);
    request["spec"] = Value::Object(spec);
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": object::format_time(expires),
    });
    Ok(request)
}

/// `apiVersion` and `kind`, when given, must be TokenRequest's.
fn check_type(request: &Value) -> ApiResult<()> {
    match request["apiVersion"].as_str() {
        None | Some("") | Some(API_VERSION) => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version ({API_VERSION})"
            )));
        }
    }
    match request["kind"].as_str() {
        None | Some("") | Some(KIND) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "the kind in the data ({other}) does not match the expected kind ({KIND})"
        ))),
    }
}

/// Looks up the object `reference` names for account `namespace/account`.
async fn bind(rest: &Rest, namespace: &str, account: &str, reference: &Value) -> ApiResult<Bound> {
    let kind = reference["kind"].as_str().unwrap_or_default();
    let api_version = reference["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ref_name = reference["name"].as_str().unwrap_or_default();
    let ref_uid = reference["uid"].as_str().unwrap_or_default();
    let get = |plural: &str, ns: Option<&str>, name: &str| {
        let rt = core(plural);
        let name = name.to_string();
        let ns = ns.map(String::from);
        async move {
            rest.get(ObjectRef {
                rt,
                namespace: ns.as_deref(),
                name: &name,
            })
            .await
            .map(|found| found.object.clone())
        }
    };
    let mut bound = Bound::default();
    let found = match (group, kind) {
        ("", "Pod") => {
            let pod = get("pods", Some(namespace), ref_name).await?;
            if pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or_default()
                != account
            {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
                )));
            }
            if let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                let uid = match get("nodes", None, node_name).await {
                    Ok(node) => object::uid(&node).to_string(),
                    // The node's name still tells where the pod runs.
                    Err(e) if e.code == StatusCode::NOT_FOUND => String::new(),
                    Err(e) => return Err(ApiError::internal(e.message)),
                };
                bound.node = Some(ObjectClaim {
                    name: node_name.to_string(),
                    uid,
                });
            }
            bound.pod = Some(claim(&pod));
            pod
        }
        ("", "Secret") => {
            let secret = get("secrets", Some(namespace), ref_name).await?;
            bound.secret = Some(claim(&secret));
            secret
        }
        ("", "Node") => {
            let node = get("nodes", None, ref_name).await?;
            bound.node = Some(claim(&node));
            node
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    let uid = object::uid(&found);
    if !ref_uid.is_empty() && ref_uid != uid {
        return Err(conflict(
            kind,
            "",
            kind,
            ref_name,
            &format!(
                "the UID in the bound object reference ({ref_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(bound)
}

fn claim(obj: &Value) -> ObjectClaim {
    ObjectClaim {
        name: object::name(obj).to_string(),
        uid: object::uid(obj).to_string(),
    }
}

/// 422 Invalid on TokenRequest with one field error.
fn invalid(name: &str, field: &str, value: &Value, message: &str) -> ApiError {
    let detail = format!("Invalid value: {value}: {message}");
    ApiError {
        code: StatusCode::UNPROCESSABLE_ENTITY,
        reason: "Invalid",
        message: format!("{KIND}.{GROUP} \"{name}\" is invalid: {field}: {detail}"),
        details: Some(json!({
            "name": name,
            "group": GROUP,
            "kind": KIND,
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        })),
    }
}

/// 409 Conflict on `resource` (as upstream's `GroupResource` prints it).
fn conflict(resource: &str, group: &str, kind: &str, name: &str, why: &str) -> ApiError {
    ApiError {
        code: StatusCode::CONFLICT,
        reason: "Conflict",
        message: format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
        details: Some(json!({"name": name, "group": group, "kind": kind})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_paths() {
        assert_eq!(
            account_of("/api/v1/namespaces/ns/serviceaccounts/default/token"),
            Some(("ns", "default"))
        );
        assert_eq!(
            account_of("/api/v1/namespaces/ns/serviceaccounts/default"),
            None
        );
        assert_eq!(account_of("/api/v1/namespaces/ns/pods/p/token"), None);
        assert_eq!(
            account_of("/api/v1/namespaces//serviceaccounts/x/token"),
            None
        );
    }

    #[test]
    fn invalid_expiration_reads_as_upstream() {
        let err = invalid(
            "",
            "spec.expirationSeconds",
            &json!(599),
            "may not specify a duration less than 10 minutes",
        );
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.message,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        );
        let err = invalid("sa", "metadata.name", &json!("x"), "must match");
        assert!(err.message.contains("Invalid value: \"x\": must match"));
    }

    #[test]
    fn request_type_is_checked() {
        assert!(check_type(&json!({})).is_ok());
        assert!(check_type(&json!({"apiVersion": API_VERSION, "kind": KIND})).is_ok());
        assert_eq!(
            check_type(&json!({"kind": "Pod"})).unwrap_err().code,
            StatusCode::BAD_REQUEST
        );
    }
}
