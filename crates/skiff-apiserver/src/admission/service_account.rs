//! The ServiceAccount admission plugin, on pod create (upstream's
//! `plugin/pkg/admission/serviceaccount`):
//!
//! 1. a pod naming no account gets `default`;
//! 2. the account must exist, or the pod is refused with 403 (the `default`
//!    account is looked for for up to about two seconds, since the
//!    ServiceAccount controller makes it just after its namespace);
//! 3. a pod without `imagePullSecrets` gets its account's;
//! 4. unless `automountServiceAccountToken` is false (the pod's setting wins
//!    over the account's), every container and init container that mounts
//!    nothing at `/var/run/secrets/kubernetes.io/serviceaccount` gets the
//!    `kube-api-access-XXXXX` projected volume there: a bound token
//!    (`token`), the cluster CA (`ca.crt` from the `kube-root-ca.crt`
//!    ConfigMap) and the namespace (`namespace`);
//! 5. an account annotated `kubernetes.io/enforce-mountable-secrets: "true"`
//!    limits the secrets the pod may use to those it lists.
//!
//! Mirror pods (`kubernetes.io/config.mirror`) are left as they are, but may
//! not use an account, secrets or token projections. Ephemeral containers
//! are added later through their own subresource, which this plugin, like
//! upstream's, does not touch.
//!
//! Deviation: `skiff_api::defaults::admission_defaults` names the `default`
//! account on every pod before admission runs, mirror pods included, so a
//! mirror pod naming `default` is taken as naming none.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value, json};
use skiff_api::registry::ResourceType;

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::rest::{ObjectRef, Rest};

/// The account a pod naming none runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token, CA and namespace are mounted.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The annotation marking a mirror pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The annotation that limits a pod to the secrets its account lists.
pub const ENFORCE_MOUNTABLE_SECRETS: &str = "kubernetes.io/enforce-mountable-secrets";
/// The token lifetime the projected volume asks for: an hour and seven
/// seconds, which marks it for upstream's extended-expiry transition.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// How often the `default` account is looked for, and another account.
const DEFAULT_ACCOUNT_ATTEMPTS: usize = 10;
/// Characters of generated name suffixes (as `rest`'s generateName).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Runs the plugin on a new pod in `rest`.
pub async fn admit(
    rest: &Rest,
    rt: &'static ResourceType,
    name: &str,
    pod: &mut Value,
) -> ApiResult<()> {
    if !rest.admission.service_account || (rt.group, rt.kind) != ("", "Pod") {
        return Ok(());
    }
    if is_mirror_pod(pod) {
        return match mirror_pod_refusal(pod) {
            Some(why) => Err(ApiError::forbidden(rt, name, why)),
            None => Ok(()),
        };
    }
    let namespace = object::namespace(pod).to_string();
    let spec = object_entry(pod, "spec");
    let account_name = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => DEFAULT_SERVICE_ACCOUNT.to_string(),
    };
    spec.insert("serviceAccountName".into(), json!(account_name));
    spec.insert("serviceAccount".into(), json!(account_name));
    let account = look_up(rest, &namespace, &account_name)
        .await
        .map_err(|e| {
            ApiError::forbidden(
                rt,
                name,
                &format!("error looking up service account {namespace}/{account_name}: {e}"),
            )
        })?;
    mutate(pod, &account, &random_suffix());
    if enforces_mountable_secrets(&account)
        && let Err(why) = limit_secret_references(&account, pod)
    {
        return Err(ApiError::forbidden(rt, name, &why));
    }
    Ok(())
}

/// The account `namespace/name`, read from the store. The `default` account
/// gets several tries a random 100–200 ms apart.
async fn look_up(rest: &Rest, namespace: &str, name: &str) -> Result<Value, String> {
    let rt = super::resource("", "serviceaccounts");
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
        DEFAULT_ACCOUNT_ATTEMPTS
    } else {
        1
    };
    let interval = Duration::from_millis(100 + u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100);
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(interval).await;
        }
        let at = ObjectRef {
            rt,
            namespace: Some(namespace),
            name,
        };
        match rest.get(at).await {
            Ok(found) => return Ok(found.object.clone()),
            Err(e) if e.code.as_u16() == 404 => {}
            Err(e) => return Err(e.message),
        }
    }
    Err(format!("serviceaccount \"{name}\" not found"))
}

/// Whether `pod` mirrors a static pod.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get(MIRROR_ANNOTATION)
        .is_some()
}

