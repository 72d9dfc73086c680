"""OpenFaaS stack files (stack.yml) as Ember functions: each function with a Python template
and a handler directory becomes a function in the openfaas style (docs/migrating.md,
"OpenFaaS stack files").

    lang python3-http(-debian)          handle(event, context)     style openfaas
    lang python3, python3-flask, ...    handle(req)                style openfaas
    handler ./dir                       deployed as the package `function` (function/handler.py),
                                        as the templates import it; its requirements.txt installed
    configuration.copy                  copied into function/, as faas-cli does
    environment, environment_file       env (the files win, the last one first)
    environment exec_timeout            timeout
    limits (else requests) memory, cpu  memory, cpus
    annotations topic: cron-function    a cron trigger from the schedule annotation
    labels com.openfaas.scale.min/max   policy min_warm / max_instances

Image-only functions, other languages, secrets, other connector topics, other labels and
annotations are listed in the plan's not_mapped with their reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fn.cli.schedules import ScheduleRefused, cron_connector, go_duration_s
from fn.cli.stacks import (
    OUTSIDE,
    Plan,
    PlannedFunction,
    Schedule,
    StackError,
    ember_name,
    outside,
    read_yaml,
)

HTTP_TEMPLATES = frozenset({"python3-http", "python3-http-debian", "python3-http-armhf"})
CLASSIC_TEMPLATES = frozenset(
    {
        "python3", "python", "python3-debian", "python3-armhf", "python-armhf", "python27",
        "python3-flask", "python3-flask-debian", "python3-flask-armhf", "python27-flask",
    }
)  # fmt: skip
PACKAGE = "function"
"""The package the templates import the handler from (`from function import handler`)."""

_SUBSTITUTION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=])([^}]*))?\}")
_MAPPED = frozenset(
    {
        "lang", "handler", "image", "skip_build", "environment", "environment_file",
        "limits", "requests", "annotations", "labels", "secrets",
    }
)  # fmt: skip
_REASONS = {
    "build_options": "Ember installs no system packages (apk, apt); Python packages go in "
    "the handler's requirements.txt",
    "build_args": "Ember builds no image (system packages such as ADDITIONAL_PACKAGE are not "
    "installed; Python packages go in the handler's requirements.txt)",
    "build_secrets": "Ember builds no image",
    "constraints": "Ember places instances itself",
    "namespace": "Ember has no namespaces",
    "fprocess": "Ember calls handle() itself",
}
_SCALE_LABELS = {"com.openfaas.scale.min": "min_warm", "com.openfaas.scale.max": "max_instances"}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|K|M|G|k|m)?")


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}` and `${VAR-default}` replaced from `environ`, as faas-cli
    does before it reads the file (an unset variable becomes empty)."""

    def replace(match: re.Match[str]) -> str:
        value = environ.get(match[1])
        if match[2] in (":-", ":="):
            return value or match[3]
        if match[2] in ("-", "="):
            return match[3] if value is None else value
        return value or ""

    return _SUBSTITUTION.sub(replace, text)


def plan(doc: dict[str, Any], base: Path) -> Plan:
    result = Plan(kind="openfaas")
    config = _dict(doc.get("configuration"))
    templates = config.get("templates")
    if isinstance(templates, list) and templates:
        names = ", ".join(str(_dict(t).get("name", "?")) for t in templates)
        result.skip(
            f"configuration.templates ({names})",
            "Ember builds no templates: a Python handler runs in the openfaas style",
        )
    extra: list[tuple[Path, str]] = []
    copies = config.get("copy")
    for copy in copies if isinstance(copies, list) else []:
        source = base / str(copy)
        if outside(base, source):
            result.skip(f"configuration.copy {copy}", OUTSIDE)
        elif source.exists():
            extra.append((source, f"{PACKAGE}/{Path(str(copy)).as_posix().strip('/')}"))
        else:
            result.skip(f"configuration.copy {copy}", "no such file or directory")
    taken: dict[str, str] = {}
    for key, spec in _dict(doc.get("functions")).items():
        planned = _function(result, str(key), _dict(spec), base, tuple(extra))
        if planned is None:
            continue
        if planned.name in taken:  # (Hello and hello, or 1password-sync and password-sync)
            result.skip(
                str(key),
                f"not deployed: its name on Ember, {planned.name}, is {taken[planned.name]}'s "
                "too; rename one of them",
            )
            continue
        taken[planned.name] = str(key)
        result.functions.append(planned)
    return result


def _function(
    result: Plan, key: str, spec: dict[str, Any], base: Path, extra: tuple[tuple[Path, str], ...]
) -> PlannedFunction | None:
    lang = str(spec.get("lang", "")).strip()
    handler = str(spec.get("handler", "")).strip()
    refusal = _refusal(lang, handler, spec.get("image"), base)
    if refusal:
        result.skip(key, f"not deployed: {refusal}")
        return None
    style: str = "openfaas"
    entry: str | None = "handle"
    if lang not in HTTP_TEMPLATES | CLASSIC_TEMPLATES:
        style, entry = "auto", None
        result.skip(
            f"{key} lang {lang}",
            "not an OpenFaaS Python template Ember knows (python3-http, python3, "
            "python3-flask...): the style is detected from handler.py",
        )
    for prop in spec:
        if prop not in _MAPPED:
            result.skip(f"{key} {prop}", _REASONS.get(prop, "no Ember equivalent"))
    env = _env(result, key, spec, base)
    settings = _settings(result, key, spec, env)
    for secret in spec.get("secrets") or []:
        result.skip(
            f"{key} secret {secret}",
            f"Ember has no secrets yet: /var/openfaas/secrets/{secret} will not exist",
        )
    return PlannedFunction(
        name=ember_name(key),
        origin=key,
        code_dir=base / handler,
        prefix=f"{PACKAGE}/",
        extra=extra,
        filename=f"{PACKAGE}/handler.py",
        entry=entry,
        style=style,
        env=env,
        settings=settings,
        policy=_policy(result, key, spec),
        schedules=_schedules(result, key, spec),
    )


