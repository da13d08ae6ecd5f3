"""The Python `kubernetes` client against a Skiff server: create, list, watch,
patch and delete, asserting what a real cluster returns. Run by
crates/skiff/tests/clients with KUBECONFIG and the namespace as argv[1]."""

import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

namespace = sys.argv[1]
config.load_kube_config()
core = client.CoreV1Api()
apps = client.AppsV1Api()

# create (the Python client sends JSON without being asked for a content type)
body = client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="py-cm", labels={"app": "py"}),
    data={"greeting": "hello"},
)
created = core.create_namespaced_config_map(namespace, body)
assert created.metadata.uid, created
assert created.data == {"greeting": "hello"}, created.data
start_rv = created.metadata.resource_version

try:
    core.create_namespaced_config_map(namespace, body)
    raise AssertionError("duplicate create succeeded")
except ApiException as e:
    assert e.status == 409, e.status

# list with a label selector
core.create_namespaced_config_map(
    namespace,
    client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-other", labels={"app": "other"})),
)
listed = core.list_namespaced_config_map(namespace, label_selector="app=py")
assert [i.metadata.name for i in listed.items] == ["py-cm"], listed.items

# watch from the create's resourceVersion while patching and deleting
events = []
w = watch.Watch()


def follow():
    for event in w.stream(
        core.list_namespaced_config_map,
        namespace,
        field_selector="metadata.name=py-cm",
        resource_version=start_rv,
        timeout_seconds=30,
    ):
        events.append((event["type"], event["object"].data))
        if event["type"] == "DELETED":
            w.stop()


follower = threading.Thread(target=follow)
follower.start()

# patch (strategic merge by default for a dict body)
patched = core.patch_namespaced_config_map("py-cm", namespace, {"data": {"greeting": "hi"}})
assert patched.data["greeting"] == "hi", patched.data
assert int(patched.metadata.resource_version) > int(start_rv)

core.delete_namespaced_config_map("py-cm", namespace)
follower.join(timeout=30)
assert not follower.is_alive(), "watch did not end"
assert [t for t, _ in events] == ["MODIFIED", "DELETED"], events
assert events[0][1] == {"greeting": "hi"}, events

try:
    core.read_namespaced_config_map("py-cm", namespace)
    raise AssertionError("deleted config map still readable")
except ApiException as e:
    assert e.status == 404, e.status

# a typed apps/v1 object round-trips with defaults applied
deployment = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py-deploy"),
    spec=client.V1DeploymentSpec(
        selector=client.V1LabelSelector(match_labels={"app": "py"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    ),
)
made = apps.create_namespaced_deployment(namespace, deployment)
assert made.spec.replicas == 1, made.spec
assert made.spec.strategy.type == "RollingUpdate", made.spec.strategy
apps.delete_namespaced_deployment("py-deploy", namespace)
print("python client: ok")
