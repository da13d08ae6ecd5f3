//! The agent's API traffic against a small in-memory API server behind
//! `kube::Client::new`: registration, adoption, the Lease and status reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

/// The objects and the request log of the fake API server.
#[derive(Default)]
struct FakeApi {
    nodes: BTreeMap<String, Value>,
    leases: BTreeMap<String, Value>,
    /// `METHOD path` of every request, in order.
    log: Vec<String>,
    /// Bodies of status patches.
    status_patches: Vec<Value>,
    /// Served on a Node watch, then the watch ends.
    watch_events: Vec<Value>,
    revision: u64,
}

const NODES: &str = "/api/v1/nodes";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

impl FakeApi {
    fn handle(&mut self, method: &str, path: &str, query: &str, body: &[u8]) -> (u16, String) {
        self.log.push(format!("{method} {path}"));
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (code, value) = match (method, path) {
            ("GET", NODES) if query.contains("watch=true") => {
                let lines: Vec<String> =
                    self.watch_events.drain(..).map(|e| e.to_string()).collect();
                return (200, lines.join("\n"));
            }
            ("GET", NODES) => (200, self.list()),
            ("POST", NODES) => self.create(Kind::Node, body),
            ("POST", LEASES) => self.create(Kind::Lease, body),
            _ => match path.strip_prefix(NODES).and_then(|p| p.strip_prefix('/')) {
                Some(rest) => {
                    let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
                    self.object(Kind::Node, method, name, sub, body)
                }
                None => match path.strip_prefix(LEASES).and_then(|p| p.strip_prefix('/')) {
                    Some(name) => self.object(Kind::Lease, method, name, "", body),
                    None => (404, status(404, "NotFound")),
                },
            },
        };
        (code, value.to_string())
    }

    fn store(&mut self, kind: Kind) -> &mut BTreeMap<String, Value> {
        match kind {
            Kind::Node => &mut self.nodes,
            Kind::Lease => &mut self.leases,
        }
    }

    fn bump(&mut self, object: &mut Value) {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
    }

    fn list(&self) -> Value {
        json!({
            "kind": "NodeList", "apiVersion": "v1",
            "metadata": { "resourceVersion": self.revision.to_string() },
            "items": self.nodes.values().cloned().collect::<Vec<_>>(),
        })
    }

    fn create(&mut self, kind: Kind, mut object: Value) -> (u16, Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if self.store(kind).contains_key(&name) {
            return (409, status(409, "AlreadyExists"));
        }
        object["metadata"]["uid"] = json!(format!("uid-{name}"));
        self.bump(&mut object);
        self.store(kind).insert(name, object.clone());
        (201, object)
    }

    fn object(
        &mut self,
        kind: Kind,
        method: &str,
        name: &str,
        sub: &str,
        body: Value,
    ) -> (u16, Value) {
        let Some(mut current) = self.store(kind).get(name).cloned() else {
            return (404, status(404, "NotFound"));
        };
        match method {
            "GET" => return (200, current),
            "PUT" => {
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return (409, status(409, "Conflict"));
                }
                current = body;
            }
            "PATCH" => {
                if sub == "status" {
                    self.status_patches.push(body.clone());
                }
                merge(&mut current, &body);
            }
            _ => return (405, status(405, "MethodNotAllowed")),
        }
        self.bump(&mut current);
        self.store(kind).insert(name.to_string(), current.clone());
        (200, current)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Node,
    Lease,
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "code": code, "message": reason })
}

/// RFC 7396 merge (enough for the agent's patches here).
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge(&mut target[key.as_str()], value);
        }
    }
}

