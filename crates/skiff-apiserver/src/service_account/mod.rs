//! Service account tokens, the API server's side: issuing them
//! (`serviceaccounts/token`, [`token_request`]), accepting them as bearer
//! credentials ([`TokenIssuer::authenticate`]), and publishing the issuer's
//! OpenID discovery document and keys (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`).
//!
//! Tokens are JWTs signed ES256 by one key ([`key::SigningKey`]) that the
//! binary keeps in its data directory. A token names its account by name and
//! uid and may be bound to a pod, secret or node; it is accepted only while
//! the account (and the bound object) still exist with the same uids, so
//! deleting a pod revokes the tokens made for it. Those objects are read
//! from the store, like admission's lookups: a token made for a pod that was
//! just created must work at once.
//!
//! The discovery endpoints are behind authentication, as upstream serves
//! them by default (its RBAC then lets service accounts read them).

pub mod jwt;
pub mod key;
pub mod token_request;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::json;
use skiff_api::registry::{self, ResourceType};

use crate::auth::UserInfo;
use crate::rest::{ObjectRef, Rest};

pub use jwt::TokenError;
pub use key::{KeyError, SigningKey};

/// The issuer k3s (and kubeadm) name by default.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Path of the OpenID provider configuration.
pub const OPENID_CONFIG_PATH: &str = "/.well-known/openid-configuration";
/// Path of the public keys.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// How long clients may cache the discovery documents.
const DISCOVERY_CACHE_CONTROL: &str = "public, max-age=3600";
/// Extra keys of a service account's user info, as upstream's.
const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// What the API server needs to issue and accept service account tokens.
#[derive(Debug)]
pub struct ServiceAccountOptions {
    /// The signing key.
    pub key: SigningKey,
    /// The `iss` of issued tokens (`--service-account-issuer`).
    pub issuer: String,
    /// The API server's audiences (`--api-audiences`): given to tokens that
    /// ask for none, and required of tokens presented to the API.
    pub audiences: Vec<String>,
}

impl ServiceAccountOptions {
    /// `key` with the default issuer, which is also the one audience.
    pub fn new(key: SigningKey) -> Self {
        ServiceAccountOptions {
            key,
            issuer: DEFAULT_ISSUER.to_string(),
            audiences: vec![DEFAULT_ISSUER.to_string()],
        }
    }
}

/// Issues and verifies service account tokens.
#[derive(Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    audiences: Vec<String>,
    openid_config: Bytes,
    jwks: Bytes,
}

impl TokenIssuer {
    /// An issuer whose keys are published at `https://{advertise}/openid/v1/jwks`.
    pub fn new(options: ServiceAccountOptions, advertise: SocketAddr) -> Self {
        let jwks = json!({"keys": [options.key.public_jwk()]});
        let openid_config = json!({
            "issuer": options.issuer,
            "jwks_uri": format!("https://{advertise}{JWKS_PATH}"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [key::ALGORITHM],
        });
        TokenIssuer {
            key: options.key,
            issuer: options.issuer,
            audiences: options.audiences,
            openid_config: Bytes::from(openid_config.to_string()),
            jwks: Bytes::from(jwks.to_string()),
        }
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The API server's audiences.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &jwt::Claims) -> String {
        jwt::sign(&self.key, claims)
    }

    /// Serves the discovery endpoints from `router` and makes this issuer
    /// available to the `token` subresource.
    pub fn attach(self: Arc<Self>, router: Router) -> Router {
        let config = self.openid_config.clone();
        let keys = self.jwks.clone();
        router
            .route(
                OPENID_CONFIG_PATH,
                get(move || async move { discovery(config, "application/json") }),
            )
            .route(
                JWKS_PATH,
                get(move || async move { discovery(keys, "application/jwk-set+json") }),
            )
            .layer(axum::Extension(self))
    }

    /// The user a bearer token names, if it is one of ours. `Ok(None)`: the
    /// token is not a JWT from this issuer, so another authenticator may
    /// know it. `now` is seconds since the epoch.
    pub async fn authenticate(
        &self,
        rest: &Rest,
        token: &str,
        now: i64,
    ) -> Result<Option<UserInfo>, TokenError> {
        if jwt::unverified_issuer(token).as_deref() != Some(self.issuer.as_str()) {
            return Ok(None);
        }
        let claims = jwt::verify(&self.key, &self.issuer, &self.audiences, token, now)?;
        check_bound_objects(rest, &claims, now).await?;
        Ok(Some(user_info(&claims)))
    }
}

fn discovery(body: Bytes, content_type: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(DISCOVERY_CACHE_CONTROL),
            ),
        ],
        body,
    )
        .into_response()
}

/// The core type `plural`.
fn core(plural: &str) -> &'static ResourceType {
    registry::by_plural("", "v1", plural).expect("core types are served")
}

