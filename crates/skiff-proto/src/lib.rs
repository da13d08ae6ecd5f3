//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) as JSON objects.
//!
//! Recent kubectl (`create deployment|configmap|secret|namespace`) and helm (its
//! release Secrets) send write bodies only as protobuf, and never fall back to
//! JSON. The API server works on `serde_json::Value` objects in Kubernetes JSON
//! form, so this crate converts between the two wire forms.
//!
//! A protobuf body is the 4 magic bytes `k8s\0` followed by a
//! `runtime.Unknown` envelope carrying the `apiVersion`/`kind` and, in `raw`,
//! the typed message (for example `k8s.io.api.apps.v1.Deployment`).
//!
//! The conversion is generic: the upstream `.proto` IDL (vendored under
//! `proto/`) is compiled at build time into a descriptor set, and messages are
//! walked with `prost-reflect`. Types whose Go code has custom JSON encoding
//! (`Time`, `MicroTime`, `Duration`, `Quantity`, `IntOrString`,
//! `RawExtension`, `FieldsV1` and the list wrappers such as `Verbs`) are
//! mapped to their JSON shapes; every other field uses its proto field name
//! as the JSON key, as go-to-protobuf derives one from the other. The
//! exceptions come from `go-json-fields.tsv`, extracted from the Go struct
//! tags: embedded Go structs that JSON flattens (`Volume.volumeSource`,
//! `Probe.handler`), renamed keys (`uID` → `uid`), and fields that Go leaves
//! out of JSON when they hold their zero value.
//!
//! Decoding yields the JSON the API server's Go structs would serialize. Go
//! clients put every non-pointer field on the wire, zero or not, and a Go
//! server then drops the zero ones tagged `omitempty` (`generateName: ""`,
//! `stdin: false`, `minReadySeconds: 0`, empty lists and maps, and the zero
//! `creationTimestamp`, tagged `omitzero`), so this crate
//! drops them too. Pointer fields keep whatever value is present, because
//! there `replicas: 0` or `automountServiceAccountToken: false` means
//! something; fields without `omitempty` (`containerPort: 0`) and struct
//! fields (`resources: {}`) are kept as well, as Go writes them.

mod from_json;
mod go_types;
mod schema;
mod to_json;

use prost::Message as _;
use serde_json::Value;

pub use schema::supports;

/// The four bytes that start every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Deepest message or JSON nesting accepted in either direction. Matches
/// prost's decoder limit, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 100;

/// Why a body could not be converted.
///
/// [`ProtoError::UnknownKind`] means the type is well formed but has no schema
/// here (answer 415 Unsupported Media Type); every other variant is a bad
/// request (400).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The body does not start with [`MAGIC`].
    #[error("protobuf body does not start with the k8s\\0 magic prefix")]
    MissingMagic,
    /// The envelope or the embedded message is not valid protobuf.
    #[error("malformed protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The envelope or object names no `apiVersion` or `kind`.
    #[error("object has no apiVersion and kind")]
    MissingTypeMeta,
    /// The envelope's payload is compressed or otherwise encoded.
    #[error("unsupported protobuf content encoding {0:?}")]
    ContentEncoding(String),
    /// No protobuf schema is known for this `apiVersion`/`kind`.
    #[error("no protobuf schema for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind {
        /// The `apiVersion` asked for.
        api_version: String,
        /// The `kind` asked for.
        kind: String,
    },
    /// A value does not fit its field's type (either direction).
    #[error("{path}: {reason}")]
    InvalidValue {
        /// JSON-style path of the offending field, e.g. `.spec.replicas`.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Nesting exceeds [`MAX_DEPTH`].
    #[error("object nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A decoded protobuf body.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// `apiVersion` from the envelope, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind` from the envelope, e.g. `Deployment`.
    pub kind: String,
    /// The object in Kubernetes JSON form, with `apiVersion` and `kind` set.
    pub object: Value,
}

/// `k8s.io.apimachinery.pkg.runtime.TypeMeta`.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopeTypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// `k8s.io.apimachinery.pkg.runtime.Unknown`, the envelope after the magic.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<EnvelopeTypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    content_type: Option<String>,
}

