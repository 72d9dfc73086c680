"""Functions and their versions: deploy (a file, or a directory zipped with its
requirements), build logs, list, versions, rollback, delete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fn.cli.api import api, client, complete_function
from fn.cli.archive import zip_dir
from fn.cli.output import emit, fail, json_option, print_table, progress, shown, wide_option

STYLES = ("ember", "lambda", "openwhisk", "openfaas", "fission", "gcf", "knative", "asgi", "wsgi")
"""The gateway's handler styles (invoker.protocol.STYLES; the CLI speaks to it over HTTP only,
so it keeps its own copy, checked equal by tests/unit/test_styles.py)."""


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f'"{pair}" is not NAME=VALUE', param_hint="--env")
        env[key] = value
    return env


STACK_SUFFIXES = (".yaml", ".yml", ".json")
"""A PATH ending so is a stack file (an AWS SAM template, an OpenFaaS stack file)."""


@dataclass(slots=True, frozen=True)
class _Target:
    style: str
    entry: str | None
    main: str | None
    """The main module's path in a directory (None: for a file, the file itself)."""


def _target(
    path: Path,
    entry: str | None,
    main: str | None,
    style: str | None,
    asgi: str | None,
    wsgi: str | None,
) -> _Target:
    """The deploy's entry point, from --handler, --main, --asgi or --wsgi."""
    if asgi and wsgi:
        fail("give --asgi or --wsgi, not both")
    app = asgi or wsgi
    if app is not None:
        if entry is not None:
            fail("--asgi and --wsgi name the app themselves; leave out --handler")
        module, sep, attr = app.partition(":")
        if not sep or not module or not attr:
            fail(f"--{'asgi' if asgi else 'wsgi'} takes MODULE:APP, like main:app (got {app!r})")
        kind = "asgi" if asgi else "wsgi"
        if style not in (None, kind, "knative"):
            fail(f"--{kind} serves an app in the {kind} style, not {style}")
        return _Target(style or kind, attr, _module_file(path, module.replace(".", "/")))
    if entry is not None and ("." in entry or "/" in entry):
        # Lambda's MODULE.FUNCTION, or pkg/module.function
        module, _, function = entry.rpartition(".")
        if not module or not function:
            fail(f"--handler {entry!r}: give FUNCTION or MODULE.FUNCTION, like app.lambda_handler")
        # Lambda's notation: the function is in the lambda style unless --style says otherwise
        return _Target(style or "lambda", function, _module_file(path, module.replace(".", "/")))
    return _Target(style or "auto", entry, main)


DEFAULT_MAINS = (
    "handler.py",
    "lambda_function.py",
    "main.py",
    "app.py",
    "function/func.py",
    "func.py",
)
"""The main module of a directory deployed without --main or --handler MODULE.FUNCTION:
Ember's, then the Lambda console's, Cloud Functions', SAM's and Knative's (current, then older
templates) defaults."""


def _default_main(root: Path) -> str:
    return next((m for m in DEFAULT_MAINS if (root / m).is_file()), DEFAULT_MAINS[0])


