"""`fn deploy STACKFILE`: each function of the file's plan (fn.cli.stacks) deployed through
/v1/functions, its policy set, its schedules added as cron triggers unless the function
already has them (a re-deploy adds none twice), then one report: the functions deployed with
their URLs, the triggers, and what was not mapped. Exits 1 when nothing was deployed or
anything failed.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from fn.cli import openfaas_stack, sam
from fn.cli.api import client, error_text
from fn.cli.archive import zip_dir
from fn.cli.output import fail, shown
from fn.cli.stacks import KIND_NAMES, Plan, PlannedFunction, StackError, kind_of, read_yaml
from fn.client import Client, ClientError

_PER_FUNCTION = {
    "name": "--name",
    "entry": "--handler",
    "main_file": "--main",
    "style": "--style",
    "asgi": "--asgi",
    "wsgi": "--wsgi",
    "lambda_event": "--lambda-event",
    "requirements_file": "--requirements",
}
"""Options of `fn deploy` a stack file sets per function itself."""
_FOR_ALL = (
    "timeout", "memory", "concurrency", "max_attempts", "max_event_age", "preimport",
    "network", "cpus",
)  # fmt: skip
"""Options that, given, apply to every function of the file (over what the file says)."""


@dataclass(slots=True, kw_only=True)
class Report:
    file: str
    kind: str
    functions: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    other_triggers: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    not_mapped: list[dict[str, str]] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "functions": self.functions,
            "triggers": self.triggers,
            "other_triggers": self.other_triggers,
            "failed": self.failed,
            "not_mapped": self.not_mapped,
        }


def load_plan(path: Path, environ: Mapping[str, str]) -> Plan:
    """The plan of a stack file; StackError when it is not one."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise StackError(f"{path} is not a UTF-8 text file") from None
    doc = read_yaml(text, str(path))
    kind = kind_of(doc)
    if kind == "openfaas":
        # faas-cli substitutes ${VAR} and ${VAR:-default} in the text before reading it
        doc = read_yaml(openfaas_stack.substitute(text, environ), str(path))
        return openfaas_stack.plan(doc, path.parent)
    if kind == "sam":
        return sam.plan(doc, path.parent, sam.samconfig_parameters(path.parent))
    raise StackError(
        f"{path} is neither an AWS SAM template (Transform: AWS::Serverless-2016-10-31, with "
        "AWS::Serverless::Function resources) nor an OpenFaaS stack file (provider: openfaas, "
        "and functions:); to deploy a function, give its .py file or its directory"
    )


def deploy_stack(
    ctx: click.Context, path: Path, params: dict[str, Any], env: dict[str, str]
) -> None:
    """Deploy the stack file at `path`; `params` are `fn deploy`'s options, `env` its --env."""
    refused = [flag for key, flag in _PER_FUNCTION.items() if params.get(key) is not None]
    if refused:
        fail(
            f"{', '.join(refused)} cannot be given with a stack file: {path.name} names each "
            "function's name, handler and files itself"
        )
    as_json = bool(params.get("as_json"))
    overrides = {k: params[k] for k in _FOR_ALL if params.get(k) is not None}
    try:
        plan = load_plan(path, os.environ)
    except StackError as exc:
        fail(str(exc))
    report = Report(
        file=str(path),
        kind=plan.kind,
        not_mapped=[{"what": u.what, "reason": u.reason} for u in plan.not_mapped],
    )
    api = client(ctx)
    for planned in plan.functions:
        _deploy_one(api, planned, env, overrides, report, as_json)
    if as_json:
        click.echo(_dumps(report.json()))
    else:
        _print_rest(report)
    if not report.functions:
        fail(
            f"nothing in {path} was deployed ({KIND_NAMES[plan.kind]}: "
            f"{len(plan.functions)} Python function(s) found"
            + (", see above)" if plan.functions or plan.not_mapped else ")")
        )
    if report.failed:
        failed = ", ".join(f["function"] for f in report.failed)
        fail(
            f"{len(report.failed)} of {len(plan.functions)} function(s) failed: {failed}; see above"
        )


def payload(
    planned: PlannedFunction, env: dict[str, str], overrides: dict[str, Any]
) -> dict[str, Any]:
    """The /v1/functions request for one function of the plan."""
    body: dict[str, Any] = {
        "name": planned.name,
        "style": planned.style,
        "filename": planned.filename,
        "env": {**planned.env, **env},
        **planned.settings,
        **overrides,
    }
    if planned.entry is not None:
        body["entry"] = planned.entry
    if planned.style_options:
        body["style_options"] = dict(planned.style_options)
    if planned.code_dir is None:
        body["source"] = planned.source
        return body
    body["archive"] = base64.b64encode(
        zip_dir(planned.code_dir, planned.prefix, planned.extra)
    ).decode()
    body["source"] = (planned.code_dir / planned.filename.removeprefix(planned.prefix)).read_text()
    listed = planned.code_dir / "requirements.txt"
    own = listed.read_text() if listed.is_file() else ""
    requirements = "\n".join(
        line for line in (own.rstrip("\n"), *planned.requirements) if line.strip()
    )
    if requirements:
        body["requirements"] = requirements + "\n"
    return body