/// Decodes a protobuf request body (magic, envelope, typed message) into a
/// Kubernetes JSON object.
///
/// Works for every served kind and for meta kinds such as `DeleteOptions`.
/// Unknown field numbers are skipped, as protobuf requires.
pub fn decode_envelope(body: &[u8]) -> Result<Decoded, ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::MissingMagic)?;
    let envelope = Envelope::decode(rest)?;
    if let Some(encoding) = envelope.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtoError::ContentEncoding(encoding));
    }
    let type_meta = envelope.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtoError::MissingTypeMeta);
    }
    let descriptor = schema::message_for(&api_version, &kind)?;
    let raw = envelope.raw.unwrap_or_default();
    let message = prost_reflect::DynamicMessage::decode(descriptor, raw.as_slice())?;

    let mut object = serde_json::Map::new();
    object.insert("apiVersion".into(), Value::String(api_version.clone()));
    object.insert("kind".into(), Value::String(kind.clone()));
    to_json::fields_into(&message, &mut object)?;
    Ok(Decoded {
        api_version,
        kind,
        object: Value::Object(object),
    })
}

/// Encodes a Kubernetes JSON object (which must carry `apiVersion` and
/// `kind`) as a protobuf body, for clients that accept only protobuf.
///
/// JSON fields that the schema does not know, and `null`s, are left out:
/// protobuf has no way to carry them, and Go clients would drop them anyway.
pub fn encode_envelope(object: &Value) -> Result<Vec<u8>, ProtoError> {
    let field = |name| {
        object
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err(ProtoError::MissingTypeMeta);
    };
    let descriptor = schema::message_for(api_version, kind)?;
    let message = from_json::message(descriptor, object)?;
    let envelope = Envelope {
        type_meta: Some(EnvelopeTypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(message.encode_to_vec()),
        content_encoding: None,
        content_type: None,
    };
    let mut body = MAGIC.to_vec();
    body.extend_from_slice(&envelope.encode_to_vec());
    Ok(body)
}

impl ProtoError {
    /// Prefixes the path of an [`ProtoError::InvalidValue`] with a field name.
    fn within(self, field: &str) -> Self {
        match self {
            Self::InvalidValue { path, reason } => Self::InvalidValue {
                path: format!(".{field}{path}"),
                reason,
            },
            other => other,
        }
    }

    /// Prefixes the path of an [`ProtoError::InvalidValue`] with a list index.
    fn within_index(self, index: usize) -> Self {
        match self {
            Self::InvalidValue { path, reason } => Self::InvalidValue {
                path: format!("[{index}]{path}"),
                reason,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Wraps an already-encoded typed message the way Go clients do.
    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let envelope = Envelope {
            type_meta: Some(EnvelopeTypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(envelope.encode_to_vec());
        body
    }

    fn round_trip(object: Value) {
        let body = encode_envelope(&object).expect("encodes");
        assert!(body.starts_with(MAGIC));
        let decoded = decode_envelope(&body).expect("decodes");
        assert_eq!(
            Some(decoded.api_version.as_str()),
            object["apiVersion"].as_str()
        );
        assert_eq!(Some(decoded.kind.as_str()), object["kind"].as_str());
        assert_eq!(decoded.object, object);
    }

    #[test]
    fn deployment_round_trips() {
        round_trip(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "uid": "6b1c2a6e-0000-4000-8000-000000000001",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "labels": {"app": "web", "tier": "frontend"},
                "annotations": {"deployment.kubernetes.io/revision": "2"},
                "managedFields": [{
                    "manager": "kubectl-create",
                    "operation": "Update",
                    "apiVersion": "apps/v1",
                    "time": "2024-01-02T03:04:05Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}
                }]
            },
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}]
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "args": ["-g", "daemon off;"],
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                            "env": [
                                {"name": "MODE", "value": "prod"},
                                {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": false}}}
                            ],
                            "envFrom": [{"secretRef": {"name": "creds"}}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "250m", "memory": "64Mi"}
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                                "initialDelaySeconds": 5,
                                "periodSeconds": 10
                            },
                            "readinessProbe": {
                                "tcpSocket": {"port": 80},
                                "failureThreshold": 3
                            },
                            "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false},
                            "terminationMessagePath": "/dev/termination-log",
                            "imagePullPolicy": "IfNotPresent"
                        }],
                        "volumes": [
                            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                            {"name": "conf", "configMap": {"name": "cm", "defaultMode": 420,
                                                           "items": [{"key": "k", "path": "k.txt"}]}},
                            {"name": "proj", "projected": {"sources": [{"secret": {"name": "creds"}}]}}
                        ],
                        "restartPolicy": "Always",
                        "terminationGracePeriodSeconds": 30,
                        "automountServiceAccountToken": false,
                        "dnsPolicy": "ClusterFirst"
                    }
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}
                },
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600
            },
            "status": {
                "observedGeneration": 3,
                "replicas": 1,
                "conditions": [{
                    "type": "Available",
                    "status": "True",
                    "lastUpdateTime": "2024-01-02T03:04:05Z",
                    "lastTransitionTime": "2024-01-02T03:04:05Z",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability."
                }]
            }
        }));
    }

    #[test]
    fn configmap_secret_and_namespace_round_trip() {
        round_trip(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"app.properties": "a=1\nb=2\n", "empty": ""},
            "binaryData": {"blob": "AAEC/w=="},
            "immutable": false
        }));
        round_trip(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sh.helm.release.v1.web.v1", "labels": {"owner": "helm"}},
            "type": "helm.sh/release.v1",
            "data": {"release": "H4sIAAAAAAAA/+zd", "raw": "AP8Q"},
            "stringData": {"token": "abc"}
        }));
        round_trip(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "team-a", "deletionTimestamp": "2024-05-06T07:08:09Z"},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Terminating"}
        }));
    }

    #[test]
    fn pod_status_and_lease_times_round_trip() {
        round_trip(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "nodeName": "node-1",
                "overhead": {"cpu": "10m"}
            },
            "status": {
                "phase": "Running",
                "podIP": "10.42.0.7",
                "podIPs": [{"ip": "10.42.0.7"}],
                "hostIP": "192.168.1.2",
                "startTime": "2024-01-02T03:04:05Z",
                "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null,
                                "lastTransitionTime": "2024-01-02T03:04:06Z"}],
                "containerStatuses": [{
                    "name": "c",
                    "ready": false,
                    "restartCount": 0,
                    "image": "busybox",
                    "imageID": "",
                    "state": {"running": {"startedAt": "2024-01-02T03:04:07Z"}}
                }]
            }
        }));
        round_trip(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "skiff-scheduler", "namespace": "kube-system"},
            "spec": {
                "holderIdentity": "node-1",
                "leaseDurationSeconds": 15,
                "acquireTime": "2024-01-02T03:04:05.123456Z",
                "renewTime": "2024-01-02T03:04:15.000001Z",
                "leaseTransitions": 0
            }
        }));
    }

    #[test]
    fn special_shapes_round_trip() {
        // Duration, RawExtension and the Verbs/ExtraValue list wrappers.
        round_trip(json!({
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {"name": "web-5d4f"},
            "data": {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}},
            "revision": 2
        }));
        round_trip(json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {},
            "spec": {
                "user": "alice",
                "groups": ["dev"],
                "extra": {"scopes": ["read", "write"]},
                "resourceAttributes": {"verb": "get", "resource": "pods"}
            }
        }));
        round_trip(json!({
            "apiVersion": "v1",
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [{"name": "pods", "singularName": "pod", "namespaced": true,
                           "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]}]
        }));
    }

    #[test]
    fn go_json_names_and_embedded_structs_round_trip() {
        round_trip(json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": "default"},
            "spec": {
                "audiences": ["https://kubernetes.default.svc"],
                "expirationSeconds": 3600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "123"}
            }
        }));
        round_trip(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web"},
            "spec": {"rules": [{"host": "example.test", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}
            }]}}]}
        }));
        round_trip(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "debug"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "ephemeralContainers": [{"name": "dbg", "image": "busybox", "targetContainerName": "c"}]
            }
        }));
    }

    /// What a Go client puts on the wire, written as JSON: every non-pointer
    /// field, zero or not. Decoding must give what the API server's JSON
    /// would show, and that JSON must encode and decode to itself.
    fn decodes_as_go_serializes(go_wire: &Value, expected: &Value) {
        let body = encode_envelope(go_wire).expect("encodes");
        let decoded = decode_envelope(&body).expect("decodes");
        assert_eq!(&decoded.object, expected);
        round_trip(expected.clone());
    }

    /// The zero values of ObjectMeta's non-pointer fields, as Go sends them.
    fn go_object_meta(name: &str, labels: &Value) -> Value {
        json!({
            "name": name, "generateName": "", "namespace": "", "selfLink": "",
            "uid": "", "resourceVersion": "", "generation": 0,
            "creationTimestamp": null, "labels": labels, "annotations": {},
            "ownerReferences": [], "finalizers": [], "managedFields": []
        })
    }

    #[test]
    fn go_client_deployment_drops_omitempty_zero_values() {
        // `kubectl create deployment web --image=nginx --port=80 --replicas=0`,
        // plus a few pointer fields set to their zero values.
        let labels = json!({"app": "web"});
        let go_wire = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": go_object_meta("web", &labels),
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels, "matchExpressions": []},
                "template": {
                    "metadata": go_object_meta("", &labels),
                    "spec": {
                        "volumes": [], "initContainers": [],
                        "containers": [{
                            "name": "nginx", "image": "nginx",
                            "command": [], "args": [], "workingDir": "",
                            "ports": [
                                {"name": "", "hostPort": 0, "containerPort": 80,
                                 "protocol": "", "hostIP": ""},
                                {"name": "", "hostPort": 0, "containerPort": 0,
                                 "protocol": "", "hostIP": ""}
                            ],
                            "envFrom": [], "env": [],
                            "resources": {"limits": {}, "requests": {}, "claims": []},
                            "volumeMounts": [],
                            "securityContext": {"runAsUser": 0, "privileged": false},
                            "terminationMessagePath": "", "terminationMessagePolicy": "",
                            "imagePullPolicy": "", "stdin": false, "stdinOnce": false,
                            "tty": false
                        }],
                        "restartPolicy": "",
                        "terminationGracePeriodSeconds": 0,
                        "dnsPolicy": "", "nodeSelector": {},
                        "serviceAccountName": "", "serviceAccount": "",
                        "automountServiceAccountToken": false,
                        "nodeName": "", "hostNetwork": false, "hostPID": false,
                        "hostIPC": false, "hostname": "", "subdomain": "",
                        "schedulerName": "", "priorityClassName": "", "overhead": {}
                    }
                },
                "strategy": {"type": ""},
                "minReadySeconds": 0,
                "paused": false
            },
            "status": {
                "observedGeneration": 0, "replicas": 0, "updatedReplicas": 0,
                "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": 0,
                "conditions": []
            }
        });
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx",
                            "ports": [{"containerPort": 80}, {"containerPort": 0}],
                            "resources": {},
                            "securityContext": {"runAsUser": 0, "privileged": false}
                        }],
                        "terminationGracePeriodSeconds": 0,
                        "automountServiceAccountToken": false
                    }
                },
                "strategy": {}
            },
            "status": {}
        });
        decodes_as_go_serializes(&go_wire, &expected);
    }

    #[test]
    fn go_client_secret_configmap_and_namespace_drop_zero_values() {
        // `kubectl create secret generic creds --from-literal=k=v`
        decodes_as_go_serializes(
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": go_object_meta("creds", &json!({})),
                "data": {"k": "dg=="}, "stringData": {}, "type": ""
            }),
            &json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "creds"}, "data": {"k": "dg=="}}),
        );
        // `kubectl create configmap settings --from-literal=empty=`: values
        // inside a map are data, not fields, and stay even when empty.
        decodes_as_go_serializes(
            &json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": go_object_meta("settings", &json!({})),
                "immutable": false, "data": {"empty": ""}, "binaryData": {}
            }),
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "settings"},
                    "immutable": false, "data": {"empty": ""}}),
        );
        // `kubectl create namespace team-a`
        decodes_as_go_serializes(
            &json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": go_object_meta("team-a", &json!({})),
                "spec": {"finalizers": []},
                "status": {"phase": "", "conditions": []}
            }),
            &json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "team-a"}, "spec": {}, "status": {}}),
        );
    }

    #[test]
    fn delete_options_round_trip() {
        round_trip(json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": "abc", "resourceVersion": "7"},
            "propagationPolicy": "Background",
            "dryRun": ["All"]
        }));
    }

    /// Field numbers, wire types and the envelope come from the IDL, not from
    /// our encoder: build the bytes by hand and check the JSON.
    #[test]
    fn decodes_hand_built_bytes() {
        // Namespace { metadata(1) { name(1) = "ns" } status(3) {} }
        // then unknown field 99 (varint) which must be skipped.
        let raw = vec![
            0x0a, 0x04, 0x0a, 0x02, b'n', b's', //
            0x1a, 0x00, //
            0x98, 0x06, 0x01,
        ];
        let decoded = decode_envelope(&envelope("v1", "Namespace", raw)).expect("decodes");
        assert_eq!(
            decoded.object,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}, "status": {}})
        );

        // Container { name(1) = "" stdin(16) = false }: Go writes `name`
        // always, and `stdin` (omitempty) only when true.
        let raw = vec![0x0a, 0x00, 0x80, 0x01, 0x00];
        let decoded = decode_envelope(&envelope("v1", "Container", raw)).expect("decodes");
        assert_eq!(
            decoded.object,
            json!({"apiVersion": "v1", "kind": "Container", "name": ""})
        );
        // ... but a true `stdin` and a zero pointer field
        // (terminationGracePeriodSeconds(4) = 0 in a PodSpec) are kept.
        let raw = vec![0x80, 0x01, 0x01];
        let decoded = decode_envelope(&envelope("v1", "Container", raw)).expect("decodes");
        assert_eq!(decoded.object["stdin"], json!(true));
        let raw = vec![0x20, 0x00];
        let decoded = decode_envelope(&envelope("v1", "PodSpec", raw)).expect("decodes");
        assert_eq!(decoded.object["terminationGracePeriodSeconds"], json!(0));

        // Volume { name(1) = "v" volumeSource(2) { emptyDir(2) {} } }: the
        // embedded Go struct is flattened into the volume.
        let raw = vec![0x0a, 0x01, b'v', 0x12, 0x02, 0x12, 0x00];
        let decoded = decode_envelope(&envelope("v1", "Volume", raw)).expect("decodes");
        assert_eq!(
            decoded.object,
            json!({"apiVersion": "v1", "kind": "Volume", "name": "v", "emptyDir": {}})
        );

        // An empty Time message is Go's zero time: `null`, which
        // `omitzero` drops from ObjectMeta { creationTimestamp(8) {} } but
        // PodCondition { lastProbeTime(3) {} } keeps.
        let raw = vec![0x42, 0x00];
        let decoded = decode_envelope(&envelope("v1", "ObjectMeta", raw)).expect("decodes");
        assert_eq!(decoded.object.get("creationTimestamp"), None);
        let raw = vec![0x1a, 0x00];
        let decoded = decode_envelope(&envelope("v1", "PodCondition", raw)).expect("decodes");
        assert_eq!(decoded.object.get("lastProbeTime"), Some(&Value::Null));
    }

    #[test]
    fn intorstring_and_quantity_zero_values() {
        // IntOrString with only `type` absent is the integer 0; Quantity {} is "0".
        let raw = vec![0x0a, 0x00];
        let decoded = decode_envelope(&envelope("v1", "ServicePort", raw)).expect("decodes");
        assert_eq!(decoded.object.get("targetPort"), None);
        let decoded =
            decode_envelope(&envelope("v1", "HTTPGetAction", vec![0x12, 0x00])).expect("decodes");
        assert_eq!(decoded.object["port"], json!(0));
        // ResourceRequirements { limits(1): {"cpu": Quantity {}} }
        let raw = vec![0x0a, 0x07, 0x0a, 0x03, b'c', b'p', b'u', 0x12, 0x00];
        let decoded =
            decode_envelope(&envelope("v1", "ResourceRequirements", raw)).expect("decodes");
        assert_eq!(decoded.object["limits"], json!({"cpu": "0"}));
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(matches!(
            decode_envelope(b"{\"kind\":\"Pod\"}"),
            Err(ProtoError::MissingMagic)
        ));
        assert!(matches!(
            decode_envelope(b"k8s\0"),
            Err(ProtoError::MissingTypeMeta)
        ));
        assert!(matches!(
            decode_envelope(&envelope("example.com/v1", "Widget", Vec::new())),
            Err(ProtoError::UnknownKind { .. })
        ));
        // Truncated varint, absurd length, wrong wire type for metadata.
        for raw in [
            vec![0x38, 0xff],
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let err = decode_envelope(&envelope("v1", "Namespace", raw.clone()));
            assert!(
                matches!(err, Err(ProtoError::Decode(_))),
                "{raw:?}: {err:?}"
            );
        }
        let mut gzipped = envelope("v1", "Namespace", Vec::new());
        gzipped.extend([0x1a, 0x04, b'g', b'z', b'i', b'p']);
        assert!(matches!(
            decode_envelope(&gzipped),
            Err(ProtoError::ContentEncoding(_))
        ));
        // IntOrString type 2 is invalid; the error names the field.
        let raw = vec![0x12, 0x02, 0x08, 0x02];
        match decode_envelope(&envelope("v1", "HTTPGetAction", raw)) {
            Err(ProtoError::InvalidValue { path, .. }) => assert_eq!(path, ".port"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bounds_nesting_depth() {
        // Unknown groups nest without any schema help; 200 levels must be
        // refused by the recursion limit instead of overflowing the stack.
        let mut raw = Vec::new();
        for _ in 0..200 {
            raw.extend([0xfb, 0x07]); // field 127, start group
        }
        let err = decode_envelope(&envelope("v1", "Namespace", raw)).expect_err("too deep");
        assert!(matches!(err, ProtoError::Decode(_)), "{err:?}");
    }

    #[test]
    fn map_keys_are_sorted() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "data": {"b": "2", "a": "1", "c": "3", "aa": "4"}});
        let decoded =
            decode_envelope(&encode_envelope(&object).expect("encodes")).expect("decodes");
        let keys: Vec<&String> = decoded.object["data"]
            .as_object()
            .expect("map")
            .keys()
            .collect();
        assert_eq!(keys, ["a", "aa", "b", "c"]);
    }

    #[test]
    fn encode_rejects_mistyped_values_with_a_path() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "spec": {"replicas": "three"}});
        match encode_envelope(&object) {
            Err(ProtoError::InvalidValue { path, .. }) => assert_eq!(path, ".spec.replicas"),
            other => panic!("{other:?}"),
        }
        let object = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "not base64!"}});
        match encode_envelope(&object) {
            Err(ProtoError::InvalidValue { path, .. }) => assert_eq!(path, ".data.k"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            encode_envelope(&json!({"kind": "Pod"})),
            Err(ProtoError::MissingTypeMeta)
        ));
        // Unknown fields are dropped rather than failing the response.
        let decoded = decode_envelope(
            &encode_envelope(&json!({"apiVersion": "v1", "kind": "Namespace", "bogus": 1}))
                .expect("encodes"),
        )
        .expect("decodes");
        assert_eq!(
            decoded.object,
            json!({"apiVersion": "v1", "kind": "Namespace"})
        );
    }

    proptest! {
        #[test]
        fn random_envelopes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut body = MAGIC.to_vec();
            body.extend(&bytes);
            let _ = decode_envelope(&body);
        }

        #[test]
        fn random_typed_messages_never_panic(
            kind in prop::sample::select(vec![
                "Pod", "Deployment", "Secret", "DeleteOptions", "Lease", "Volume", "Probe",
                "ControllerRevision", "ObjectMeta", "Service", "ConfigMap", "Event",
            ]),
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let api_version = match kind {
                "Deployment" | "ControllerRevision" => "apps/v1",
                "Lease" => "coordination.k8s.io/v1",
                _ => "v1",
            };
            if let Ok(decoded) = decode_envelope(&envelope(api_version, kind, bytes)) {
                // Whatever decodes must encode, and decode to the same object.
                let encoded = encode_envelope(&decoded.object).expect("a decoded object encodes");
                let again = decode_envelope(&encoded).expect("an encoded object decodes");
                prop_assert_eq!(again.object, decoded.object);
            }
        }
    }
}
