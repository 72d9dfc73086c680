"""AWS SAM templates as Ember functions: each AWS::Serverless::Function (or plain
AWS::Lambda::Function) with a python3.x runtime becomes a function in the lambda style
(docs/migrating.md, "AWS SAM templates").

    Handler module.function / pkg/module.function   relative to CodeUri (a local directory,
                                                    default the template's); its
                                                    requirements.txt is installed
    FunctionName, else the logical id lowercased    the Ember name (ember_name)
    MemorySize (MB), Timeout (s)                    memory, timeout
    Environment.Variables                           env (intrinsics resolved where the
                                                    template alone gives them)
    EventInvokeConfig retries, event age            max_attempts, max_event_age
    ReservedConcurrentExecutions, provisioned       policy max_instances, min_warm
    Events Api / HttpApi / FunctionUrlConfig        routes under /fn/NAME; the event shape
                                                    v1 / v2 (or 1.0 payloads) / url
    Events Schedule / ScheduleV2, and schedule      cron triggers (fn.cli.schedules)
    rules (AWS::Events::Rule, AWS::Scheduler::...)
    Layers                                          files and requirements (fn.cli.sam_layers)
    Globals.Function                                applied to every function

Everything else is listed in the plan's not_mapped with its reason.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fn.cli.cfn import NO_VALUE, Template, Unresolved
from fn.cli.sam_events import SCHEDULE_RESOURCES, plan_events, resource_schedules
from fn.cli.sam_layers import LAYER_TYPES, plan_layers
from fn.cli.stacks import OUTSIDE, Plan, PlannedFunction, ember_name, outside

FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
_PYTHON = re.compile(r"python3(\.\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_MAPPED = frozenset(
    {
        "Handler", "Runtime", "CodeUri", "InlineCode", "MemorySize", "Timeout", "Environment",
        "Events", "FunctionName", "FunctionUrlConfig", "PackageType", "EventInvokeConfig",
        "ReservedConcurrentExecutions", "ProvisionedConcurrencyConfig", "Layers",
    }
)  # fmt: skip
_IGNORED = frozenset(
    {
        "Description", "Tags", "PropagateTags", "Architectures", "AutoPublishAlias",
        "AutoPublishCodeSha256", "AutoPublishAliasAllProperties", "VersionDescription",
    }
)  # fmt: skip
"""Properties without an effect on Ember: every deploy is a new version, any architecture."""
_IAM = "Ember has no IAM roles: give the function AWS credentials with --env if it calls AWS"
_REASONS = {
    "Policies": _IAM,
    "Role": _IAM,
    "AssumeRolePolicyDocument": _IAM,
    "PermissionsBoundary": _IAM,
    "RolePath": _IAM,
    "VpcConfig": "Ember functions reach the internet (--network egress), not a VPC",
    "Tracing": "no X-Ray tracing: see fn logs and the activation records",
    "TracingConfig": "no X-Ray tracing: see fn logs and the activation records",
    "DeadLetterQueue": "failed async calls and events go to Ember's dead letters (fn dlq)",
    "DeadLetterConfig": "failed async calls and events go to Ember's dead letters (fn dlq)",
    "EphemeralStorage": "the size of /tmp is not set per function",
    "FileSystemConfigs": "Ember mounts no EFS file systems",
    "SnapStart": "Ember keeps instances warm instead (fn policy)",
    "DeploymentPreference": "a deploy switches at once (fn rollback undoes it)",
    "LoggingConfig": "logs go to Ember's activation records (fn logs)",
}


@dataclass(slots=True, frozen=True, kw_only=True)
class SamConfig:
    """What samconfig.toml next to the template says for `sam deploy` (default environment)."""

    parameters: Mapping[str, str] = field(default_factory=dict)
    pseudo: Mapping[str, str] = field(default_factory=dict)


def samconfig_parameters(base: Path) -> SamConfig:
    """parameter_overrides, stack_name and region from base/samconfig.toml, if it exists."""
    try:
        data = tomllib.loads((base / "samconfig.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return SamConfig()
    default = data.get("default", {}) if isinstance(data.get("default"), dict) else {}
    merged: dict[str, Any] = {}
    for command in ("global", "deploy"):
        section = default.get(command, {})
        if isinstance(section, dict) and isinstance(section.get("parameters"), dict):
            merged.update(section["parameters"])
    raw = merged.get("parameter_overrides", [])
    try:
        items = shlex.split(raw) if isinstance(raw, str) else [str(i) for i in raw]
    except ValueError:
        items = []
    parameters = {k: v for k, sep, v in (i.partition("=") for i in items) if sep and k}
    pseudo = {}
    if isinstance(merged.get("stack_name"), str):
        pseudo["AWS::StackName"] = merged["stack_name"]
    if isinstance(merged.get("region"), str):
        pseudo["AWS::Region"] = merged["region"]
    return SamConfig(parameters=parameters, pseudo=pseudo)


def plan(doc: dict[str, Any], base: Path, config: SamConfig | None = None) -> Plan:
    config = config or SamConfig()
    tpl = Template(doc, config.parameters, config.pseudo)
    result = Plan(kind="sam")
    globals_ = _dict(doc.get("Globals"))
    shared = _dict(globals_.get("Function"))
    for key in shared:
        if key not in _MAPPED | _IGNORED:
            result.skip(f"Globals.Function.{key}", _REASONS.get(key, "no Ember equivalent"))
    for section in globals_:
        if section != "Function":
            result.skip(f"Globals.{section}", f"settings of {section} resources, not created")
    names: dict[str, str] = {}
    rules: list[tuple[str, str, dict[str, Any]]] = []
    for logical_id, resource in _dict(doc.get("Resources")).items():
        resource = _dict(resource)
        kind = str(resource.get("Type", ""))
        if kind in SCHEDULE_RESOURCES:
            rules.append((logical_id, kind, _dict(resource.get("Properties"))))
            continue
        if kind not in (FUNCTION, LAMBDA_FUNCTION):
            result.skip(f"{logical_id} ({kind})", _resource_reason(kind))
            continue
        if "Condition" in resource:
            try:
                if not tpl.condition(str(resource["Condition"])):
                    condition = resource["Condition"]
                    result.skip(logical_id, f"not deployed: condition {condition} is false")
                    continue
            except Unresolved as exc:
                result.skip(f"{logical_id} Condition", f"deployed anyway: {exc}")
        own = _dict(resource.get("Properties"))
        if kind == LAMBDA_FUNCTION:
            own = _from_cloudformation(own)
        props = _merged(shared, own) if kind == FUNCTION else own
        for key in own:
            if key not in _MAPPED | _IGNORED:
                result.skip(f"{logical_id} {key}", _REASONS.get(key, "no Ember equivalent"))
        planned = _function(result, tpl, logical_id, props, base)
        if planned is None:
            continue
        if planned.name in names:
            result.skip(
                logical_id,
                f"not deployed: its name {planned.name} is {names[planned.name]}'s too; "
                "set a FunctionName",
            )
            continue
        names[planned.name] = logical_id
        result.functions.append(planned)
    _add_rules(result, tpl, rules)
    return result


def _from_cloudformation(props: dict[str, Any]) -> dict[str, Any]:
    """An AWS::Lambda::Function's properties in SAM's terms (Code -> InlineCode or CodeUri)."""
    out = {k: v for k, v in props.items() if k != "Code"}
    code = props.get("Code")
    if isinstance(code, dict) and "ZipFile" in code:
        out["InlineCode"] = code["ZipFile"]
    elif isinstance(code, dict) and "ImageUri" in code:
        out["ImageUri"] = code["ImageUri"]
    elif isinstance(code, dict) and "S3Bucket" in code:
        out["CodeUri"] = {"Bucket": code["S3Bucket"], "Key": code.get("S3Key")}
    elif code is not None:
        out["CodeUri"] = code  # a local path, as `aws cloudformation package` takes it
    return out


def _add_rules(result: Plan, tpl: Template, rules: list[tuple[str, str, dict[str, Any]]]) -> None:
    """EventBridge rules and schedules of the template that run its functions on a schedule."""
    by_origin = {f.origin: i for i, f in enumerate(result.functions)}
    for logical_id, kind, props in rules:
        pairs = resource_schedules(result, tpl, logical_id, kind, props)
        if pairs is None:
            result.skip(
                f"{logical_id} ({kind})", "an EventBridge event pattern: no Ember equivalent"
            )
            continue
        for target, schedule in pairs:
            if target not in by_origin:
                result.skip(f"{logical_id} ({kind})", f"{target} is not deployed: no trigger added")
                continue
            i = by_origin[target]
            result.functions[i] = replace(
                result.functions[i], schedules=(*result.functions[i].schedules, schedule)
            )


def _resource_reason(kind: str) -> str:
    if kind in LAYER_TYPES:
        return "not created: a function that lists it gets its files, if they are local"
    if kind in ("AWS::Serverless::Api", "AWS::Serverless::HttpApi", "AWS::ApiGateway::RestApi"):
        return (
            "not created: the functions' routes are served under /fn/NAME (see above), "
            "without its authorizers, CORS or stages"
        )
    return "not created: Ember does not create AWS resources"


def _merged(shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A function's properties over Globals.Function (environment variables merged)."""
    props = {**shared, **own}
    shared_vars = _dict(_dict(shared.get("Environment")).get("Variables"))
    own_vars = _dict(_dict(own.get("Environment")).get("Variables"))
    if shared_vars and own_vars:
        props["Environment"] = {"Variables": {**shared_vars, **own_vars}}
    if isinstance(shared.get("Layers"), list) and isinstance(own.get("Layers"), list):
        props["Layers"] = [*shared["Layers"], *own["Layers"]]  # lists add up, as SAM does
    return props


