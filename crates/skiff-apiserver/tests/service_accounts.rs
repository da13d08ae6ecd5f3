//! Service account tokens over HTTP, in process: TokenRequest, bearer
//! authentication with the issued tokens, issuer discovery, SelfSubjectReview
//! and the ServiceAccount admission plugin.
//!
//! The shared harness (`tests/common`) serves `skiff_apiserver::app` without
//! authentication and with the ServiceAccount plugin off (no controller makes
//! `default` accounts there); this suite composes the server as
//! `skiff_apiserver::ApiServer::start` does: the plugin on, the issuer attached, and
//! authentication in front. Requests as the cluster admin carry the peer
//! identity the TLS layer would attach for the admin client certificate.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_apiserver::admission::Plugins;
use skiff_apiserver::auth::{Authenticator, PeerIdentity, UserInfo};
use skiff_apiserver::service_account::{
    DEFAULT_ISSUER, ServiceAccountOptions, SigningKey, TokenIssuer,
};
use skiff_store::memory::MemoryStore;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::ServiceExt;

const BOOTSTRAP_TOKEN: &str = "abcdef.0123456789abcdef";

/// Who sends a request.
#[derive(Clone, Copy)]
enum As<'a> {
    Admin,
    Token(&'a str),
    Nobody,
}

struct Server {
    router: axum::Router,
    _shutdown: DropGuard,
}

impl Server {
    async fn new() -> Server {
        let advertise = "127.0.0.1:6443".parse().unwrap();
        let shutdown = CancellationToken::new();
        let store = Arc::new(MemoryStore::new().expect("memory store"));
        let plugins = Plugins {
            service_account: true,
        };
        let rest = skiff_apiserver::start_with(store, advertise, plugins, shutdown.clone())
            .await
            .expect("api starts");
        let key = SigningKey::generate().unwrap();
        let issuer = Arc::new(TokenIssuer::new(ServiceAccountOptions::new(key), advertise));
        let router = issuer.clone().attach(skiff_apiserver::app(rest.clone()));
        let router = Authenticator::new(vec![BOOTSTRAP_TOKEN.to_string()])
            .with_service_accounts(issuer, rest)
            .layer(router);
        Server {
            router,
            _shutdown: shutdown.drop_guard(),
        }
    }

    async fn send(&self, who: As<'_>, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.send_raw(who, method, uri, body).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn send_raw(
        &self,
        who: As<'_>,
        method: &str,
        uri: &str,
        body: Value,
    ) -> (StatusCode, Option<String>, Vec<u8>) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        match who {
            As::Admin => {
                let admin = UserInfo {
                    username: "system:admin".into(),
                    groups: vec!["system:masters".into(), "system:authenticated".into()],
                    ..UserInfo::default()
                };
                request = request.extension(PeerIdentity {
                    verified_certificate: true,
                    user: Some(Arc::new(admin)),
                });
            }
            As::Token(token) => {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            As::Nobody => {}
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, bytes.to_vec())
    }

    async fn admin(&self, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        self.send(As::Admin, method, uri, body).await
    }