fn client(api: &Arc<Mutex<FakeApi>>) -> kube::Client {
    let api = api.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let api = api.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.map_err(Box::new)?;
            let (code, text) = api.lock().expect("fake api lock").handle(
                parts.method.as_str(),
                parts.uri.path(),
                parts.uri.query().unwrap_or_default(),
                &bytes,
            );
            let response = Response::builder()
                .status(StatusCode::from_u16(code).expect("valid status code"))
                .header("content-type", "application/json")
                .body(Body::from(text.into_bytes()))
                .expect("valid response");
            Ok::<_, Box<kube::Error>>(response)
        }
    });
    kube::Client::new(service, "default")
}

fn config() -> NodeConfig {
    NodeConfig {
        name: "node-a".into(),
        addresses: vec![NodeAddress {
            type_: "InternalIP".into(),
            address: "10.0.0.5".into(),
        }],
        kubelet_port: 10250,
        labels: BTreeMap::from([(
            "node-role.kubernetes.io/control-plane".to_string(),
            "true".to_string(),
        )]),
        taints: Vec::new(),
        data_dir: PathBuf::from("/unused"),
        max_pods: 110,
        runtime_version: "containerd://1.6.20".into(),
        lease_duration_seconds: 40,
        heartbeat_interval: Duration::from_secs(10),
    }
}

/// Runs an agent for `for_` of (paused) time, then shuts it down.
async fn run_agent(api: &Arc<Mutex<FakeApi>>, host: Arc<dyn HostInfo>, for_: Duration) {
    let shutdown = CancellationToken::new();
    let agent = NodeAgent::new(client(api), config(), host);
    let task = tokio::spawn(agent.run(shutdown.clone()));
    tokio::time::sleep(for_).await;
    shutdown.cancel();
    task.await.expect("agent task").expect("agent run");
}

fn count(api: &FakeApi, request: &str) -> usize {
    api.log.iter().filter(|r| *r == request).count()
}

#[tokio::test(start_paused = true)]
async fn registers_then_heartbeats_through_the_lease() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    run_agent(&api, Arc::new(FakeHost::new()), Duration::from_secs(35)).await;
    let api = api.lock().expect("fake api lock");

    let node = &api.nodes["node-a"];
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-a"
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        "true"
    );
    assert_eq!(
        node["status"]["nodeInfo"]["kubeletVersion"],
        KUBELET_VERSION
    );
    assert_eq!(node["status"]["capacity"]["memory"], "8Gi");
    assert_eq!(
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        10250
    );

    let lease = &api.leases["node-a"];
    assert_eq!(lease["spec"]["holderIdentity"], "node-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert!(lease["spec"]["renewTime"].is_string());
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "uid-node-a");

    // Ticks at 0, 10, 20 and 30 s: one create, then PUTs of the cached Lease.
    assert_eq!(count(&api, &format!("POST {LEASES}")), 1);
    assert_eq!(count(&api, &format!("PUT {LEASES}/node-a")), 3);
    // Nothing changed, so one status report within the minute.
    assert_eq!(api.status_patches.len(), 1);
    assert_eq!(api.log[0], format!("POST {NODES}"));
}

#[tokio::test(start_paused = true)]
async fn reports_again_on_change_and_every_minute() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let host = Arc::new(FakeHost::new());
    let shutdown = CancellationToken::new();
    let agent = NodeAgent::new(client(&api), config(), host.clone());
    let task = tokio::spawn(agent.run(shutdown.clone()));

    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(api.lock().expect("lock").status_patches.len(), 1);
    let mut usage = host.usage().expect("fake usage");
    usage.memory_available_bytes = 1 << 20;
    host.set_usage(usage);
    tokio::time::sleep(Duration::from_secs(10)).await;
    {
        let api = api.lock().expect("lock");
        assert_eq!(api.status_patches.len(), 2);
        let conditions = &api.status_patches[1]["status"]["conditions"];
        assert_eq!(conditions[0]["type"], "MemoryPressure");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["reason"], "KubeletHasInsufficientMemory");
    }
    // No change for a minute: one more report.
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert_eq!(api.lock().expect("lock").status_patches.len(), 3);
    shutdown.cancel();
    task.await.expect("agent task").expect("agent run");
}