/// Why a mirror pod may not be created, if it may not.
pub fn mirror_pod_refusal(pod: &Value) -> Option<&'static str> {
    let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("");
    if !account.is_empty() && account != DEFAULT_SERVICE_ACCOUNT {
        return Some("a mirror pod may not reference service accounts");
    }
    if !secret_names(pod).is_empty() {
        return Some("a mirror pod may not reference secrets");
    }
    let projects_token = array(&pod["spec"], "volumes").iter().any(|v| {
        array(&v["projected"], "sources")
            .iter()
            .any(|s| s.get("serviceAccountToken").is_some_and(|t| !t.is_null()))
    });
    projects_token.then_some("a mirror pod may not use ServiceAccountToken volume projections")
}

/// Applies `account` to a pod that is not a mirror pod: its pull secrets
/// and, unless automounting is off, the API access volume named
/// `kube-api-access-{suffix}` (or the pod's existing one).
pub fn mutate(pod: &mut Value, account: &Value, suffix: &str) {
    if should_automount(account, pod) {
        mount_token(pod, suffix);
    }
    let spec = object_entry(pod, "spec");
    let has_pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if !has_pull_secrets {
        let copied: Vec<Value> = array(account, "imagePullSecrets")
            .iter()
            .map(|s| json!({"name": s["name"].as_str().unwrap_or_default()}))
            .collect();
        if !copied.is_empty() {
            spec.insert("imagePullSecrets".into(), Value::Array(copied));
        }
    }
}

/// The pod's `automountServiceAccountToken` wins, then the account's; both
/// unset mounts.
fn should_automount(account: &Value, pod: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

fn mount_token(pod: &mut Value, suffix: &str) {
    let spec = object_entry(pod, "spec");
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|volumes| {
            volumes
                .iter()
                .filter_map(|v| v["name"].as_str())
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(String::from)
        });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut mounted = false;
    for key in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            let mounts = mounts.as_array_mut().expect("made an array");
            if mounts.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH) {
                continue;
            }
            mounts.push(mount.clone());
            mounted = true;
        }
    }
    if mounted && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if !volumes.is_array() {
            *volumes = json!([]);
        }
        volumes
            .as_array_mut()
            .expect("made an array")
            .push(token_volume(&volume_name));
    }
}

/// The projected API access volume, as upstream's `TokenVolumeSource`.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

fn enforces_mountable_secrets(account: &Value) -> bool {
    account["metadata"]["annotations"][ENFORCE_MOUNTABLE_SECRETS]
        .as_str()
        .is_some_and(parse_go_bool)
}

/// Go's `strconv.ParseBool` truths.
fn parse_go_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Refuses secrets the account does not list: secret volumes, secret
/// environment variables, and pull secrets not among its pull secrets.
fn limit_secret_references(account: &Value, pod: &Value) -> Result<(), String> {
    let account_name = account["metadata"]["name"].as_str().unwrap_or_default();
    let mountable = names(array(account, "secrets"));
    for volume in array(&pod["spec"], "volumes") {
        if let Some(secret) = volume["secret"]["secretName"].as_str()
            && !mountable.contains(secret)
        {
            return Err(format!(
                "volume with secret.secretName=\"{secret}\" is not allowed because service account {account_name} does not reference that secret"
            ));
        }
    }
    for (key, what) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        for container in array(&pod["spec"], key) {
            for env in array(container, "env") {
                if let Some(secret) = env["valueFrom"]["secretKeyRef"]["name"].as_str()
                    && !mountable.contains(secret)
                {
                    return Err(format!(
                        "{what} {} with envVar {} referencing secret.secretName=\"{secret}\" is not allowed because service account {account_name} does not reference that secret",
                        container["name"].as_str().unwrap_or_default(),
                        env["name"].as_str().unwrap_or_default(),
                    ));
                }
            }
        }
    }
    let pullable = names(array(account, "imagePullSecrets"));
    for (i, secret) in array(&pod["spec"], "imagePullSecrets").iter().enumerate() {
        let secret = secret["name"].as_str().unwrap_or_default();
        if !pullable.contains(secret) {
            return Err(format!(
                "imagePullSecrets[{i}].name=\"{secret}\" is not allowed because service account {account_name} does not reference that imagePullSecret"
            ));
        }
    }
    Ok(())
}