/// Fails unless the account and the objects the token is bound to still
/// exist with the uids in the claims and were not deleted more than the
/// leeway ago.
async fn check_bound_objects(
    rest: &Rest,
    claims: &jwt::Claims,
    now: i64,
) -> Result<(), TokenError> {
    let k = &claims.kubernetes;
    let namespace = k.namespace.as_str();
    let account = &k.serviceaccount;
    let Some(found) =
        current_uid(rest, "serviceaccounts", Some(namespace), &account.name, now).await
    else {
        return Err(TokenError::Invalidated(format!(
            "serviceaccounts \"{}\" not found",
            account.name
        )));
    };
    if found != account.uid {
        return Err(TokenError::Invalidated(format!(
            "service account UID ({found}) does not match claim ({})",
            account.uid
        )));
    }
    let bound = [
        ("secrets", "secret", k.secret.as_ref(), Some(namespace)),
        ("pods", "pod", k.pod.as_ref(), Some(namespace)),
        // A pod-bound token names its pod's node for information only.
        (
            "nodes",
            "node",
            k.node.as_ref().filter(|_| k.pod.is_none()),
            None,
        ),
    ];
    for (plural, what, claim, ns) in bound {
        let Some(claim) = claim else {
            continue;
        };
        match current_uid(rest, plural, ns, &claim.name, now).await {
            None => {
                return Err(TokenError::Invalidated(
                    "service account token has been invalidated".into(),
                ));
            }
            Some(uid) if uid != claim.uid => {
                return Err(TokenError::Invalidated(format!(
                    "{what} UID ({uid}) does not match service account {what} ref claim ({})",
                    claim.uid
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The uid of the object, if it exists and was not deleted more than the
/// leeway before `now`.
async fn current_uid(
    rest: &Rest,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
    now: i64,
) -> Option<String> {
    let at = ObjectRef {
        rt: core(plural),
        namespace,
        name,
    };
    let found = rest.get(at).await.ok()?;
    let meta = &found.object["metadata"];
    let deleted_long_ago = meta["deletionTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| t.as_second() < now - jwt::LEEWAY_SECONDS);
    if deleted_long_ago {
        return None;
    }
    Some(meta["uid"].as_str().unwrap_or_default().to_string())
}

/// The user a verified token names.
fn user_info(claims: &jwt::Claims) -> UserInfo {
    let k = &claims.kubernetes;
    let mut extra = BTreeMap::new();
    if let Some(pod) = &k.pod {
        extra.insert(POD_NAME_KEY.to_string(), vec![pod.name.clone()]);
        extra.insert(POD_UID_KEY.to_string(), vec![pod.uid.clone()]);
    }
    if let Some(node) = &k.node {
        extra.insert(NODE_NAME_KEY.to_string(), vec![node.name.clone()]);
        if !node.uid.is_empty() {
            extra.insert(NODE_UID_KEY.to_string(), vec![node.uid.clone()]);
        }
    }
    if !claims.jti.is_empty() {
        extra.insert(
            CREDENTIAL_ID_KEY.to_string(),
            vec![format!("JTI={}", claims.jti)],
        );
    }
    UserInfo {
        username: username(&k.namespace, &k.serviceaccount.name),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{}", k.namespace),
            crate::auth::AUTHENTICATED_GROUP.to_string(),
        ],
        extra,
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_document_names_the_issuer_and_keys() {
        let key = SigningKey::generate().unwrap();
        let kid = key.key_id().to_string();
        let issuer = TokenIssuer::new(
            ServiceAccountOptions::new(key),
            "10.0.0.1:6443".parse().unwrap(),
        );
        let config: serde_json::Value = serde_json::from_slice(&issuer.openid_config).unwrap();
        assert_eq!(
            config,
            json!({
                "issuer": DEFAULT_ISSUER,
                "jwks_uri": "https://10.0.0.1:6443/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })
        );
        let keys: serde_json::Value = serde_json::from_slice(&issuer.jwks).unwrap();
        assert_eq!(keys["keys"][0]["kid"], kid);
        assert_eq!(keys["keys"][0]["kty"], "EC");
        assert!(keys["keys"][0].get("d").is_none());
        assert_eq!(issuer.audiences(), [DEFAULT_ISSUER]);
    }

    #[test]
    fn user_info_of_a_pod_bound_token() {
        let claims = jwt::Claims {
            aud: vec![],
            exp: 0,
            iat: 0,
            iss: DEFAULT_ISSUER.into(),
            jti: "abc".into(),
            kubernetes: jwt::KubernetesClaims {
                namespace: "ns".into(),
                serviceaccount: jwt::ObjectClaim {
                    name: "sa".into(),
                    uid: "sa-uid".into(),
                },
                pod: Some(jwt::ObjectClaim {
                    name: "p".into(),
                    uid: "p-uid".into(),
                }),
                node: Some(jwt::ObjectClaim {
                    name: "n".into(),
                    uid: String::new(),
                }),
                ..Default::default()
            },
            nbf: 0,
            sub: username("ns", "sa"),
        };
        let user = user_info(&claims);
        assert_eq!(user.username, "system:serviceaccount:ns:sa");
        assert_eq!(user.uid, "sa-uid");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
        assert_eq!(user.extra[POD_NAME_KEY], ["p"]);
        assert_eq!(user.extra[POD_UID_KEY], ["p-uid"]);
        assert_eq!(user.extra[NODE_NAME_KEY], ["n"]);
        assert!(!user.extra.contains_key(NODE_UID_KEY));
        assert_eq!(user.extra[CREDENTIAL_ID_KEY], ["JTI=abc"]);
    }
}
