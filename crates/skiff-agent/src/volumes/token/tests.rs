//! The token cache, its refresh rule and the projected token files, against
//! the shared fake API server.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccountTokenProjection};
use serde_json::{Value, json};
use skiff_testing::FakeApi;

use super::*;
use crate::downward::NodeAllocatable;
use crate::objects::StaticObjects;
use crate::volumes::{FakeMounter, VolumeError, VolumeManager};

const UID: &str = "5d1c7a9e-pod";
const TOKEN_PATH: &str = "/api/v1/namespaces/ns/serviceaccounts/builder/token";

/// 2030-01-01T00:00:00Z plus `seconds`.
fn at(seconds: i64) -> Timestamp {
    let start: Timestamp = "2030-01-01T00:00:00Z".parse().expect("timestamp");
    start
        .checked_add(SignedDuration::from_secs(seconds))
        .expect("in range")
}

/// A clock the test moves, and the manager reading it.
fn manager(api: &FakeApi) -> (Arc<Mutex<Timestamp>>, TokenManager) {
    let now = Arc::new(Mutex::new(at(0)));
    let clock = Arc::clone(&now);
    let manager = TokenManager::with_clock(api.client(), Arc::new(move || *lock(&clock)));
    (now, manager)
}

fn set(clock: &Mutex<Timestamp>, seconds: i64) {
    *lock(clock) = at(seconds);
}

/// The API server's answer: `token`, issued at `issued` for `lifetime`.
fn reply(token: &str, issued: i64, lifetime: i64) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {},
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": lifetime},
        "status": {"token": token, "expirationTimestamp": at(issued + lifetime).to_string()},
    })
}

fn pod_with(spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "main", "image": "busybox"}]);
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": UID},
        "spec": spec,
    }))
    .expect("pod")
}

fn projection(value: Value) -> ServiceAccountTokenProjection {
    serde_json::from_value(value).expect("projection")
}

fn key(audience: Option<&str>, uid: &str) -> TokenKey {
    TokenKey {
        service_account: "builder".into(),
        namespace: "ns".into(),
        audiences: audience.into_iter().map(str::to_string).collect(),
        expiration_seconds: 3600,
        pod_name: "web".into(),
        pod_uid: uid.into(),
    }
}

fn posts(api: &FakeApi) -> Vec<String> {
    api.writes()
        .into_iter()
        .filter(|w| w.method == "POST")
        .map(|w| w.path)
        .collect()
}

#[test]
fn the_key_follows_the_pod_and_the_projection() {
    let pod = pod_with(json!({"serviceAccountName": "builder"}));
    let source = projection(json!({"path": "t", "audience": "vault", "expirationSeconds": 7200}));
    assert_eq!(
        TokenKey::for_projection(&pod, &source),
        TokenKey {
            audiences: vec!["vault".into()],
            expiration_seconds: 7200,
            ..key(None, UID)
        }
    );

    // No audience, lifetime or ServiceAccount: the API server's audience,
    // an hour, and `default`.
    let bare = TokenKey::for_projection(
        &pod_with(json!({})),
        &projection(json!({"path": "t", "audience": ""})),
    );
    assert_eq!(bare.service_account, "default");
    assert!(bare.audiences.is_empty());
    assert_eq!(bare.expiration_seconds, DEFAULT_EXPIRATION_SECONDS);
    assert_eq!(
        bare.to_string(),
        format!("\"default\"/\"ns\"/[]/3600/Pod \"web\" ({UID})")
    );
}

#[test]
fn the_request_is_bound_to_the_pod() {
    let body = serde_json::to_value(key(Some("vault"), UID).request()).expect("json");
    assert_eq!(
        body["spec"],
        json!({
            "audiences": ["vault"],
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": UID},
        })
    );
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["kind"], "TokenRequest");
    // No audience: none sent, so the API server uses its own.
    let body = serde_json::to_value(key(None, UID).request()).expect("json");
    assert!(body["spec"].get("audiences").is_none(), "{body}");
}

