"""A stand-in kubelet for a control plane without nodes (shared/k8s `cluster up`), for tests.

    python -m tests.k8s_real.kubelet --node-kubeconfig NODE --admin-kubeconfig ADMIN \
        --namespace ember-functions --scratch DIR

- registers Node `node-1` with the node's credentials (system:node:node-1, so the Node
  authorizer and NodeRestriction apply) and keeps its Lease and Ready condition fresh;
- binds the namespace's unscheduled pods to it (no kube-scheduler runs; admin credentials);
- runs each bound pod's container command as a local process on a loopback address of its own
  (127.88.x.y, the pod IP; EMBER_INVOKER_HOST, 0.0.0.0 in a pod, becomes it), writes its PID to
  DIR/POD.pid, reports Ready once the readinessProbe's port connects;
- a process that ends makes the pod Failed with its exit code (128+N after signal N);
- a pod being deleted gets its process stopped (SIGTERM, SIGKILL after the grace period) and is
  then deleted for good, as the kubelet does. SIGTERM stops every process and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

NODE = "node-1"
ROOT = Path(__file__).resolve().parents[2]


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def connect(kubeconfig: str) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]
    return api


def events(list_fn: Any, *args: Any, **kwargs: Any) -> Any:
    return watch.Watch().stream(list_fn, *args, **kwargs)  # type: ignore[no-untyped-call]


def say(*parts: object) -> None:
    print(f"{time.time():.3f} kubelet:", *parts, flush=True)


class Kubelet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.ns: str = args.namespace
        self.scratch = Path(args.scratch)
        # Typed Any: the client's models are passed as plain dicts here.
        self.node: Any = client.CoreV1Api(connect(args.node_kubeconfig))
        self.admin: Any = client.CoreV1Api(connect(args.admin_kubeconfig))
        self.lease: Any = client.CoordinationV1Api(connect(args.node_kubeconfig))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # pod uid -> process
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.ips = (f"127.88.{n // 250}.{n % 250 + 2}" for n in itertools.count())

    # -- the node -------------------------------------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        t = stamp()
        room = {"cpu": "32", "memory": "64Gi", "pods": "250"}
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
        return {
            "capacity": room,
            "allocatable": room,
            "conditions": [ready | {"lastHeartbeatTime": t, "lastTransitionTime": t}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        }

    def register(self) -> None:
        body = {"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}
        try:
            self.node.create_node(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        self.node.patch_node_status(NODE, {"status": self.node_status()})
        say("node registered")

    def heartbeat(self) -> None:
        while True:
            time.sleep(10)
            try:
                renew = dt.datetime.now(dt.UTC).isoformat()
                body = {"spec": {"holderIdentity": NODE, "renewTime": renew}}
                try:
                    self.lease.patch_namespaced_lease(NODE, "kube-node-lease", body)
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise
                    body["metadata"] = {"name": NODE}
                    self.lease.create_namespaced_lease("kube-node-lease", body)
                self.node.patch_node_status(NODE, {"status": self.node_status()})
            except Exception as exc:
                say("heartbeat failed:", exc)

    # -- scheduling -----------------------------------------------------------------------------

    def bind(self) -> None:
        while True:
            try:
                stream = events(
                    self.admin.list_namespaced_pod,
                    self.ns,
                    field_selector="spec.nodeName=",
                    timeout_seconds=120,
                )
                for event in stream:
                    pod = event["object"]
                    if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                        continue
                    target = {"apiVersion": "v1", "kind": "Node", "name": NODE}
                    binding = {"metadata": {"name": pod.metadata.name}, "target": target}
                    try:
                        self.admin.create_namespaced_pod_binding(
                            pod.metadata.name, self.ns, binding, _preload_content=False
                        )
                    except client.ApiException as exc:
                        say("cannot bind", pod.metadata.name, exc.status)
            except Exception as exc:
                say("bind watch failed:", exc)
                time.sleep(0.5)

    # -- pods -----------------------------------------------------------------------------------

    def status(self, pod: Any, status: dict[str, Any]) -> None:
        try:
            self.node.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": status}
            )
        except client.ApiException as exc:
            if exc.status != 404:
                say("status patch failed", pod.metadata.name, exc.status)

    def start(self, pod: Any) -> None:
        container = pod.spec.containers[0]
        command = [*(container.command or []), *(container.args or [])]
        if command[:1] == ["python"]:
            command[0] = sys.executable
        ip = next(self.ips)
        env = {e.name: e.value or "" for e in container.env or []}
        if "EMBER_INVOKER_HOST" in env:
            env["EMBER_INVOKER_HOST"] = ip
        home = self.scratch / pod.metadata.name
        home.mkdir(parents=True, exist_ok=True)
        env |= {"PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(home)}
        env |= {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
        with open(home / "log", "wb") as out:
            proc = subprocess.Popen(
                command, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        (self.scratch / f"{pod.metadata.name}.pid").write_text(str(proc.pid))
        with self.lock:
            self.procs[pod.metadata.uid] = proc
        t = stamp()
        running = {"running": {"startedAt": t}}
        self.status(pod, {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
            "startTime": t, "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": container.name, "image": container.image,
                                   "imageID": "", "ready": False, "restartCount": 0,
                                   "state": running}],
        })  # fmt: skip
        threading.Thread(target=self.run, args=(pod, proc, ip), daemon=True).start()

    def run(self, pod: Any, proc: subprocess.Popen[bytes], ip: str) -> None:
        container = pod.spec.containers[0]
        probe = container.readiness_probe
        port = probe.tcp_socket.port if probe is not None and probe.tcp_socket else None
        while port is not None and proc.poll() is None:
            try:
                with socket.create_connection((ip, int(port)), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            ready = {"type": "Ready", "status": "True", "lastTransitionTime": stamp()}
            state = {"running": {"startedAt": stamp()}}
            self.status(pod, {"conditions": [ready], "containerStatuses": [{
                "name": container.name, "image": container.image, "imageID": "",
                "ready": True, "restartCount": 0, "state": state}]})  # fmt: skip
        code = proc.wait()
        with self.lock:
            deleting = self.procs.pop(pod.metadata.uid, None) is None
        if deleting:
            return
        code = 128 - code if code < 0 else code
        say("exited", pod.metadata.name, code)
        terminated = {"exitCode": code, "reason": "Error", "finishedAt": stamp()}
        self.status(pod, {
            "phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": container.name, "image": container.image,
                                   "imageID": "", "ready": False, "restartCount": 0,
                                   "state": {"terminated": terminated}}],
        })  # fmt: skip

    def stop(self, uid: str, grace_s: float) -> None:
        with self.lock:
            proc = self.procs.pop(uid, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=max(grace_s, 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def finish_delete(self, pod: Any) -> None:
        self.stop(pod.metadata.uid, pod.metadata.deletion_grace_period_seconds or 0)
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod.metadata.uid}}
        try:
            self.node.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, body=options)
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                say("final delete failed", pod.metadata.name, exc.status)

    def pods(self) -> None:
        while True:
            try:
                stream = events(
                    self.node.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={NODE}",
                    timeout_seconds=120,
                )
                for event in stream:
                    pod, uid = event["object"], event["object"].metadata.uid
                    if event["type"] == "DELETED":
                        threading.Thread(target=self.stop, args=(uid, 0), daemon=True).start()
                    elif pod.metadata.deletion_timestamp:
                        threading.Thread(target=self.finish_delete, args=(pod,)).start()
                    elif uid not in self.seen and pod.status.phase == "Pending":
                        self.seen.add(uid)
                        threading.Thread(target=self.start, args=(pod,), daemon=True).start()
            except Exception as exc:
                say("pod watch failed:", exc)
                time.sleep(0.5)

    def shutdown(self, *_: object) -> None:
        for uid in list(self.procs):
            self.stop(uid, 1)
        say("stopped")
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-kubeconfig", required=True)
    parser.add_argument("--admin-kubeconfig", required=True)
    parser.add_argument("--namespace", default="ember-functions")
    parser.add_argument("--scratch", required=True)
    args = parser.parse_args()
    kubelet = Kubelet(args)
    signal.signal(signal.SIGTERM, kubelet.shutdown)
    kubelet.register()
    for target in (kubelet.heartbeat, kubelet.bind):
        threading.Thread(target=target, daemon=True).start()
    kubelet.pods()


if __name__ == "__main__":
    main()