def _function(
    result: Plan, tpl: Template, logical_id: str, props: dict[str, Any], base: Path
) -> PlannedFunction | None:
    try:
        return _planned(result, tpl, logical_id, props, base)
    except (_NotDeployed, Unresolved) as exc:
        result.skip(logical_id, f"not deployed: {exc}")
    return None


class _NotDeployed(Exception):
    pass


def _planned(
    result: Plan, tpl: Template, logical_id: str, props: dict[str, Any], base: Path
) -> PlannedFunction:
    name = ember_name(logical_id)
    if "FunctionName" in props:
        try:
            name = ember_name(tpl.text(props["FunctionName"]))
        except Unresolved as exc:
            result.skip(f"{logical_id} FunctionName", f"named {name} instead: {exc}")
    if str(props.get("PackageType", "Zip")) == "Image" or "ImageUri" in props:
        raise _NotDeployed("a container image function (PackageType: Image); Ember deploys code")
    runtime = tpl.text(props["Runtime"]) if "Runtime" in props else ""
    if not _PYTHON.fullmatch(runtime):
        raise _NotDeployed(
            f"Runtime {runtime or '(none)'}: Ember runs Python functions (python3.x) only"
        )
    if "Handler" not in props:
        raise _NotDeployed("it has no Handler")
    handler = tpl.text(props["Handler"])
    module, _, entry = handler.rpartition(".")
    path = module.replace(".", "/")
    if not _IDENTIFIER.fullmatch(entry) or not all(
        _IDENTIFIER.fullmatch(p) for p in path.split("/")
    ):
        raise _NotDeployed(f"Handler {handler!r}: expected module.function or pkg/module.function")
    filename = f"{path}.py"
    code_dir, source = _code(tpl, props, base, filename)
    planned_events = plan_events(result, tpl, logical_id, name, props)
    layers = plan_layers(result, tpl, logical_id, props.get("Layers"), base, tpl.resources)
    return PlannedFunction(
        name=name,
        origin=logical_id,
        code_dir=code_dir,
        source=source,
        filename=filename,
        extra=layers.trees if code_dir is not None else (),
        requirements=layers.requirements,
        entry=entry,
        style="lambda",
        style_options=planned_events.style_options,
        env=_env(result, tpl, logical_id, props),
        settings=_settings(result, tpl, logical_id, props),
        policy=_policy(result, tpl, logical_id, props),
        schedules=planned_events.schedules,
        routes=planned_events.routes,
    )