def _module_file(path: Path, module: str) -> str | None:
    """The main file for a module named by --handler/--asgi/--wsgi: its path in a directory;
    for a file deploy, the file must be that module."""
    if path.is_dir():
        if not (path / f"{module}.py").is_file() and (path / module / "__init__.py").is_file():
            return f"{module}/__init__.py"  # a package: --asgi api:app for api/__init__.py
        return f"{module}.py"
    if module.split("/")[-1] != path.stem:
        fail(
            f"the handler names module {module!r} but {path.name} is module {path.stem!r}: "
            "deploy the directory that holds it, or name the file's own module"
        )
    return None


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path), required=False)
@click.option(
    "--file",
    "-f",
    "stack_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The same as PATH (faas-cli's -f stack.yml).",
)
@click.option("--name", help="Function name. Default: the file (or directory) name.")
@click.option(
    "--handler",
    "entry",
    help="The handler: a function name in the file (default: handler, else a name the "
    "style is known by, like lambda_handler or main), or MODULE.FUNCTION / "
    "pkg/module.function as Lambda writes it.",
)
@click.option(
    "--main",
    "main_file",
    help="With a directory: the module that holds the handler, like app.py or "
    "hello_world/app.py. Default: handler.py.",
)
@click.option(
    "--style",
    type=click.Choice(["auto", *STYLES]),
    help="The platform the handler is written for. Default: auto (detected from the "
    "handler's name and parameters, and printed). See docs/migrating.md.",
)
@click.option("--asgi", metavar="MODULE:APP", help="Serve an ASGI app (FastAPI, Starlette...).")
@click.option("--wsgi", metavar="MODULE:APP", help="Serve a WSGI app (Flask, Django...).")
@click.option(
    "--lambda-event",
    type=click.Choice(["v2", "v1", "alb", "url", "payload"]),
    help="Lambda style: the event built from an HTTP request: v2 (API Gateway HTTP API), v1 "
    "(REST API), alb, url (function URL), or payload (the JSON body itself, as aws lambda "
    "invoke sends it). Default: inferred from the fields the code reads.",
)
@click.option(
    "--web",
    type=click.Choice(["true", "raw"]),
    help="OpenWhisk style: true (a web action: query and JSON or form body merged into args, "
    "the default) or raw (the query string and body as __ow_query and __ow_body, as "
    "wsk's --web raw).",
)
@click.option(
    "--requirements",
    "requirements_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A requirements.txt to install for the function (a directory's own "
    "requirements.txt is used without this).",
)
@click.option(
    "--preimport",
    help="Modules to import when an instance starts, before the "
    "function's module, like numpy,pandas.",
)
@click.option(
    "--env",
    "env_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Environment variable for the function (repeatable).",
)
@click.option(
    "--timeout", help="Time limit per call, like 30s or 5m, from 100ms to 1h. Default: 30s."
)
@click.option("--memory", help="Memory limit, like 256Mi or 1Gi. Default: 256Mi.")
@click.option("--concurrency", help="Calls one instance serves at once. Default: 1.")
@click.option(
    "--network",
    type=click.Choice(["egress", "none"]),
    help="egress: the internet, but no address of this host or a private network "
    "(default); none: no network at all.",
)
@click.option("--cpus", help="CPU time per instance, in cores, like 0.5. Default: 1.")
@click.option(
    "--max-attempts", help="Tries of an async call or event before it is dead-lettered. Default: 5."
)
@click.option(
    "--max-event-age",
    help="How long after submission an async call or event may "
    "still be retried, like 1h or 2d. Default: 1d.",
)
@click.option(
    "--auth",
    type=click.Choice(["public", "key"]),
    help="public: anyone may call it; key: calls need an invoker key of its namespace. "
    "Default: the namespace's default (public).",
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NAME",
    help="A secret (fn secret set) whose keys become environment variables (repeatable).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A browser origin allowed to call it, like https://app.example.com, or * (repeatable).",
)
@json_option
@click.pass_context
def deploy(
    ctx: click.Context,
    path: Path | None,
    stack_file: Path | None,
    name: str | None,
    entry: str | None,
    main_file: str | None,
    style: str | None,
    asgi: str | None,
    wsgi: str | None,
    lambda_event: str | None,
    web: str | None,
    requirements_file: Path | None,
    preimport: str | None,
    env_pairs: tuple[str, ...],
    timeout: str | None,
    memory: str | None,
    concurrency: str | None,
    network: str | None,
    cpus: str | None,
    max_attempts: str | None,
    max_event_age: str | None,
    auth: str | None,
    secrets: tuple[str, ...],
    cors_origins: tuple[str, ...],
    as_json: bool,
) -> None:
    """Deploy PATH as a new version, and make it active.

    PATH is a Python file with a handler, or a directory holding handler.py (see --main), other
    modules and files, and optionally a requirements.txt (else the [project] dependencies of
    its pyproject.toml). A .yaml, .yml or .json PATH is an AWS SAM template or an OpenFaaS stack
    file: each of its functions is deployed, with its schedules and routes, and what has no
    Ember equivalent is listed (docs/migrating.md).
    """
    import base64

    if (path is None) == (stack_file is None):
        raise click.UsageError("give the PATH to deploy, or -f FILE (not both)")
    path = path or stack_file
    assert path is not None
    if path.is_file() and path.suffix.lower() in STACK_SUFFIXES:
        from fn.cli.stack_deploy import deploy_stack

        deploy_stack(ctx, path, ctx.params, parse_env(env_pairs))
        return
    target = _target(path, entry, main_file, style, asgi, wsgi)
    payload: dict[str, Any] = {"env": parse_env(env_pairs), "style": target.style}
    if target.entry is not None:
        payload["entry"] = target.entry
    options = {k: v for k, v in (("event", lambda_event), ("web", web)) if v is not None}
    if options:
        payload["style_options"] = options
    requirements = None
    if path.is_dir():
        main_file = target.main or _default_main(path)
        main = path / main_file
        if not main.is_file():
            looked = main_file if target.main else " or ".join(DEFAULT_MAINS)
            fail(
                f"{path} has no {looked}; give the module that holds the handler with --main "
                "(or --handler MODULE.FUNCTION)"
            )
        payload["archive"] = base64.b64encode(zip_dir(path)).decode()
        payload["filename"] = main_file
        if (path / "requirements.txt").is_file():
            requirements = (path / "requirements.txt").read_text()
        elif (path / "pyproject.toml").is_file():
            requirements = _project_dependencies(path / "pyproject.toml")
        source_path = main
        default_name = path.resolve().name
    else:
        source_path = path
        payload["filename"] = path.name
        default_name = path.stem
    try:
        payload["source"] = source_path.read_text()
    except UnicodeDecodeError:
        fail(f"{source_path} is not a UTF-8 text file")
    if requirements_file is not None:
        requirements = requirements_file.read_text()
    if requirements:
        payload["requirements"] = requirements
    payload["name"] = name or default_name.lower().replace("_", "-")
    for key, value in (
        ("timeout", timeout),
        ("memory", memory),
        ("concurrency", concurrency),
        ("max_attempts", max_attempts),
        ("max_event_age", max_event_age),
        ("preimport", preimport),
        ("network", network),
        ("cpus", cpus),
        ("auth", auth),
        ("secrets", list(secrets) or None),
        ("cors_origins", list(cors_origins) or None),
    ):
        if value is not None:
            payload[key] = value
    if requirements and not as_json:
        with progress("Installing the requirements (once per set of requirements)..."):
            version = api(ctx, "POST", "/v1/functions", payload)
    else:
        version = api(ctx, "POST", "/v1/functions", payload)
    emit(version, as_json, lambda v: _print_deployed(v, client(ctx).url))


