"""deploy/ and runtime-images/: every object `kubectl apply -k` creates validates against the
Kubernetes schema, RBAC is no wider than what the backend calls, and the images and manifests
run the commands the other tests run."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet
from kubernetes import client as k8s

from gateway.envcache import CacheSettings
from gateway.settings import Settings
from scheduler.backends.kubernetes import (
    APP,
    APP_LABEL,
    INVOKER_COMMAND,
    REQUIRED_PERMISSIONS,
    KubernetesSettings,
    PodPool,
)
from scheduler.service import ServiceSettings
from tests.k8s.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ with the production secrets an operator writes."""
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy)
    secrets = copy / "overlays" / "production" / "secrets"
    # As `openssl rand -hex 32 > file` writes them: with a newline at the end.
    (secrets / "admin-token").write_text("a" * 64 + "\n")
    (secrets / "scheduler-token").write_text("s" * 64 + "\n")
    (secrets / "database-url").write_text("postgresql://ember:pw@db.example:5432/ember\n")
    (secrets / "secrets-key").write_text(base64.urlsafe_b64encode(b"k" * 32).decode() + "\n")
    return copy / "overlays" / "production"


def rendered(overlay: str, production: Path) -> list[Obj]:
    return render(production if overlay == "production" else DEPLOY / "overlays" / overlay)


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def pod_specs(objects: list[Obj]) -> list[tuple[str, Obj]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("DaemonSet", "Deployment", "StatefulSet")
    ]


OVERLAYS = ["dev", "production"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_schema(overlay: str, production: Path) -> None:
    objects = rendered(overlay, production)
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
    } <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_base_validates_too() -> None:
    for obj in render(DEPLOY / "base"):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_matches_kubectl(overlay: str, production: Path) -> None:
    path = production if overlay == "production" else DEPLOY / "overlays" / overlay
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    theirs = sorted((_normal(d) for d in yaml.safe_load_all(out) if d), key=_order)
    ours = sorted((_normal(d) for d in rendered(overlay, production)), key=_order)
    assert ours == theirs


def _order(obj: Obj) -> str:
    return json.dumps(obj, sort_keys=True)


