"""`fn apply -f ember.yaml`: Ember's own declarative file of functions (code, settings,
policy, triggers), topics and the default policy, made true on the platform: what is missing is
created, what differs is updated, and with `--prune` what the file no longer names is deleted.
`--dry-run` prints the changes and makes none. Applying the same file twice changes nothing the
second time: a function is deployed again only when its code (the sha256 the platform keeps),
its requirements or a setting differs.

Everything but the default policy is in one namespace: the file's `namespace`, else
`--namespace` (FN_NAMESPACE), else the key's own (`default` for the admin token); a file's
namespace and a different --namespace is an error. `--prune` deletes only in that namespace.

    namespace: team-a                         # (optional)
    topics: [orders.created]
    policy: {keep_alive: 10m}                 # the default policy (optional)
    functions:
      hello:
        path: ./hello                         # a file or a folder, as fn deploy takes
        env: {GREETING: hi}
        timeout: 10s
        memory: 128Mi
        policy: {prewarm: histogram, max_instances: 5}
        triggers:
          - topic: orders.created
          - cron: "*/5 * * * *"
            timezone: Europe/Paris
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import click

from config.units import ConfigError, parse_duration_s, parse_size_bytes
from fn.cli.api import api
from fn.cli.archive import zip_dir
from fn.cli.functions import _default_main, _project_dependencies, _target
from fn.cli.output import emit, fail, json_option

NAMESPACE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

SETTINGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    # file key -> (version field, how the file's value becomes the version's)
    "timeout": ("timeout_s", lambda v: parse_duration_s(v, "timeout")),
    "memory": ("memory_bytes", lambda v: parse_size_bytes(v, "memory")),
    "concurrency": ("concurrency", int),
    "max_attempts": ("max_attempts", int),
    "max_event_age": ("max_event_age_s", lambda v: parse_duration_s(v, "max_event_age")),
    "network": ("network", str),
    "cpus": ("cpus", float),
    "env": ("env", lambda v: {str(k): str(x) for k, x in (v or {}).items()}),
    "preimport": ("preimport", lambda v: v.split(",") if isinstance(v, str) else list(v)),
}
FUNCTION_KEYS = {"path", "handler", "main", "style", "requirements", "policy", "triggers"}
FUNCTION_KEYS |= set(SETTINGS)
POLICY_KEYS = {"prewarm": "prewarm", "keep_alive": "keep_alive_s", "min_warm": "min_warm"}
POLICY_KEYS["max_instances"] = "max_instances"


@dataclass(slots=True)
class Change:
    """One thing to do: `+` create, `~` update, `-` delete, with what differs."""

    sign: str
    what: str
    details: list[str] = field(default_factory=list)
    run: Callable[[], Any] | None = None
    order: int = 0

    def json(self) -> dict[str, Any]:
        action = {"+": "create", "~": "update", "-": "delete"}[self.sign]
        return {"action": action, "what": self.what, "details": self.details}


def load(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    except yaml.YAMLError as exc:
        fail(f"{path} is not valid YAML: {exc}")
    if not isinstance(data, dict) or set(data) - {"namespace", "functions", "topics", "policy"}:
        fail(f"{path}: expected a mapping of namespace, functions, topics and policy")
    if data.get("namespace") is not None and not (
        isinstance(data["namespace"], str) and NAMESPACE.fullmatch(data["namespace"])
    ):
        fail(
            f"{path}: namespace {data['namespace']!r} is not a namespace: 1-40 lowercase "
            "letters, digits and -, starting with a letter"
        )
    functions = data.get("functions") or {}
    if not isinstance(functions, dict):
        fail(f"{path}: functions must be a mapping of NAME: {{path: ...}}")
    for name, spec in functions.items():
        if not isinstance(spec, dict) or "path" not in spec:
            fail(f"{path}: function {name} needs a path (its file or folder)")
        unknown = set(spec) - FUNCTION_KEYS
        if unknown:
            fail(f"{path}: function {name}: unknown keys {sorted(unknown)}")
    if not isinstance(data.get("topics") or [], list):
        fail(f"{path}: topics must be a list of names")
    return data


def deploy_payload(name: str, spec: dict[str, Any], base: Path) -> dict[str, Any]:
    """The deploy request for a function of the file, as `fn deploy PATH` would send it."""
    path = (base / str(spec["path"])).resolve()
    if not path.exists():
        fail(f"function {name}: {path} does not exist")
    target = _target(path, spec.get("handler"), spec.get("main"), spec.get("style"), None, None)
    payload: dict[str, Any] = {"name": name, "style": target.style}
    if target.entry is not None:
        payload["entry"] = target.entry
    requirements = None
    if path.is_dir():
        main_file = target.main or _default_main(path)
        payload["archive"] = base64.b64encode(zip_dir(path)).decode()
        payload["filename"] = main_file
        if (path / "requirements.txt").is_file():
            requirements = (path / "requirements.txt").read_text()
        elif (path / "pyproject.toml").is_file():
            requirements = _project_dependencies(path / "pyproject.toml")
        source_path = path / main_file
    else:
        payload["filename"] = path.name
        source_path = path
    payload["source"] = source_path.read_text()
    if spec.get("requirements") is not None:
        requirements = (base / str(spec["requirements"])).read_text()
    if requirements and any(
        line.strip() and not line.strip().startswith("#") for line in requirements.splitlines()
    ):
        payload["requirements"] = requirements
    for key in SETTINGS:
        if spec.get(key) is not None:
            payload[key] = spec[key]
    return payload


def differences(payload: dict[str, Any], active: dict[str, Any]) -> list[str]:
    """What a deploy of `payload` would change of the active version (empty: nothing)."""
    out = []
    requirements = payload.get("requirements") or ""
    if requirements != (active.get("requirements") or ""):
        out.append("requirements")
    else:
        code = (
            base64.b64decode(payload["archive"])
            if "archive" in payload
            else payload["source"].encode()
        )
        preimport = SETTINGS["preimport"][1](payload.get("preimport") or [])
        if code_digest(code, active.get("environment"), tuple(preimport)) != active["sha256"]:
            out.append("code")
    if payload["filename"] != active["filename"]:
        out.append(f"filename: {active['filename']} -> {payload['filename']}")
    if payload["style"] != "auto" and payload["style"] != active["style"]:
        out.append(f"style: {active['style']} -> {payload['style']}")
    if "entry" in payload and payload["entry"] != active["handler"]:
        out.append(f"handler: {active['handler']} -> {payload['entry']}")
    defaults: dict[str, Any] = {"env": {}, "preimport": []}
    for key, (field_name, convert) in SETTINGS.items():
        raw = payload.get(key, defaults.get(key))
        if raw is None:
            continue  # not in the file: the platform's default, whatever the version has
        try:
            wanted = convert(raw)
        except (ConfigError, TypeError, ValueError) as exc:
            fail(f"function {payload['name']}: {key}: {exc}")
        have = active[field_name]
        if wanted != have and key == "env":  # (values may be secrets: names only)
            changed = sorted(k for k in {*wanted, *have} if wanted.get(k) != have.get(k))
            out.append("env: " + ", ".join(changed) + " changed")
        elif wanted != have:
            out.append(f"{key}: {have} -> {wanted}")
    return out


def code_digest(code: bytes, env_hash: str | None, preimport: tuple[str, ...]) -> str:
    """The sha256 the platform gives a version (store.records.code_digest, which fn may not
    import: tests/unit/test_apply.py checks they agree)."""
    digest = hashlib.sha256(code)
    digest.update(f"\0{env_hash or ''}\0{','.join(preimport)}".encode())
    return digest.hexdigest()


def _policy_body(spec: Any, what: str) -> dict[str, Any]:
    if not isinstance(spec, dict) or set(spec) - set(POLICY_KEYS):
        fail(f"{what}: policy takes {', '.join(POLICY_KEYS)}")
    return dict(spec)


def _policy_changes(name: str, spec: Any, current: dict[str, Any]) -> list[str]:
    """`current["set"]`: what is stored for it (the rest comes from the defaults)."""
    wanted = _policy_body(spec or {}, name)
    stored = current.get("set") or {}
    out = []
    for key, field_name in POLICY_KEYS.items():
        value = wanted.get(key)
        if key == "keep_alive" and value is not None:
            value = 0.0 if value in (0, "0", "0s") else parse_duration_s(value, "keep_alive")
        if key == "prewarm" and value == "off":
            value = "fixed"
        if value != stored.get(field_name):
            out.append(f"policy {key}: {stored.get(field_name, 'default')} -> {value or 'default'}")
    return out


def _trigger_key(t: dict[str, Any]) -> tuple[Any, ...]:
    if t.get("topic") is not None:
        return ("topic", t["topic"])
    if t.get("cron") is not None:
        return ("cron", " ".join(str(t["cron"]).split()), t.get("timezone") or "UTC")
    on = t.get("on") or ["insert", "update", "delete"]
    on = on.split(",") if isinstance(on, str) else on
    database = t.get("database") or "ember"
    parts = urlsplit(database)
    if parts.password is not None:
        database = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
        database = database.geturl()
    return ("table", t.get("table"), tuple(sorted(o.strip().lower() for o in on)), database)


def _describe_trigger(key: tuple[Any, ...]) -> str:
    return f"{key[0]} {' '.join(str(k) for k in key[1:])}"


def plan(ctx: click.Context, data: dict[str, Any], base: Path, prune: bool) -> list[Change]:
    """The changes that make the platform what the file says, in the order to run them."""
    changes: list[Change] = []
    namespace = api(ctx, "GET", "/v1/whoami")["namespace"]
    existing = {f["name"] for f in api(ctx, "GET", "/v1/functions")["functions"]}
    topics = {t["name"] for t in api(ctx, "GET", "/v1/topics")["topics"]}
    # (the admin token lists every namespace's triggers: keep to this one's)
    triggers = [
        t
        for t in api(ctx, "GET", "/v1/triggers")["triggers"]
        if t.get("namespace", "default") == namespace
    ]
    wanted_topics = [str(t) for t in data.get("topics") or []]
    for topic in wanted_topics:
        if topic not in topics:
            run = _later(api, ctx, "PUT", f"/v1/topics/{quote(topic)}")
            changes.append(Change("+", f"topic {topic}", run=run, order=0))
    if data.get("policy") is not None:
        body = _policy_body(data["policy"], "the default policy")
        details = _policy_changes("default", body, api(ctx, "GET", "/v1/policy"))
        if details:
            run = _later(api, ctx, "PUT", "/v1/policy", body)
            changes.append(Change("~", "default policy", details, run, order=1))
    functions: dict[str, Any] = data.get("functions") or {}
    for name, spec in functions.items():
        payload = deploy_payload(name, spec, base)
        n = quote(name)
        deploy = _later(api, ctx, "POST", "/v1/functions", payload)
        if name not in existing:
            changes.append(Change("+", f"function {name}", [], deploy, order=2))
            current_policy: dict[str, Any] = {"set": {}}
        else:
            active = api(ctx, "GET", f"/v1/functions/{n}")["active"]
            details = differences(payload, active)
            if details:
                changes.append(Change("~", f"function {name}", details, deploy, order=2))
            current_policy = api(ctx, "GET", f"/v1/functions/{n}/policy")
        policy_details = _policy_changes(name, spec.get("policy"), current_policy)
        if policy_details:
            body = _policy_body(spec.get("policy") or {}, name)
            unset = [k for k in POLICY_KEYS if body.get(k) is None]
            body = {k: v for k, v in body.items() if v is not None} | {"unset": unset}
            run = (
                _later(api, ctx, "DELETE", f"/v1/functions/{n}/policy")
                if not spec.get("policy")
                else _later(api, ctx, "PUT", f"/v1/functions/{n}/policy", body)
            )
            changes.append(Change("~", f"policy of {name}", policy_details, run, order=3))
        have = {_trigger_key(t): t for t in triggers if t["function"] == name}
        want = {_trigger_key(t): t for t in spec.get("triggers") or []}
        for key, trigger in want.items():
            if key not in have:
                path = f"/v1/functions/{n}/triggers"
                run = _later(api, ctx, "POST", path, trigger)
                changes.append(
                    Change("+", f"trigger of {name}: {_describe_trigger(key)}", [], run, 4)
                )
        for key, trigger in have.items():
            if key not in want:
                run = _later(api, ctx, "DELETE", f"/v1/triggers/{trigger['id']}")
                what = f"trigger {trigger['id']} of {name}: {_describe_trigger(key)}"
                changes.append(Change("-", what, [], run, order=0))
    if prune:
        for name in sorted(existing - set(functions)):
            run = _later(api, ctx, "DELETE", f"/v1/functions/{quote(name)}")
            changes.append(Change("-", f"function {name}", [], run, order=1))
        for topic in sorted(topics - set(wanted_topics)):
            run = _later(api, ctx, "DELETE", f"/v1/topics/{quote(topic)}")
            changes.append(Change("-", f"topic {topic}", [], run, order=2))
    return sorted(changes, key=lambda c: (c.sign != "-", c.order))


def _later(call: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    import functools

    return functools.partial(call, *args)


@click.command()
@click.option(
    "--file",
    "-f",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The file to apply (ember.yaml).",
)
@click.option("--prune", is_flag=True, help="Also delete functions and topics it does not name.")
@click.option("--dry-run", is_flag=True, help="Print the changes; make none.")
@json_option
@click.pass_context
def apply(ctx: click.Context, path: Path, prune: bool, dry_run: bool, as_json: bool) -> None:
    """Make the platform what an ember.yaml says: functions, triggers, topics, policies (in the
    file's namespace, or --namespace)."""
    data = load(path)
    obj = ctx.ensure_object(dict)
    if data.get("namespace") is not None:
        if obj.get("namespace") and obj["namespace"] != data["namespace"]:
            fail(
                f"{path} is for namespace {data['namespace']!r}, not {obj['namespace']!r} "
                "(--namespace or FN_NAMESPACE): drop one of them"
            )
        obj["namespace"] = data["namespace"]
    changes = plan(ctx, data, path.parent, prune)
    if not dry_run and changes:
        _run(changes, quiet=as_json)
    emit(
        changes,
        as_json,
        lambda c: _print(c, dry_run),
        to_json=lambda c: {"dry_run": dry_run, "changes": [x.json() for x in c]},
    )


def _run(changes: list[Change], *, quiet: bool) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, quiet=quiet)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("applying", total=len(changes))
        for change in changes:
            progress.update(task, description=f"{change.sign} {change.what}")
            assert change.run is not None
            change.run()
            progress.advance(task)


def _print(changes: list[Change], dry_run: bool) -> None:
    if not changes:
        click.echo("Nothing to change: the platform is as the file says.")
        return
    colors = {"+": "green", "~": "yellow", "-": "red"}
    for change in changes:
        click.secho(f"{change.sign} {change.what}", fg=colors[change.sign])
        for detail in change.details:
            click.echo(f"    {detail}")
    word = "would be made (dry run: nothing changed)" if dry_run else "made"
    click.echo(f"{len(changes)} change(s) {word}.")