def _project_dependencies(pyproject: Path) -> str | None:
    """The `[project] dependencies` of a pyproject.toml (Knative's Python templates list theirs
    there), as requirements."""
    import tomllib

    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        fail(f"{pyproject} is not valid TOML: {exc}")
    dependencies = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        fail(f"{pyproject}: [project] dependencies must be a list of requirement strings")
    return "\n".join(dependencies) + "\n" if dependencies else None


def _print_deployed(version: dict[str, Any], url: str) -> None:
    click.echo(
        f"Deployed {version['function']} version {version['version']} "
        f"(sha256 {version['sha256'][:12]})."
    )
    if version.get("style_detected") and (
        version.get("style") != "ember" or version.get("handler") != "handler"
    ):  # Ember's own is said when its handler has another name (a GCF background function?)
        click.echo(
            f"Style: {version['style']} (detected from {version['handler']}; another with --style)"
        )
    if version.get("added_requirements"):
        click.echo(
            "Added to the requirements (the platform it was written for provides them): "
            + ", ".join(version["added_requirements"])
        )
    if version.get("environment"):
        packages = len(version["lock"].splitlines())
        click.echo(
            f"Environment {version['environment'][:12]}: {packages} package(s); "
            f"build output: fn build-logs {version['function']}"
        )
    namespace = version.get("namespace", "default")
    path = version["function"] if namespace == "default" else f"{namespace}/{version['function']}"
    key = "  (with Authorization: Bearer <invoker key>)" if version.get("auth") == "key" else ""
    click.echo(
        f"Call it: fn invoke {version['function']} --data '{{}}'   or   POST {url}/fn/{path}{key}"
    )