/// Every secret a pod refers to (upstream's `VisitPodSecretNames` over all
/// containers): pull secrets, environment, and volumes.
fn secret_names(pod: &Value) -> BTreeSet<String> {
    let spec = &pod["spec"];
    let mut found = names(array(spec, "imagePullSecrets"));
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for container in array(spec, key) {
            for env_from in array(container, "envFrom") {
                insert_name(&mut found, &env_from["secretRef"]["name"]);
            }
            for env in array(container, "env") {
                insert_name(&mut found, &env["valueFrom"]["secretKeyRef"]["name"]);
            }
        }
    }
    for volume in array(spec, "volumes") {
        let Some(sources) = volume.as_object() else {
            continue;
        };
        for (kind, source) in sources {
            match kind.as_str() {
                "secret" => insert_name(&mut found, &source["secretName"]),
                "projected" => {
                    for projection in array(source, "sources") {
                        insert_name(&mut found, &projection["secret"]["name"]);
                    }
                }
                "azureFile" => insert_name(&mut found, &source["secretName"]),
                "csi" => insert_name(&mut found, &source["nodePublishSecretRef"]["name"]),
                _ => insert_name(&mut found, &source["secretRef"]["name"]),
            }
        }
    }
    found
}

fn insert_name(found: &mut BTreeSet<String>, name: &Value) {
    if let Some(name) = name.as_str().filter(|n| !n.is_empty()) {
        found.insert(name.to_string());
    }
}

fn names(items: &[Value]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for item in items {
        insert_name(&mut found, &item["name"]);
    }
    found
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `obj[key]` as an object, made one if it is not.
fn object_entry<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj[key].is_object() {
        obj[key] = json!({});
    }
    obj[key].as_object_mut().expect("made an object")
}