def _refusal(lang: str, handler: str, image: Any, base: Path) -> str | None:
    """Why the function cannot be deployed, or None."""
    if not lang or lang.lower() == "dockerfile" or not handler:
        return (
            f"an image-only function (image {image}, lang {lang or 'none'}); Ember deploys a "
            "Python handler directory (lang python3-http and handler: ./DIR)"
        )
    if not lang.startswith("python"):
        return f"lang {lang}: Ember runs Python functions only"
    if outside(base, base / handler):
        return f"handler {handler} {OUTSIDE}"
    if not (base / handler).is_dir():
        return f"handler {handler}: no such directory next to the stack file"
    if not (base / handler / "handler.py").is_file():
        return f"handler {handler} has no handler.py"
    return None


def _env(result: Plan, key: str, spec: dict[str, Any], base: Path) -> dict[str, str]:
    """environment, then each environment_file over it (the files win, the last one most)."""
    env = {str(k): str(v) for k, v in _dict(spec.get("environment")).items() if _scalar(v)}
    files = spec.get("environment_file")
    for name in files if isinstance(files, list) else []:
        path = base / str(name)
        if outside(base, path):
            result.skip(f"{key} environment_file {name}", OUTSIDE)
            continue
        try:
            doc = read_yaml(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError, StackError) as exc:
            result.skip(f"{key} environment_file {name}", f"not read: {exc}")
            continue
        variables = _dict(_dict(doc).get("environment"))
        env.update({str(k): str(v) for k, v in variables.items() if _scalar(v)})
    return env


def _settings(result: Plan, key: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    settings = {}
    if "exec_timeout" in env:
        seconds = go_duration_s(env["exec_timeout"])
        if seconds:
            settings["timeout"] = f"{seconds:g}s"
        else:
            result.skip(f"{key} exec_timeout {env['exec_timeout']}", "not a duration like 30s")
    limits, requests = _dict(spec.get("limits")), _dict(spec.get("requests"))
    memory = str(limits.get("memory") or requests.get("memory") or "").strip()
    if memory:
        m = _SIZE.fullmatch(memory)
        if m:
            # Docker Swarm writes megabytes as m (docs.openfaas.com/reference/yaml)
            settings["memory"] = m[1] + ("M" if m[2] == "m" else m[2] or "")
        else:
            result.skip(f"{key} memory {memory}", "not a size like 128Mi; Ember's default used")
    cpu = str(limits.get("cpu") or requests.get("cpu") or "").strip()
    if cpu:
        try:
            settings["cpus"] = (
                f"{float(cpu[:-1]) / 1000:g}" if cpu.endswith("m") else f"{float(cpu):g}"
            )
        except ValueError:
            result.skip(f"{key} cpu {cpu}", "not a CPU amount like 100m or 0.5")
    return settings


def _policy(result: Plan, key: str, spec: dict[str, Any]) -> dict[str, int]:
    policy = {}
    for label, value in _dict(spec.get("labels")).items():
        if label in _SCALE_LABELS and str(value).isdigit():
            policy[_SCALE_LABELS[label]] = int(value)
        elif label == "com.openfaas.scale.zero":
            continue  # Ember scales to zero unless a min_warm says otherwise
        else:
            result.skip(f"{key} label {label}", "Ember has no labels")
    if policy.get("max_instances") == 0:
        del policy["max_instances"]
    return policy


def _schedules(result: Plan, key: str, spec: dict[str, Any]) -> tuple[Schedule, ...]:
    annotations = _dict(spec.get("annotations"))
    topics = [t.strip() for t in str(annotations.get("topic", "")).split(",") if t.strip()]
    schedules = []
    for topic in topics:
        if topic != "cron-function":
            result.skip(
                f"{key} topic {topic}",
                "Ember runs no OpenFaaS connectors; publish those messages to an Ember topic "
                f"and subscribe: fn topic create {topic} && "
                f"fn trigger add {ember_name(key)} --topic {topic}",
            )
            continue
        expression = str(annotations.get("schedule", "")).strip()
        if not expression:
            result.skip(f"{key} topic cron-function", "it has no schedule annotation")
            continue
        try:
            cron = cron_connector(expression)
        except ScheduleRefused as exc:
            result.skip(f"{key} schedule", f"no trigger added: {exc}")
            continue
        schedules.append(Schedule(cron=cron, origin=f"cron-connector schedule {expression}"))
    if "schedule" in annotations and "cron-function" not in topics:
        result.skip(
            f"{key} schedule annotation",
            "without topic: cron-function the cron-connector ignores it: no trigger added",
        )
    for annotation in annotations:
        if annotation not in ("topic", "schedule"):
            result.skip(f"{key} annotation {annotation}", "no Ember equivalent")
    return tuple(schedules)


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
