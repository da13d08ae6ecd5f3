"""Port-forward with the Python kubernetes client (the WebSocket channel
protocol): an HTTP request through the forward reaches the pod's server.

Usage: portforward.py NAMESPACE POD PORT
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward


def main():
    namespace, pod, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config.load_kube_config()
    api = client.CoreV1Api()
    forward = portforward(
        api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
    )
    sock = forward.socket(port)
    sock.setblocking(True)
    sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
    reply = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    sock.close()
    error = forward.error(port)
    assert error is None, f"port-forward error: {error}"
    text = reply.decode()
    assert " 200 " in text.splitlines()[0], text
    assert text.endswith("forwarded\n"), text
    print("python port-forward: ok")


if __name__ == "__main__":
    main()