#[tokio::test(start_paused = true)]
async fn adopts_an_existing_node_without_touching_its_spec() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    api.lock().expect("lock").nodes.insert(
        "node-a".into(),
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "node-a", "uid": "uid-old", "resourceVersion": "1",
                          "labels": { "team": "blue", "kubernetes.io/os": "windows" } },
            "spec": { "podCIDR": "10.42.7.0/24", "podCIDRs": ["10.42.7.0/24"], "unschedulable": true },
            "status": { "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2020-01-01T00:00:00Z",
                "lastTransitionTime": "2020-01-01T00:00:00Z" }] }
        }),
    );
    run_agent(&api, Arc::new(FakeHost::new()), Duration::from_secs(1)).await;
    let api = api.lock().expect("lock");
    let node = &api.nodes["node-a"];
    assert_eq!(node["spec"]["podCIDR"], "10.42.7.0/24");
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(node["metadata"]["labels"]["team"], "blue");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    // Ready stayed True: its transition time is kept from before the restart.
    let ready = &api.status_patches[0]["status"]["conditions"][3];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["lastTransitionTime"], "2020-01-01T00:00:00Z");
    assert_eq!(
        api.leases["node-a"]["metadata"]["ownerReferences"][0]["uid"],
        "uid-old"
    );
}

#[tokio::test(start_paused = true)]
async fn lease_conflict_is_resolved_by_reading_it_again() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let shutdown = CancellationToken::new();
    let agent = NodeAgent::new(client(&api), config(), Arc::new(FakeHost::new()));
    let task = tokio::spawn(agent.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Someone else writes the Lease: the cached copy is now stale.
    {
        let mut api = api.lock().expect("lock");
        let mut lease = api.leases["node-a"].clone();
        api.bump(&mut lease);
        api.leases.insert("node-a".into(), lease);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.cancel();
    task.await.expect("agent task").expect("agent run");
    let api = api.lock().expect("lock");
    assert_eq!(count(&api, &format!("GET {LEASES}/node-a")), 2);
    assert_eq!(count(&api, &format!("PUT {LEASES}/node-a")), 2);
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_pod_cidr() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    {
        let mut api = api.lock().expect("lock");
        api.nodes.insert(
            "node-a".into(),
            json!({ "apiVersion": "v1", "kind": "Node",
                    "metadata": { "name": "node-a", "resourceVersion": "1" } }),
        );
        api.revision = 1;
        api.watch_events
            .push(json!({ "type": "MODIFIED", "object": {
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "node-a", "resourceVersion": "2" },
            "spec": { "podCIDR": "10.42.3.0/24", "podCIDRs": ["10.42.3.0/24"] } } }));
    }
    let shutdown = CancellationToken::new();
    let cidr = NodeAgent::wait_for_pod_cidr(&client(&api), "node-a", &shutdown)
        .await
        .expect("pod CIDR");
    assert_eq!(cidr, "10.42.3.0/24");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_pod_cidr_stops_on_shutdown() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let result = NodeAgent::wait_for_pod_cidr(&client(&api), "node-a", &shutdown).await;
    assert!(matches!(result, Err(NodeError::Cancelled { .. })));
}

#[test]
fn missing_labels_are_the_absent_and_the_different() {
    let existing = BTreeMap::from([
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
    ]);
    let wanted = BTreeMap::from([
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "3".to_string()),
        ("c".to_string(), "4".to_string()),
    ]);
    let missing = missing_labels(Some(&existing), &wanted);
    assert_eq!(missing.keys().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(missing_labels(None, &wanted), wanted);
}

#[test]
fn resources_reports_capacity_and_allocatable() {
    let (capacity, allocatable) = resources(&FakeHost::new(), 110).expect("fake host");
    assert_eq!(capacity.cpu_millis, 4000);
    assert_eq!(allocatable.memory_bytes, (8 << 30) - (100 << 20));
    assert_eq!(allocatable.pods, 110);
}