def _code(
    tpl: Template, props: dict[str, Any], base: Path, filename: str
) -> tuple[Path | None, str | None]:
    if "InlineCode" in props:
        if "/" in filename:
            raise _NotDeployed(f"InlineCode is one module; the Handler names {filename}")
        return None, tpl.text(props["InlineCode"])
    raw = props.get("CodeUri", ".")
    if isinstance(raw, dict) and not any(k == "Ref" or k.startswith("Fn::") for k in raw):
        raise _NotDeployed(
            f"CodeUri is in S3 ({raw}); download and unzip it, then point CodeUri at the directory"
        )
    uri = tpl.text(raw)
    if uri.startswith("s3://"):
        raise _NotDeployed(
            f"CodeUri {uri} is in S3; download and unzip it, then point CodeUri at the directory"
        )
    code_dir = base / uri
    if outside(base, code_dir):
        raise _NotDeployed(f"CodeUri {uri} {OUTSIDE}")
    if code_dir.is_file():
        raise _NotDeployed(f"CodeUri {uri} is a file; unzip it and point CodeUri at the directory")
    if not code_dir.is_dir():
        raise _NotDeployed(f"CodeUri {uri}: no such directory next to the template")
    if not (code_dir / filename).is_file():
        raise _NotDeployed(f"the Handler's module {filename} is not in CodeUri {uri}")
    return code_dir, None