/// Five random characters, as upstream's name generator appends.
fn random_suffix() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| NAME_ALPHABET[usize::from(*b) % NAME_ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "serviceAccountName": "default",
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [
                    {"name": "a", "image": "nginx"},
                    {"name": "b", "image": "nginx", "volumeMounts": [
                        {"name": "own", "mountPath": TOKEN_MOUNT_PATH},
                    ]},
                ],
            },
        })
    }

    fn account() -> Value {
        json!({"metadata": {"name": "default", "namespace": "ns", "uid": "u"}})
    }

    #[test]
    fn mounts_the_api_access_volume_where_nothing_is_mounted() {
        let mut pod = pod();
        mutate(&mut pod, &account(), "x7k2q");
        let spec = &pod["spec"];
        assert_eq!(
            spec["volumes"],
            json!([token_volume("kube-api-access-x7k2q")])
        );
        let expected = json!({"name": "kube-api-access-x7k2q", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([expected]));
        assert_eq!(spec["containers"][0]["volumeMounts"], json!([expected]));
        assert_eq!(
            spec["containers"][1]["volumeMounts"],
            json!([{"name": "own", "mountPath": TOKEN_MOUNT_PATH}])
        );
        let projected = &spec["volumes"][0]["projected"];
        assert_eq!(projected["defaultMode"], 420);
        assert_eq!(
            projected["sources"][0]["serviceAccountToken"],
            json!({"path": "token", "expirationSeconds": 3607})
        );
        assert_eq!(
            projected["sources"][1]["configMap"]["name"],
            "kube-root-ca.crt"
        );
        assert_eq!(
            projected["sources"][2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
    }

    #[test]
    fn reuses_an_existing_api_access_volume() {
        let mut pod = pod();
        pod["spec"]["volumes"] = json!([{"name": "kube-api-access-old", "emptyDir": {}}]);
        mutate(&mut pod, &account(), "new00");
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-old"
        );
    }

    #[test]
    fn no_volume_when_every_container_mounts_the_path_itself() {
        let mut pod = json!({"spec": {"containers": [{"name": "b", "volumeMounts": [
            {"name": "own", "mountPath": TOKEN_MOUNT_PATH},
        ]}]}});
        mutate(&mut pod, &account(), "abcde");
        assert!(pod["spec"].get("volumes").is_none());
    }

    #[test]
    fn automount_the_pod_wins_over_the_account() {
        let mut off = account();
        off["automountServiceAccountToken"] = json!(false);
        let mut pod1 = pod();
        mutate(&mut pod1, &off, "abcde");
        assert!(pod1["spec"].get("volumes").is_none());
        assert!(pod1["spec"]["containers"][0].get("volumeMounts").is_none());

        let mut pod2 = pod();
        pod2["spec"]["automountServiceAccountToken"] = json!(true);
        mutate(&mut pod2, &off, "abcde");
        assert!(pod2["spec"]["volumes"].is_array());

        let mut pod3 = pod();
        pod3["spec"]["automountServiceAccountToken"] = json!(false);
        mutate(&mut pod3, &account(), "abcde");
        assert!(pod3["spec"].get("volumes").is_none());
    }

    #[test]
    fn copies_pull_secrets_only_to_pods_without_any() {
        let mut with = account();
        with["imagePullSecrets"] = json!([{"name": "reg"}, {"name": "reg2"}]);
        let mut pod1 = pod();
        mutate(&mut pod1, &with, "abcde");
        assert_eq!(
            pod1["spec"]["imagePullSecrets"],
            json!([{"name": "reg"}, {"name": "reg2"}])
        );
        let mut pod2 = pod();
        pod2["spec"]["imagePullSecrets"] = json!([{"name": "mine"}]);
        mutate(&mut pod2, &with, "abcde");
        assert_eq!(pod2["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
        let mut pod3 = pod();
        mutate(&mut pod3, &account(), "abcde");
        assert!(pod3["spec"].get("imagePullSecrets").is_none());
    }

    #[test]
    fn mirror_pods_may_not_use_accounts_secrets_or_tokens() {
        let mut mirror = json!({
            "metadata": {"annotations": {MIRROR_ANNOTATION: "h"}},
            "spec": {"serviceAccountName": "default", "containers": [{"name": "c"}]},
        });
        assert!(is_mirror_pod(&mirror));
        assert_eq!(mirror_pod_refusal(&mirror), None);
        mirror["spec"]["serviceAccountName"] = json!("builder");
        assert_eq!(
            mirror_pod_refusal(&mirror),
            Some("a mirror pod may not reference service accounts")
        );
        mirror["spec"]["serviceAccountName"] = json!("default");
        mirror["spec"]["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "s"}}]);
        assert_eq!(
            mirror_pod_refusal(&mirror),
            Some("a mirror pod may not reference secrets")
        );
        mirror["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("envFrom");
        mirror["spec"]["volumes"] = json!([token_volume("kube-api-access-abcde")]);
        assert_eq!(
            mirror_pod_refusal(&mirror),
            Some("a mirror pod may not use ServiceAccountToken volume projections")
        );
        mirror["spec"]["volumes"] =
            json!([{"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s"}}}]);
        assert_eq!(
            mirror_pod_refusal(&mirror),
            Some("a mirror pod may not reference secrets")
        );
        assert!(!is_mirror_pod(&pod()));
    }

    #[test]
    fn enforced_mountable_secrets() {
        let mut account = account();
        account["metadata"]["annotations"] = json!({ENFORCE_MOUNTABLE_SECRETS: "true"});
        account["secrets"] = json!([{"name": "ok"}]);
        account["imagePullSecrets"] = json!([{"name": "reg"}]);
        assert!(enforces_mountable_secrets(&account));
        let mut pod = pod();
        pod["spec"]["volumes"] = json!([{"name": "v", "secret": {"secretName": "ok"}}]);
        pod["spec"]["imagePullSecrets"] = json!([{"name": "reg"}]);
        assert_eq!(limit_secret_references(&account, &pod), Ok(()));
        pod["spec"]["volumes"] = json!([{"name": "v", "secret": {"secretName": "no"}}]);
        assert_eq!(
            limit_secret_references(&account, &pod).unwrap_err(),
            "volume with secret.secretName=\"no\" is not allowed because service account default does not reference that secret"
        );
        pod["spec"]["volumes"] = json!([]);
        pod["spec"]["containers"][0]["env"] =
            json!([{"name": "E", "valueFrom": {"secretKeyRef": {"name": "no", "key": "k"}}}]);
        assert_eq!(
            limit_secret_references(&account, &pod).unwrap_err(),
            "container a with envVar E referencing secret.secretName=\"no\" is not allowed because service account default does not reference that secret"
        );
        pod["spec"]["containers"][0]["env"] = json!([]);
        pod["spec"]["imagePullSecrets"] = json!([{"name": "reg"}, {"name": "other"}]);
        assert_eq!(
            limit_secret_references(&account, &pod).unwrap_err(),
            "imagePullSecrets[1].name=\"other\" is not allowed because service account default does not reference that imagePullSecret"
        );
        account["metadata"]["annotations"][ENFORCE_MOUNTABLE_SECRETS] = json!("false");
        assert!(!enforces_mountable_secrets(&account));
    }

    #[test]
    fn suffixes_use_the_name_alphabet() {
        let suffix = random_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| NAME_ALPHABET.contains(&b)));
    }
}