#[test]
fn refresh_is_due_with_a_fifth_of_the_lifetime_left() {
    // Issued at 0 for an hour: due once less than 720 s are left.
    assert!(!refresh_due(at(0), at(3600), 3600));
    assert!(!refresh_due(at(2880), at(3600), 3600));
    assert!(refresh_due(at(2881), at(3600), 3600));
    assert!(refresh_due(at(4000), at(3600), 3600));
}

#[test]
fn refresh_is_due_after_a_day_whatever_the_lifetime() {
    let year = 365 * 24 * 3600;
    assert!(!refresh_due(at(86_400), at(year), year));
    assert!(refresh_due(at(86_401), at(year), year));
}

#[test]
fn refresh_is_due_when_the_clock_went_back() {
    assert!(refresh_due(at(-1), at(3600), 3600));
}

#[tokio::test]
async fn a_token_is_reused_until_its_refresh_is_due() {
    let api = FakeApi::default();
    api.store(TOKEN_PATH, reply("first", 0, 3600));
    let (clock, tokens) = manager(&api);
    let key = key(None, UID);

    assert_eq!(tokens.token(&key).await.expect("token"), "first");
    let write = &api.writes()[0];
    assert_eq!(
        (write.method.as_str(), write.path.as_str()),
        ("POST", TOKEN_PATH)
    );
    assert_eq!(
        write.body["spec"],
        serde_json::to_value(key.request()).expect("json")["spec"]
    );

    set(&clock, 2880);
    api.store(TOKEN_PATH, reply("second", 2880, 3600));
    assert_eq!(tokens.token(&key).await.expect("cached"), "first");
    assert_eq!(posts(&api).len(), 1);

    set(&clock, 2881);
    assert_eq!(tokens.token(&key).await.expect("refreshed"), "second");
    assert_eq!(posts(&api).len(), 2);
    // The new token lives from the time the server gave it.
    set(&clock, 2881 + 2000);
    assert_eq!(tokens.token(&key).await.expect("cached"), "second");
    assert_eq!(posts(&api).len(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_a_valid_token_but_not_an_expired_one() {
    let api = FakeApi::default();
    api.store(TOKEN_PATH, reply("first", 0, 3600));
    let (clock, tokens) = manager(&api);
    let key = key(None, UID);
    tokens.token(&key).await.expect("token");

    // The server now answers without a token.
    api.store(TOKEN_PATH, json!({"status": {}}));
    set(&clock, 3000);
    assert_eq!(tokens.token(&key).await.expect("kept"), "first");
    assert_eq!(posts(&api).len(), 2, "the refresh was tried");
    // Expired now, and it cannot be replaced.
    set(&clock, 3601);
    let err = tokens.token(&key).await.expect_err("expired");
    assert_eq!(
        err.to_string(),
        format!("token {key} expired and refresh failed: the TokenRequest answer has no token")
    );
    // Once the server answers again, the pod gets a token again.
    api.store(TOKEN_PATH, reply("second", 3601, 3600));
    assert_eq!(tokens.token(&key).await.expect("token"), "second");
}

#[tokio::test]
async fn a_first_failure_is_upstreams_failed_to_fetch() {
    let api = FakeApi::default();
    let (_clock, tokens) = manager(&api);
    let err = tokens.token(&key(None, UID)).await.expect_err("no answer");
    assert_eq!(err.to_string(), "failed to fetch token: NotFound");
}

#[tokio::test]
async fn tokens_are_cached_per_key_and_forgotten_with_their_pod() {
    let api = FakeApi::default();
    api.store(TOKEN_PATH, reply("t", 0, 3600));
    let (clock, tokens) = manager(&api);
    for key in [
        key(None, UID),
        key(Some("vault"), UID),
        key(None, "other-pod"),
        key(None, UID),
    ] {
        tokens.token(&key).await.expect("token");
    }
    assert_eq!(posts(&api).len(), 3, "one request per distinct key");

    tokens.forget_pod(UID);
    assert_eq!(lock(&tokens.cache).len(), 1);
    tokens.token(&key(None, UID)).await.expect("token");
    assert_eq!(posts(&api).len(), 4);

    // Expired tokens leave the cache with the next request.
    set(&clock, 3601);
    api.store(TOKEN_PATH, reply("t", 3601, 3600));
    tokens.token(&key(Some("fresh"), UID)).await.expect("token");
    let cached: Vec<_> = lock(&tokens.cache).keys().cloned().collect();
    assert_eq!(cached, [key(Some("fresh"), UID)]);
}

// The volume manager's side: token files among the projected volume's.

struct Volumes {
    _dir: tempfile::TempDir,
    root: PathBuf,
    manager: VolumeManager,
}

fn volumes(api: &FakeApi) -> (Arc<Mutex<Timestamp>>, Volumes) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("pods");
    let (clock, tokens) = manager(api);
    let manager =
        VolumeManager::new(root.clone(), Arc::new(FakeMounter::new())).with_tokens(tokens);
    let volumes = Volumes {
        _dir: dir,
        root,
        manager,
    };
    (clock, volumes)
}

/// A pod with the volume the ServiceAccount admission adds.
fn api_access_pod(security: Value) -> Pod {
    pod_with(json!({
        "serviceAccountName": "builder",
        "securityContext": security,
        "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}}],
    }))
}

fn root_ca() -> StaticObjects {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kube-root-ca.crt", "namespace": "ns"},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"},
    }))
    .expect("configmap");
    StaticObjects::default().with_config_map(cm)
}