def _env(result: Plan, tpl: Template, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    env = {}
    variables = _dict(_dict(props.get("Environment")).get("Variables"))
    for key, value in variables.items():
        try:
            resolved = tpl.resolve(value)
            if resolved is NO_VALUE:
                continue
            env[str(key)] = tpl.text(value)
        except Unresolved as exc:
            result.skip(f"{logical_id} env {key}", f"{exc}; give it with --env {key}=VALUE")
    return env


def _number(tpl: Template, value: Any, what: str) -> float:
    text = tpl.text(value)
    try:
        return float(text)
    except ValueError:
        raise Unresolved(f"{what} {text!r} is not a number") from None


def _settings(
    result: Plan, tpl: Template, logical_id: str, props: dict[str, Any]
) -> dict[str, str]:
    settings = {}
    invoke = _dict(props.get("EventInvokeConfig"))
    conversions: tuple[tuple[str, Any, str, Callable[[float], str]], ...] = (
        ("MemorySize", props.get("MemorySize"), "memory", lambda n: f"{n:g}Mi"),
        ("Timeout", props.get("Timeout"), "timeout", lambda n: f"{n:g}s"),
        (
            "EventInvokeConfig.MaximumRetryAttempts",
            invoke.get("MaximumRetryAttempts"),
            "max_attempts",
            lambda n: str(int(n) + 1),
        ),
        (
            "EventInvokeConfig.MaximumEventAgeInSeconds",
            invoke.get("MaximumEventAgeInSeconds"),
            "max_event_age",
            lambda n: f"{n:g}s",
        ),
    )
    for where, raw, setting, convert in conversions:
        if raw is not None:
            try:
                settings[setting] = convert(_number(tpl, raw, where))
            except Unresolved as exc:
                result.skip(f"{logical_id} {where}", f"Ember's default used: {exc}")
    if "DestinationConfig" in invoke:
        result.skip(
            f"{logical_id} EventInvokeConfig.DestinationConfig",
            "Ember sends no results on; failures go to its dead letters (fn dlq)",
        )
    return settings


def _policy(result: Plan, tpl: Template, logical_id: str, props: dict[str, Any]) -> dict[str, int]:
    """ReservedConcurrentExecutions -> max_instances (one call per instance, as on Lambda),
    provisioned concurrency -> min_warm."""
    policy = {}
    provisioned = _dict(props.get("ProvisionedConcurrencyConfig"))
    for where, raw, setting in (
        (
            "ReservedConcurrentExecutions",
            props.get("ReservedConcurrentExecutions"),
            "max_instances",
        ),
        (
            "ProvisionedConcurrencyConfig",
            provisioned.get("ProvisionedConcurrentExecutions"),
            "min_warm",
        ),
    ):
        if raw is None:
            continue
        try:
            count = int(_number(tpl, raw, where))
        except Unresolved as exc:
            result.skip(f"{logical_id} {where}", f"not mapped: {exc}")
            continue
        if setting == "max_instances" and count < 1:
            result.skip(
                f"{logical_id} {where}", f"{count} (the function is throttled): no equivalent"
            )
            continue
        policy[setting] = count
    return policy


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