def _normal(value: Any) -> Any:
    """Order lists of named items by name (a merge may reorder them; env, containers and ports
    mean the same in any order here) and decode Secret data (kubectl wraps base64 lines)."""
    if isinstance(value, dict):
        if value.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in value["data"].items()}
            value = {**value, "data": data}
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        if all(isinstance(i, dict) and "name" in i for i in items):
            items.sort(key=lambda i: str(i["name"]))
        return items
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_exactly_what_the_backend_calls(overlay: str, production: Path) -> None:
    objects = rendered(overlay, production)
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [o for o in objects if o["kind"] == "Role"]
    assert [r["metadata"]["name"] for r in roles] == ["ember-scheduler"]
    role = roles[0]
    assert role["metadata"]["namespace"] == KubernetesSettings().namespace
    granted = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert "*" not in rule["resources"] + rule["verbs"]
        granted |= {(res, verb) for res in rule["resources"] for verb in rule["verbs"]}
        if rule["resources"] == ["configmaps"]:
            assert rule["resourceNames"] == [KubernetesSettings().owner_configmap]
        else:
            assert "resourceNames" not in rule
    assert granted == set(REQUIRED_PERMISSIONS)
    [binding] = [o for o in objects if o["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == "ember-scheduler"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ember-scheduler", "namespace": "ember-system"}
    ]
    # The gateway and the invokers have no rights and mount no token.
    for name in ("ember-gateway", "ember-invoker"):
        assert find(objects, "ServiceAccount", name)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_platform_pods_are_restricted_and_probed(overlay: str, production: Path) -> None:
    objects = rendered(overlay, production)
    for name, spec in pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["limits"]["memory"], name
            assert "readinessProbe" in container, name
    gateway = find(objects, "Deployment", "ember-gateway")
    assert gateway["spec"]["replicas"] >= 2
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pdb = find(objects, "PodDisruptionBudget", "ember-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    assert gateway["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_network_policy_fences_invoker_pods(production: Path) -> None:
    objects = rendered("dev", production)
    policy = find(objects, "NetworkPolicy", "ember-invokers")
    assert policy["metadata"]["namespace"] == KubernetesSettings().namespace
    assert policy["spec"]["podSelector"]["matchLabels"] == {APP_LABEL: APP}
    [ingress] = policy["spec"]["ingress"]
    [source] = ingress["from"]
    assert source["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ember-system"
    }
    assert source["podSelector"]["matchExpressions"][0]["values"] == [
        "ember-gateway",
        "ember-scheduler",
    ]
    assert ingress["ports"] == [{"protocol": "TCP", "port": KubernetesSettings().port}]
    blocked = policy["spec"]["egress"][1]["to"][0]["ipBlock"]["except"]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(blocked)


def _env(container: Obj, secrets: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet makes it ($(VAR) expanded, fields filled)."""
    env: dict[str, str] = {}
    fields = {"metadata.name": "ember-gateway-5f7d9-abcde", "status.podIP": "10.244.1.7"}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = secrets[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_manifests_settings_are_what_the_processes_read(overlay: str, production: Path) -> None:
    objects = rendered(overlay, production)
    secret = find(objects, "Secret", "ember-secrets")
    secrets = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    scheduler = find(objects, "Deployment", "ember-scheduler")["spec"]["template"]["spec"]
    settings = ServiceSettings.from_env(_env(scheduler["containers"][0], secrets))
    assert settings.kubernetes.namespace == "ember-functions"
    assert settings.kubernetes.generic_pool_size == (1 if overlay == "dev" else 4)
    assert settings.port == scheduler["containers"][0]["ports"][0]["containerPort"]
    assert settings.advertise == f"http://10.244.1.7:{settings.port}"
    assert "\n" not in settings.token
    assert settings.token == secrets["scheduler-token"].strip()
    gateway = find(objects, "Deployment", "ember-gateway")["spec"]["template"]["spec"]
    gw = Settings.from_env(_env(gateway["containers"][0], secrets))
    assert gw.backend == "kubernetes"
    assert gw.pool.generic_pool_size == 0
    assert gw.scheduler_url is None  # looked up in Postgres, where the leader writes it
    assert gw.scheduler_token == settings.token
    assert gw.token == secrets["admin-token"].strip()
    assert gw.gateway_id == "ember-gateway-5f7d9-abcde"
    assert gw.port == gateway["containers"][0]["ports"][0]["containerPort"]
    assert gw.dashboard_bind_port() == gateway["containers"][0]["ports"][1]["containerPort"]
    # Every gateway replica encrypts and decrypts function secrets with the same key.
    Fernet(_env(gateway["containers"][0], secrets)["EMBER_SECRETS_KEY"].strip())
    # Peer replicas send calls to this pod's own address (gateway/routing.py).
    assert gw.routing.enabled
    assert gw.routing.advertise_url == f"http://10.244.1.7:{gw.port}"
    # The invoker pods' ServiceAccount and owner exist where the scheduler looks for them.
    assert find(objects, "ServiceAccount", settings.kubernetes.service_account)
    owner = find(objects, "ConfigMap", settings.kubernetes.owner_configmap)
    assert owner["metadata"]["namespace"] == settings.kubernetes.namespace


def test_invoker_pods_fetch_environments_from_the_cache_on_their_node(production: Path) -> None:
    objects = rendered("dev", production)
    secret = find(objects, "Secret", "ember-secrets")
    secrets = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    cache_pod = find(objects, "DaemonSet", "ember-envcache")["spec"]["template"]["spec"]
    [container] = cache_pod["containers"]
    assert container["command"] == ["python", "-m", "gateway.envcache"]
    # It holds no secret and no rights.
    assert not [e for e in container["env"] if "valueFrom" in e]
    assert cache_pod["automountServiceAccountToken"] is False
    cache = CacheSettings.from_env(_env(container, {}))
    assert container["ports"][0]["containerPort"] == cache.port
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(cache.directory)]
    [volume] = [v for v in cache_pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    # Each pod reaches the cache on its own node; the gateway sends pods there, and the cache
    # asks the gateway Service.
    service = find(objects, "Service", "ember-envcache")
    assert service["spec"]["internalTrafficPolicy"] == "Local"
    [port] = service["spec"]["ports"]
    gateway = find(objects, "Deployment", "ember-gateway")["spec"]["template"]["spec"]
    gw = Settings.from_env(_env(gateway["containers"][0], secrets))
    assert gw.env_url == f"http://ember-envcache.ember-system.svc:{port['port']}"
    gateway_service = find(objects, "Service", "ember-gateway")
    assert gateway_service["spec"]["ports"][0]["port"] == 80
    assert cache.upstream == "http://ember-gateway.ember-system.svc"
    # Invoker pods may reach the cache's port, nothing else of ember-system; only they may.
    policy = find(objects, "NetworkPolicy", "ember-invokers")
    [to_cache] = [r for r in policy["spec"]["egress"] if "namespaceSelector" in r["to"][0]][1:]
    assert to_cache["to"][0]["podSelector"]["matchLabels"] == {APP_LABEL: "ember-envcache"}
    assert to_cache["ports"] == [{"protocol": "TCP", "port": cache.port}]
    fence = find(objects, "NetworkPolicy", "ember-envcache")
    [ingress] = fence["spec"]["ingress"]
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {APP_LABEL: APP}
    assert ingress["ports"] == [{"protocol": "TCP", "port": cache.port}]
    # The invoker pod keeps what it fetched in an emptyDir of its own.
    pod = PodPool(k8s.ApiClient(), KubernetesSettings()).pod_spec()["spec"]
    [invoker] = pod["containers"]
    env_dir = next(e["value"] for e in invoker["env"] if e["name"] == "EMBER_ENV_DIR")
    [mount] = [m for m in invoker["volumeMounts"] if m["mountPath"] == env_dir]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_an_invoker_pod_validates_and_is_restricted() -> None:
    pool = PodPool(k8s.ApiClient(), KubernetesSettings())
    pool._guard.owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "ember-invokers",
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    for spec in (
        pool.pod_spec(),
        pool.pod_spec(
            function="resize", version=2, gateway="gw", memory_bytes=512 << 20, timeout_s=30
        ),
    ):
        kubernetes_validate.validate(spec, K8S_VERSION, strict=True)
        assert spec["spec"]["automountServiceAccountToken"] is False
        assert spec["metadata"]["ownerReferences"][0]["kind"] == "ConfigMap"


def _cmd(dockerfile: Path) -> list[str]:
    [line] = [ln for ln in dockerfile.read_text().splitlines() if ln.startswith("CMD ")]
    command: list[str] = json.loads(line[4:])
    return command


@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_the_invoker_images_run_the_invoker_as_the_tests_do(python: str) -> None:
    dockerfile = ROOT / "runtime-images" / f"invoker-python{python}.Dockerfile"
    text = dockerfile.read_text()
    assert re.search(rf"^FROM python:{re.escape(python)}-slim", text, re.M)
    assert _cmd(dockerfile) == INVOKER_COMMAND  # what tests/k8s/fakeapi's kubelet runs
    assert re.search(r"^USER 10001", text, re.M)  # non-root, as runAsNonRoot requires
    assert "COPY invoker/ " in text
    assert "COPY gateway" not in text
    assert "COPY store" not in text


def test_the_platform_image_holds_every_package_the_project_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    top_level = {name.split(".")[0] for name in packages}
    text = (ROOT / "runtime-images" / "platform.Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", text, re.M))
    assert top_level <= copied, f"platform.Dockerfile does not copy {sorted(top_level - copied)}"
    # Every package is installed (one left out of pyproject would be missing from the image).
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in ROOT.glob("**/__init__.py")
        if p.parts[len(ROOT.parts)] not in {"tests", "bench", "examples", ".venv", "build"}
    }
    assert on_disk <= packages, f"pyproject.toml does not install {sorted(on_disk - packages)}"


def test_the_platform_image_runs_what_the_manifests_and_tests_run(production: Path) -> None:
    dockerfile = ROOT / "runtime-images" / "platform.Dockerfile"
    assert _cmd(dockerfile) == ["python", "-m", "gateway"]
    assert re.search(r"^USER 10001", dockerfile.read_text(), re.M)
    objects = rendered("dev", production)
    commands = {name: spec["containers"][0].get("command") for name, spec in pod_specs(objects)}
    assert commands["ember-gateway"] == ["python", "-m", "gateway"]
    assert commands["ember-scheduler"] == ["python", "-m", "scheduler"]  # as test_platform.py
    assert commands["ember-envcache"] == [
        "python",
        "-m",
        "gateway.envcache",
    ]  # as test_requirements


def test_generated_secrets_reapply_unchanged() -> None:
    """kustomize wraps the base64 of a value over 51 bytes (70 characters); the API server stores it
    unwrapped, so `kubectl apply` would say "configured" on every run (issue 17)."""
    for obj in render(ROOT / "deploy" / "overlays" / "dev"):
        for key, value in (obj.get("data") or {}).items() if obj["kind"] == "Secret" else ():
            assert len(base64.b64decode(value)) <= 51, f"{obj['metadata']['name']}/{key}"
    if shutil.which("kubectl"):
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(ROOT / "deploy" / "overlays" / "dev")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for obj in yaml.safe_load_all(rendered):
            if obj and obj["kind"] == "Secret":
                assert all("\n" not in v for v in obj["data"].values()), obj["metadata"]["name"]