    async fn namespace(&self, name: &str) {
        let (status, body) = self
            .admin(
                "POST",
                "/api/v1/namespaces",
                json!({"metadata": {"name": name}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Creates the account and returns its uid.
    async fn account(&self, namespace: &str, account: Value) -> String {
        let (status, body) = self
            .admin(
                "POST",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
                account,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["metadata"]["uid"].as_str().unwrap().to_string()
    }

    async fn pod(&self, namespace: &str, pod: Value) -> (StatusCode, Value) {
        self.admin("POST", &format!("/api/v1/namespaces/{namespace}/pods"), pod)
            .await
    }

    async fn token_request(
        &self,
        namespace: &str,
        account: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.admin(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
            body,
        )
        .await
    }

    /// Issues a token and returns it.
    async fn token(&self, namespace: &str, account: &str, spec: Value) -> String {
        let (status, body) = self
            .token_request(
                namespace,
                account,
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["status"]["token"].as_str().unwrap().to_string()
    }

    async fn whoami(&self, who: As<'_>) -> (StatusCode, Value) {
        self.send(
            who,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await
    }
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

#[tokio::test]
async fn kubectl_create_token_and_use_it() {
    let server = Server::new().await;
    server.namespace("ns").await;
    let uid = server
        .account("ns", json!({"metadata": {"name": "default"}}))
        .await;
    // What `kubectl create token default -n ns` sends.
    let before = jiff::Timestamp::now().as_second();
    let (status, response) = server
        .token_request(
            "ns",
            "default",
            json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                   "metadata": {"creationTimestamp": null},
                   "spec": {"audiences": null, "expirationSeconds": null, "boundObjectRef": null},
                   "status": {"token": "", "expirationTimestamp": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{response}");
    assert_eq!(response["kind"], "TokenRequest");
    assert_eq!(response["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(response["metadata"]["name"], "default");
    assert_eq!(response["metadata"]["namespace"], "ns");
    assert_eq!(response["spec"]["expirationSeconds"], 3600);
    assert_eq!(response["spec"]["audiences"], json!([DEFAULT_ISSUER]));
    let expires: jiff::Timestamp = response["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((expires.as_second() - before - 3600).abs() <= 2);

    let token = response["status"]["token"].as_str().unwrap();
    let claims = payload(token);
    assert_eq!(claims["iss"], DEFAULT_ISSUER);
    assert_eq!(claims["sub"], "system:serviceaccount:ns:default");
    assert_eq!(claims["aud"], json!([DEFAULT_ISSUER]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    assert_eq!(
        claims["kubernetes.io"],
        json!({"namespace": "ns", "serviceaccount": {"name": "default", "uid": uid}})
    );

    let (status, list) = server
        .send(
            As::Token(token),
            "GET",
            "/api/v1/namespaces/ns/configmaps",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "ConfigMapList");

    let (status, review) = server.whoami(As::Token(token)).await;
    assert_eq!(status, StatusCode::CREATED, "{review}");
    assert_eq!(review["kind"], "SelfSubjectReview");
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], "system:serviceaccount:ns:default");
    assert_eq!(user["uid"], uid.as_str());
    assert_eq!(
        user["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:ns",
            "system:authenticated"
        ])
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/credential-id"],
        json!([format!("JTI={}", claims["jti"].as_str().unwrap())])
    );
}

#[tokio::test]
async fn duration_and_audience() {
    let server = Server::new().await;
    server.namespace("ns").await;
    server
        .account("ns", json!({"metadata": {"name": "ci"}}))
        .await;
    // `kubectl create token ci --duration 2h --audience vault`
    let token = server
        .token(
            "ns",
            "ci",
            json!({"expirationSeconds": 7200, "audiences": ["vault"]}),
        )
        .await;
    let claims = payload(&token);
    assert_eq!(claims["aud"], json!(["vault"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7200
    );
    // Not meant for the API server.
    let (status, body) = server.whoami(As::Token(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    // Meant for both.
    let token = server
        .token("ns", "ci", json!({"audiences": ["vault", DEFAULT_ISSUER]}))
        .await;
    assert_eq!(
        server.whoami(As::Token(&token)).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn token_request_errors_read_as_upstream() {
    let server = Server::new().await;
    server.namespace("ns").await;
    let uid = server
        .account("ns", json!({"metadata": {"name": "default"}}))
        .await;

    let (status, body) = server.token_request("ns", "nope", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "serviceaccounts \"nope\" not found");

    let (status, body) = server
        .token_request("ns", "default", json!({"spec": {"expirationSeconds": 599}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "spec.expirationSeconds"
    );
    let (status, _) = server
        .token_request("ns", "default", json!({"spec": {"expirationSeconds": 600}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = server
        .token_request(
            "ns",
            "default",
            json!({"spec": {"expirationSeconds": (1i64 << 32) + 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, body) = server
        .token_request("ns", "default", json!({"metadata": {"name": "other"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("metadata.name: Invalid value: \"other\": must match the service account name if specified"),
        "{body}"
    );

    let (status, body) = server
        .token_request("ns", "default", json!({"metadata": {"uid": "stale"}}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        format!(
            "Operation cannot be fulfilled on TokenRequest.authentication.k8s.io \"default\": the UID in the token request (stale) does not match the UID of the service account ({uid})"
        )
    );
    let (status, _) = server
        .token_request("ns", "default", json!({"metadata": {"uid": uid}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let bound = |kind: &str, name: &str| json!({"spec": {"boundObjectRef": {"kind": kind, "apiVersion": "v1", "name": name}}});
    let (status, body) = server
        .token_request("ns", "default", bound("Pod", "ghost"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "pods \"ghost\" not found");
    let (status, body) = server
        .token_request("ns", "default", bound("Secret", "ghost"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "secrets \"ghost\" not found");
    let (status, body) = server
        .token_request("ns", "default", bound("ConfigMap", "x"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "cannot bind token to object of type /v1, Kind=ConfigMap"
    );

    // A pod of another account.
    server
        .account("ns", json!({"metadata": {"name": "other"}}))
        .await;
    let mut p = pod("p");
    p["spec"]["serviceAccountName"] = json!("other");
    assert_eq!(server.pod("ns", p).await.0, StatusCode::CREATED);
    let (status, body) = server
        .token_request("ns", "default", bound("Pod", "p"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "cannot bind token for serviceaccount \"default\" to pod running with different serviceaccount name."
    );
    let mut stale = bound("Pod", "p");
    stale["spec"]["boundObjectRef"]["uid"] = json!("old");
    let (status, body) = server.token_request("ns", "other", stale).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Operation cannot be fulfilled on Pod \"p\": the UID in the bound object reference (old) does not match the UID in record."),
        "{body}"
    );
}

#[tokio::test]
async fn pod_bound_tokens_die_with_their_pod() {
    let server = Server::new().await;
    server.namespace("ns").await;
    server
        .account("ns", json!({"metadata": {"name": "default"}}))
        .await;
    let (status, node) = server
        .admin("POST", "/api/v1/nodes", json!({"metadata": {"name": "n1"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{node}");
    let mut p = pod("p");
    p["spec"]["nodeName"] = json!("n1");
    let (status, created) = server.pod("ns", p).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // `kubectl create token default --bound-object-kind Pod --bound-object-name p`
    let token = server
        .token(
            "ns",
            "default",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}),
        )
        .await;
    let claims = payload(&token);
    assert_eq!(
        claims["kubernetes.io"]["pod"],
        json!({"name": "p", "uid": created["metadata"]["uid"]})
    );
    assert_eq!(
        claims["kubernetes.io"]["node"],
        json!({"name": "n1", "uid": node["metadata"]["uid"]})
    );
    let (status, review) = server.whoami(As::Token(&token)).await;
    assert_eq!(status, StatusCode::CREATED);
    let extra = &review["status"]["userInfo"]["extra"];
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], json!(["p"]));
    assert_eq!(
        extra["authentication.kubernetes.io/node-name"],
        json!(["n1"])
    );

    // What the node agent asks for the projected volume: extended to a year,
    // with a warning time at the asked lifetime.
    let before = jiff::Timestamp::now().as_second();
    let (status, response) = server
        .token_request(
            "ns",
            "default",
            json!({"spec": {"expirationSeconds": 3607,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p",
                                               "uid": created["metadata"]["uid"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{response}");
    let projected = payload(response["status"]["token"].as_str().unwrap());
    let iat = projected["iat"].as_i64().unwrap();
    assert_eq!(projected["exp"].as_i64().unwrap() - iat, 365 * 24 * 3600);
    assert_eq!(
        projected["kubernetes.io"]["warnafter"].as_i64().unwrap() - iat,
        3607
    );
    let expires: jiff::Timestamp = response["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((expires.as_second() - before - 3607).abs() <= 2);

    let (status, _) = server
        .admin(
            "DELETE",
            "/api/v1/namespaces/ns/pods/p",
            json!({"gracePeriodSeconds": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.whoami(As::Token(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn tokens_die_with_their_account_and_secret() {
    let server = Server::new().await;
    server.namespace("ns").await;
    server
        .account("ns", json!({"metadata": {"name": "builder"}}))
        .await;
    let (status, _) = server
        .admin(
            "POST",
            "/api/v1/namespaces/ns/secrets",
            json!({"metadata": {"name": "s"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let plain = server.token("ns", "builder", json!({})).await;
    let secret_bound = server
        .token(
            "ns",
            "builder",
            json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s"}}),
        )
        .await;
    assert_eq!(
        server.whoami(As::Token(&secret_bound)).await.0,
        StatusCode::CREATED
    );
    server
        .admin("DELETE", "/api/v1/namespaces/ns/secrets/s", Value::Null)
        .await;
    assert_eq!(
        server.whoami(As::Token(&secret_bound)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.whoami(As::Token(&plain)).await.0,
        StatusCode::CREATED
    );

    // An account deleted and made again is another account.
    server
        .admin(
            "DELETE",
            "/api/v1/namespaces/ns/serviceaccounts/builder",
            Value::Null,
        )
        .await;
    assert_eq!(
        server.whoami(As::Token(&plain)).await.0,
        StatusCode::UNAUTHORIZED
    );
    server
        .account("ns", json!({"metadata": {"name": "builder"}}))
        .await;
    assert_eq!(
        server.whoami(As::Token(&plain)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn other_credentials_still_work_and_bad_ones_are_401() {
    let server = Server::new().await;
    let (status, review) = server.whoami(As::Admin).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(review["status"]["userInfo"]["username"], "system:admin");

    let (status, review) = server.whoami(As::Token(BOOTSTRAP_TOKEN)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:bootstrap:abcdef"
    );

    for bad in [
        "garbage",
        "a.b.c",
        // Signed by another key.
        "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCJ9.AAAA",
    ] {
        let (status, body) = server
            .send(As::Token(bad), "GET", "/api/v1/namespaces", Value::Null)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["code"], 401);
    }
    let (status, _) = server
        .send(As::Nobody, "GET", "/api/v1/namespaces", Value::Null)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = server
        .send_raw(As::Nobody, "GET", "/healthz", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn issuer_discovery_is_served_to_authenticated_clients() {
    let server = Server::new().await;
    server.namespace("ns").await;
    server
        .account("ns", json!({"metadata": {"name": "default"}}))
        .await;
    let token = server.token("ns", "default", json!({})).await;

    let (status, content_type, body) = server
        .send_raw(
            As::Token(&token),
            "GET",
            "/.well-known/openid-configuration",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let config: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(config["issuer"], DEFAULT_ISSUER);
    assert_eq!(config["jwks_uri"], "https://127.0.0.1:6443/openid/v1/jwks");

    let (status, content_type, body) = server
        .send_raw(As::Token(&token), "GET", "/openid/v1/jwks", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/jwk-set+json"));
    let keys: Value = serde_json::from_slice(&body).unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(keys["keys"][0]["kid"], header["kid"]);
    assert_eq!(keys["keys"][0]["alg"], "ES256");

    let (status, _, _) = server
        .send_raw(As::Nobody, "GET", "/openid/v1/jwks", Value::Null)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admission_mounts_the_api_access_volume() {
    let server = Server::new().await;
    server.namespace("ns").await;
    server
        .account(
            "ns",
            json!({"metadata": {"name": "default"}, "imagePullSecrets": [{"name": "registry"}]}),
        )
        .await;
    let mut p = pod("p");
    p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    let (status, created) = server.pod("ns", p).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let spec = &created["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry"}]));
    let volume = &spec["volumes"][0];
    let volume_name = volume["name"].as_str().unwrap();
    assert!(volume_name.starts_with("kube-api-access-"), "{volume_name}");
    assert_eq!(volume_name.len(), "kube-api-access-".len() + 5);
    assert_eq!(
        volume["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]})
    );
    let mount = json!({"name": volume_name, "readOnly": true,
                       "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
    assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));

    // Opting out, on the pod or on the account.
    let mut p = pod("quiet");
    p["spec"]["automountServiceAccountToken"] = json!(false);
    let (status, created) = server.pod("ns", p).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(created["spec"].get("volumes").is_none(), "{created}");
    server
        .account(
            "ns",
            json!({"metadata": {"name": "silent"}, "automountServiceAccountToken": false}),
        )
        .await;
    let mut p = pod("silent");
    p["spec"]["serviceAccountName"] = json!("silent");
    let (status, created) = server.pod("ns", p).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(created["spec"].get("volumes").is_none(), "{created}");
}

#[tokio::test]
async fn admission_refuses_pods_of_missing_accounts() {
    let server = Server::new().await;
    server.namespace("ns").await;
    let mut p = pod("p");
    p["spec"]["serviceAccountName"] = json!("builder");
    let (status, body) = server.pod("ns", p).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "pods \"p\" is forbidden: error looking up service account ns/builder: serviceaccount \"builder\" not found"
    );
    // The default account is waited for a while: here it never comes.
    let (status, body) = server.pod("ns", pod("q")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "pods \"q\" is forbidden: error looking up service account ns/default: serviceaccount \"default\" not found"
    );
}

#[tokio::test]
async fn admission_waits_for_the_default_account() {
    let server = Arc::new(Server::new().await);
    server.namespace("ns").await;
    let maker = tokio::spawn({
        let server = server.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server
                .account("ns", json!({"metadata": {"name": "default"}}))
                .await;
        }
    });
    let (status, body) = server.pod("ns", pod("p")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["serviceAccountName"], "default");
    maker.await.unwrap();
}

#[tokio::test]
async fn mirror_pods_are_left_alone() {
    let server = Server::new().await;
    server.namespace("ns").await;
    let mut p = pod("static-n1");
    p["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "hash"});
    let (status, created) = server.pod("ns", p.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["spec"].get("volumes").is_none());
    p["metadata"]["name"] = json!("static-n2");
    p["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "s"}}]);
    let (status, body) = server.pod("ns", p).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "pods \"static-n2\" is forbidden: a mirror pod may not reference secrets"
    );
}