fn api_access_dir(v: &Volumes) -> PathBuf {
    v.root
        .join(UID)
        .join("volumes/kubernetes.io~projected/kube-api-access-x7k2p")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[tokio::test]
async fn the_api_access_volume_holds_token_ca_and_namespace() {
    let api = FakeApi::default();
    api.store(TOKEN_PATH, reply("jwt-1", 0, 3607));
    let (_clock, v) = volumes(&api);
    let pod = api_access_pod(json!({}));
    v.manager
        .prepare(&pod, &root_ca(), &NodeAllocatable::default())
        .await
        .expect("prepare");

    let dir = api_access_dir(&v);
    assert_eq!(
        fs::read_to_string(dir.join("token")).expect("token"),
        "jwt-1"
    );
    assert_eq!(
        fs::read_to_string(dir.join("ca.crt")).expect("ca"),
        "-----BEGIN CERTIFICATE-----\n"
    );
    assert_eq!(fs::read_to_string(dir.join("namespace")).expect("ns"), "ns");
    assert_eq!(mode(&dir.join("token")), 0o644);
    // Upstream's atomic layout: the token is a link into the current version.
    assert_eq!(
        fs::read_link(dir.join("token")).expect("link"),
        Path::new("..data/token")
    );
    let body = &api.writes()[0].body;
    assert_eq!(body["spec"]["expirationSeconds"], 3607);
    assert_eq!(body["spec"]["boundObjectRef"]["uid"], UID);
}

#[tokio::test]
async fn a_refreshed_token_replaces_the_file_in_a_new_version() {
    let api = FakeApi::default();
    api.store(TOKEN_PATH, reply("jwt-1", 0, 3607));
    let (clock, v) = volumes(&api);
    let pod = api_access_pod(json!({}));
    let node = NodeAllocatable::default();
    v.manager
        .prepare(&pod, &root_ca(), &node)
        .await
        .expect("prepare");
    let dir = api_access_dir(&v);
    let first_version = fs::read_link(dir.join("..data")).expect("data link");

    // A resync before the refresh is due leaves the files alone.
    api.store(TOKEN_PATH, reply("jwt-2", 2900, 3607));
    set(&clock, 2800);
    v.manager
        .prepare(&pod, &root_ca(), &node)
        .await
        .expect("resync");
    assert_eq!(
        fs::read_link(dir.join("..data")).expect("data link"),
        first_version
    );

    set(&clock, 2900);
    v.manager
        .prepare(&pod, &root_ca(), &node)
        .await
        .expect("refresh");
    assert_eq!(
        fs::read_to_string(dir.join("token")).expect("token"),
        "jwt-2"
    );
    assert_ne!(
        fs::read_link(dir.join("..data")).expect("data link"),
        first_version
    );
    assert_eq!(posts(&api).len(), 2);

    // The pod's tokens go with it.
    v.manager.cleanup(UID).await.expect("cleanup");
    v.manager
        .prepare(&pod, &root_ca(), &node)
        .await
        .expect("again");
    assert_eq!(posts(&api).len(), 3);
}

#[tokio::test]
async fn the_token_is_private_to_the_pods_group() {
    let api = FakeApi::default();
    api.store(TOKEN_PATH, reply("jwt", 0, 3607));
    let (_clock, v) = volumes(&api);
    let gid = rustix::process::getegid().as_raw();
    let pod = api_access_pod(json!({"fsGroup": gid}));
    v.manager
        .prepare(&pod, &root_ca(), &NodeAllocatable::default())
        .await
        .expect("prepare");
    let dir = api_access_dir(&v);
    // 0600 from the projection, group read from the fsGroup walk.
    assert_eq!(mode(&dir.join("token")), 0o640);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
}

#[tokio::test]
async fn the_token_belongs_to_the_user_all_containers_run_as() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: giving files away needs root");
        return;
    }
    let api = FakeApi::default();
    api.store(TOKEN_PATH, reply("jwt", 0, 3607));
    let (_clock, v) = volumes(&api);
    let pod = api_access_pod(json!({"runAsUser": 4321}));
    v.manager
        .prepare(&pod, &root_ca(), &NodeAllocatable::default())
        .await
        .expect("prepare");
    let token = api_access_dir(&v).join("token");
    assert_eq!(mode(&token), 0o600);
    assert_eq!(fs::metadata(&token).expect("stat").uid(), 4321);
    let ca = api_access_dir(&v).join("ca.crt");
    assert_eq!(fs::metadata(&ca).expect("stat").uid(), 0);
}