@click.command("build-logs")
@click.argument("name", shell_complete=complete_function)
@click.option(
    "--limit",
    "-n",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100),
    help="How many recent builds.",
)
@json_option
@click.pass_context
def build_logs(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """Show the output of NAME's latest requirement builds (failed ones included)."""
    data = api(ctx, "GET", f"/v1/functions/{name}/builds?limit={limit}")
    emit(data, as_json, lambda d: _print_builds(name, d["builds"]))


def _print_builds(name: str, builds: list[dict[str, Any]]) -> None:
    if not builds:
        click.echo(f"{name} has no builds: it was deployed without requirements.")
    for b in builds[::-1]:
        click.echo(
            f"--- build {b['id']} {b['created_at'][:19]} {b['status']} "
            f"({b['duration_s']:.1f}s) environment {b['environment'][:12]}"
        )
        click.echo(shown(b["log"].rstrip("\n")))  # (what the packages' build code printed)


@click.command("list")
@wide_option
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the deployed functions."""
    emit(api(ctx, "GET", "/v1/functions"), as_json, _print_functions)


def _print_functions(data: dict[str, Any]) -> None:
    if not data["functions"]:
        click.echo("No functions yet; deploy one with: fn deploy handler.py")
        return
    print_table(
        ["NAME", "ACTIVE", "LATEST", "VERSIONS", "INSTANCES", "UPDATED"],
        [
            (
                f["name"],
                f["active_version"],
                f["latest_version"],
                f["versions"],
                f["instances"]["total"],
                f["updated_at"][:19],
            )
            for f in data["functions"]
        ],
    )


@click.command()
@click.argument("name", shell_complete=complete_function)
@wide_option
@json_option
@click.pass_context
def versions(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the versions of function NAME, newest first."""
    emit(api(ctx, "GET", f"/v1/functions/{name}/versions"), as_json, _print_versions)


def _print_versions(data: dict[str, Any]) -> None:
    print_table(
        ["VERSION", "ACTIVE", "SHA256", "TIMEOUT", "MEMORY", "CONCURRENCY", "CREATED"],
        [
            (
                v["version"],
                "*" if v["active"] else "",
                v["sha256"][:12],
                f"{v['timeout_s']:g}s",
                f"{v['memory_bytes'] >> 20}Mi",
                v["concurrency"],
                v["created_at"][:19],
            )
            for v in data["versions"]
        ],
    )


@click.command()
@click.argument("name", shell_complete=complete_function)
@click.option(
    "--to",
    type=click.IntRange(min=1),
    help="Version to make active. Default: the one before the active version.",
)
@click.option(
    "--auth",
    type=click.Choice(["public"]),
    help="Allow a rollback that makes a private function public (its earlier version was).",
)
@json_option
@click.pass_context
def rollback(
    ctx: click.Context, name: str, to: int | None, auth: str | None, as_json: bool
) -> None:
    """Make an earlier version of NAME the active one."""
    payload: dict[str, object] = {"to": to}
    if auth is not None:
        payload["auth"] = auth
    data = api(ctx, "POST", f"/v1/functions/{name}/rollback", payload)
    emit(data, as_json, lambda d: click.echo(f"{name} now serves version {d['active_version']}."))


@click.command()
@click.argument("name", shell_complete=complete_function)
@json_option
@click.pass_context
def delete(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete function NAME with all its versions and activation records."""
    data = api(ctx, "DELETE", f"/v1/functions/{name}")
    emit(data, as_json, lambda _: click.echo(f"Deleted {name}."))