def _deploy_one(
    api: Client,
    planned: PlannedFunction,
    env: dict[str, str],
    overrides: dict[str, Any],
    report: Report,
    as_json: bool,
) -> None:
    try:
        body = payload(planned, env, overrides)
    except (OSError, UnicodeDecodeError) as exc:
        return _failed(report, planned, f"its files cannot be read: {exc}", as_json)
    if body.get("requirements") and not as_json:
        click.echo(f"Installing the requirements of {planned.name} (once per set)...", err=True)
    try:
        version = api.api("POST", "/v1/functions", body)
    except ClientError as exc:
        return _failed(report, planned, error_text(exc), as_json)
    base = f"{api.url}/fn/{planned.name}"
    deployed = {
        "name": version["function"],
        "from": planned.origin,
        "version": version["version"],
        "sha256": version["sha256"],
        "style": version["style"],
        "style_options": version.get("style_options") or {},
        "url": base,
        "routes": [
            {"method": r.method, "path": r.path, "url": base + r.path, "from": r.origin}
            for r in planned.routes
        ],
        "policy": dict(planned.policy),
    }
    report.functions.append(deployed)
    if not as_json:
        _print_function(deployed)
    try:
        if planned.policy:
            api.api("PUT", f"/v1/functions/{quote(planned.name)}/policy", dict(planned.policy))
        _schedules(api, planned, report)
    except ClientError as exc:
        _failed(report, planned, error_text(exc), as_json, deployed=True)
    return None


def _schedules(api: Client, planned: PlannedFunction, report: Report) -> None:
    """Add the planned schedules the function does not have yet; report the cron triggers it
    has that the file does not say (kept: they may have been added by hand)."""
    existing = api.api("GET", f"/v1/triggers?function={quote(planned.name)}")["triggers"]
    crons = {
        (" ".join(t["cron"].split()), t["timezone"]): t for t in existing if t["kind"] == "cron"
    }
    wanted = set()
    for schedule in planned.schedules:
        key = (" ".join(schedule.cron.split()), schedule.timezone)
        wanted.add(key)
        trigger = crons.get(key)
        status = "exists"
        if trigger is None:
            body = {"cron": schedule.cron, "timezone": schedule.timezone}
            trigger = api.api("POST", f"/v1/functions/{quote(planned.name)}/triggers", body)
            crons[key] = trigger
            status = "added"
        report.triggers.append(
            {
                "id": trigger["id"],
                "function": planned.name,
                "cron": trigger["cron"],
                "timezone": trigger["timezone"],
                "from": schedule.origin,
                "status": status,
            }
        )
    for key, trigger in crons.items():
        if key not in wanted:
            report.other_triggers.append(
                {
                    "id": trigger["id"],
                    "function": planned.name,
                    "cron": trigger["cron"],
                    "timezone": trigger["timezone"],
                }
            )


def _failed(
    report: Report, planned: PlannedFunction, error: str, as_json: bool, *, deployed: bool = False
) -> None:
    report.failed.append({"function": planned.name, "from": planned.origin, "error": error})
    if not as_json:
        what = "its triggers or policy failed" if deployed else "not deployed"
        who = (
            planned.name if planned.origin == planned.name else f"{planned.origin} ({planned.name})"
        )
        click.echo(shown(f"fn: {who}: {what}: {error}", err=True), err=True)


def _print_function(f: dict[str, Any]) -> None:
    origin = "" if f["from"] == f["name"] else f", from {f['from']}"
    click.echo(
        f"Deployed {f['name']} version {f['version']} (sha256 {f['sha256'][:12]}), "
        f"style {f['style']}{origin}."
    )
    for route in f["routes"]:
        shown = f"{route['method']} {route['path'] or '/*'}"
        click.echo(f"  {shown} ({route['from']}): {route['url']}")
    if not f["routes"]:
        click.echo(f"  URL: {f['url']} (and its sub-paths)")
    if f["policy"]:
        settings = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in sorted(f["policy"].items()))
        click.echo(f"  Policy: {settings}")


def _print_rest(report: Report) -> None:
    if report.triggers or report.other_triggers:
        click.echo("Triggers:")
    for t in report.triggers:
        word = "Added" if t["status"] == "added" else "Kept"
        tail = "" if t["status"] == "added" else ", already there"
        click.echo(
            f'  {word} trigger {t["id"]}: {t["function"]} runs on cron "{t["cron"]}" '
            f"{t['timezone']} ({t['from']}{tail})."
        )
    for t in report.other_triggers:
        click.echo(
            f'  Trigger {t["id"]} of {t["function"]} (cron "{t["cron"]}" {t["timezone"]}) is '
            f"not in the file: kept; delete it with: fn trigger delete {t['id']}"
        )
    if report.not_mapped:
        click.echo("Not mapped:")
    for item in report.not_mapped:
        click.echo(f"  - {item['what']}: {item['reason']}")


def _dumps(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True)