#[test]
fn the_files_user_is_the_one_every_container_runs_as() {
    let with = |pod_user: Value, users: [Value; 2]| {
        let mut pod = pod_with(json!({"securityContext": {"runAsUser": pod_user}}));
        let spec = pod.spec.as_mut().expect("spec");
        let container = spec.containers[0].clone();
        spec.containers = users
            .iter()
            .map(|user| {
                let mut c = container.clone();
                c.security_context = serde_json::from_value(json!({"runAsUser": user})).ok();
                c
            })
            .collect();
        crate::volumes::fs_user(&pod)
    };
    assert_eq!(with(json!(1000), [json!(null), json!(null)]), Some(1000));
    assert_eq!(with(json!(1000), [json!(1000), json!(null)]), Some(1000));
    assert_eq!(with(json!(null), [json!(7), json!(7)]), Some(7));
    assert_eq!(with(json!(1000), [json!(7), json!(null)]), None);
    assert_eq!(with(json!(null), [json!(7), json!(null)]), None);
}

#[tokio::test]
async fn no_token_keeps_the_volume_from_being_set_up() {
    let api = FakeApi::default();
    let (_clock, v) = volumes(&api);
    let pod = api_access_pod(json!({}));
    let err = v
        .manager
        .prepare(&pod, &root_ca(), &NodeAllocatable::default())
        .await
        .expect_err("no token");
    assert!(matches!(err, VolumeError::SetUp { .. }), "{err:?}");
    assert_eq!(
        err.event_messages(),
        [
            "MountVolume.SetUp failed for volume \"kube-api-access-x7k2p\" : failed to fetch token: NotFound"
        ]
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let standalone = VolumeManager::new(dir.path().to_path_buf(), Arc::new(FakeMounter::new()));
    let err = standalone
        .prepare(&pod, &root_ca(), &NodeAllocatable::default())
        .await
        .expect_err("standalone");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"kube-api-access-x7k2p\" : cannot use TokenManager when kubelet is in standalone mode"
    );
}
