"""`fn`: the command line of Ember.

Human-readable output by default, `--json` for scripts; exit 1 when the platform says no,
2 on a usage error. Every option that has an environment variable shows it in `--help`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from fn.client import Client, ClientError, Reply, state_dir

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(
        func
    )


def _client(ctx: click.Context) -> Client:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    return Client(obj.get("url"), obj.get("token"))


def emit(
    data: T,
    as_json: bool,
    render: Callable[[T], None],
    *,
    to_json: Callable[[T], Any] | None = None,
) -> None:
    """Print a command's result: as JSON with --json, else through `render` for people.

    `to_json` shapes the JSON when it is not `data` itself; it runs only with --json.
    """
    if as_json:
        shaped = data if to_json is None else to_json(data)
        click.echo(json.dumps(shaped, indent=2, sort_keys=True))
    else:
        render(data)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=True).print(table)


def _fail(message: str) -> NoReturn:
    click.echo(f"fn: {message}", err=True)
    raise SystemExit(1)


def _api(ctx: click.Context, method: str, path: str, payload: Any = None) -> Any:
    try:
        return _client(ctx).api(method, path, payload)
    except ClientError as exc:
        details = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
        extra = ""
        if details.get("code") == "syntax_error" and details.get("text"):
            extra = (
                "\n    "
                + details["text"]
                + (
                    "\n    " + " " * max(0, (details.get("offset") or 1) - 1) + "^"
                    if details.get("offset")
                    else ""
                )
            )
        elif details.get("traceback"):
            extra = "\n" + details["traceback"].rstrip()
        _fail(str(exc) + extra)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="FN_URL",
    show_envvar=True,
    help="Gateway URL. Default: the one `fn up` wrote in the state dir.",
)
@click.option(
    "--token",
    envvar="FN_TOKEN",
    show_envvar=True,
    help="Admin API token. Default: the one `fn up` wrote in the state dir.",
)
@click.version_option(package_name="ember-faas")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Ember: deploy a Python file and call it over HTTP."""
    ctx.ensure_object(dict).update(url=url, token=token)


@cli.command()
@click.option(
    "--host",
    envvar="FN_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="FN_PORT",
    show_envvar=True,
    default=8080,
    show_default=True,
    type=int,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--state-dir",
    envvar="FN_STATE_DIR",
    show_envvar=True,
    type=click.Path(),
    help="Token, embedded Postgres data, gateway address. "
    "Default: $XDG_STATE_HOME/ember or ~/.local/state/ember.",
)
@click.option(
    "--keep-alive",
    envvar="FN_KEEP_ALIVE",
    show_envvar=True,
    default="10m",
    show_default=True,
    help="Idle time before an instance stops (scale to zero).",
)
@click.option(
    "--generic-pool",
    envvar="FN_GENERIC_POOL",
    show_envvar=True,
    default=2,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Prewarmed generic instances kept ready for cold starts.",
)
@click.option(
    "--max-body",
    envvar="FN_MAX_BODY",
    show_envvar=True,
    default="6Mi",
    show_default=True,
    help="Largest request body accepted.",
)
@click.option(
    "--isolation",
    envvar="FN_ISOLATION",
    show_envvar=True,
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "strict", "off"]),
    help="Sandboxing of instances: auto uses what this host allows and says what is "
    "off; strict refuses to start without every protection (docs/security.md).",
)
def up(
    host: str,
    port: int,
    state_dir: str | None,
    keep_alive: str,
    generic_pool: int,
    max_body: str,
    isolation: str,
) -> None:
    """Run the platform on this machine (embedded Postgres unless DATABASE_URL is set).

    Stops on Ctrl-C. The admin token is kept in the state dir, where fn finds it.
    """
    env = dict(
        os.environ,
        FN_HOST=host,
        FN_PORT=str(port),
        FN_KEEP_ALIVE=keep_alive,
        FN_GENERIC_POOL=str(generic_pool),
        FN_MAX_BODY=max_body,
        FN_ISOLATION=isolation,
    )
    if state_dir:
        env["FN_STATE_DIR"] = str(Path(state_dir).absolute())
    sys.stdout.flush()
    # -P: the directory fn up runs from is not put on the platform's sys.path.
    os.execve(sys.executable, [sys.executable, "-P", "-m", "gateway"], env)


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f'"{pair}" is not NAME=VALUE', param_hint="--env")
        env[key] = value
    return env


_SKIPPED = frozenset({"__pycache__", "venv", ".venv", "node_modules"})


def _zip_dir(root: Path) -> bytes:
    """The function's directory as a zip: hidden files, caches and virtualenvs left out, and
    requirements.txt (sent as the requirements)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if (
                any(part.startswith(".") or part in _SKIPPED for part in rel.parts)
                or path.is_symlink()
                or not path.is_file()
                or path.suffix == ".pyc"
                or rel == Path("requirements.txt")
            ):
                continue
            info = zipfile.ZipInfo(rel.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16  # fixed: the same files give the same sha256
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Function name. Default: the file (or directory) name.")
@click.option(
    "--handler",
    "entry",
    default="handler",
    show_default=True,
    help="Name of the handler function in the file.",
)
@click.option(
    "--main",
    "main_file",
    default="handler.py",
    show_default=True,
    help="With a directory: the module that holds the handler.",
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
@click.option("--timeout", help="Time limit per call, like 30s or 5m. Default: 30s.")
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
@json_option
@click.pass_context
def deploy(
    ctx: click.Context,
    path: Path,
    name: str | None,
    entry: str,
    main_file: str,
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
    as_json: bool,
) -> None:
    """Deploy PATH as a new version, and make it active.

    PATH is a Python file with a handler, or a directory holding handler.py (see --main), other
    modules and files, and optionally a requirements.txt.
    """
    import base64

    payload: dict[str, Any] = {"entry": entry, "env": _parse_env(env_pairs)}
    requirements = None
    if path.is_dir():
        main = path / main_file
        if not main.is_file():
            _fail(f"{path} has no {main_file}; give the module that holds the handler with --main")
        payload["archive"] = base64.b64encode(_zip_dir(path)).decode()
        payload["filename"] = main_file
        if (path / "requirements.txt").is_file():
            requirements = (path / "requirements.txt").read_text()
        source_path = main
        default_name = path.resolve().name
    else:
        source_path = path
        payload["filename"] = path.name
        default_name = path.stem
    try:
        payload["source"] = source_path.read_text()
    except UnicodeDecodeError:
        _fail(f"{source_path} is not a UTF-8 text file")
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
    ):
        if value is not None:
            payload[key] = value
    if requirements and not as_json:
        click.echo("Installing the requirements (once per set of requirements)...", err=True)
    version = _api(ctx, "POST", "/v1/functions", payload)
    emit(version, as_json, lambda v: _print_deployed(v, _client(ctx).url))


def _print_deployed(version: dict[str, Any], url: str) -> None:
    click.echo(
        f"Deployed {version['function']} version {version['version']} "
        f"(sha256 {version['sha256'][:12]})."
    )
    if version.get("environment"):
        packages = len(version["lock"].splitlines())
        click.echo(
            f"Environment {version['environment'][:12]}: {packages} package(s); "
            f"build output: fn build-logs {version['function']}"
        )
    click.echo(
        f"Call it: fn invoke {version['function']} --data '{{}}'   or   "
        f"POST {url}/fn/{version['function']}"
    )


@cli.command("build-logs")
@click.argument("name")
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
    data = _api(ctx, "GET", f"/v1/functions/{name}/builds?limit={limit}")
    emit(data, as_json, lambda d: _print_builds(name, d["builds"]))


def _print_builds(name: str, builds: list[dict[str, Any]]) -> None:
    if not builds:
        click.echo(f"{name} has no builds: it was deployed without requirements.")
    for b in builds[::-1]:
        click.echo(
            f"--- build {b['id']} {b['created_at'][:19]} {b['status']} "
            f"({b['duration_s']:.1f}s) environment {b['environment'][:12]}"
        )
        click.echo(b["log"].rstrip("\n"))


def _read_data(data: str | None, content_type: str | None) -> tuple[bytes | None, str | None]:
    """The body given by --data (JSON text, @FILE or - for stdin) and its content type."""
    body: bytes | None = None
    if data is not None:
        if data == "-":
            body = sys.stdin.buffer.read()
        elif data.startswith("@"):
            try:
                body = Path(data[1:]).read_bytes()
            except OSError as exc:
                _fail(f"cannot read {data[1:]}: {exc.strerror}")
        else:
            body = data.encode()
        if content_type is None and body is not None:
            try:
                json.loads(body)
                content_type = "application/json"
            except ValueError:
                content_type = "application/octet-stream"
    return body, content_type


@cli.command()
@click.argument("name")
@click.option("--data", "-d", help="Request body: JSON text, @FILE, or - for stdin.")
@click.option("--content-type", help="Default: application/json when --data is valid JSON.")
@click.option(
    "--async",
    "is_async",
    is_flag=True,
    help="Queue the call and print its activation id at once (see: fn activation).",
)
@click.option(
    "--idempotency-key",
    help="With --async: a repeat with the same key returns the "
    "first call's activation instead of running again.",
)
@json_option
@click.pass_context
def invoke(
    ctx: click.Context,
    name: str,
    data: str | None,
    content_type: str | None,
    is_async: bool,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Call function NAME (NAME:VERSION pins a version) and print its response."""
    body, content_type = _read_data(data, content_type)
    if is_async:
        headers = {"Prefer": "respond-async"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            reply = _client(ctx).invoke(name, body, content_type, headers)
        except ClientError as exc:
            _fail(str(exc))
        try:
            answer = reply.json()
        except ValueError:
            answer = {}
        if reply.status != 202:
            from fn.client import error_message

            _fail(error_message(reply.status, answer))
        emit(answer, as_json, _print_queued)
        return
    try:
        reply = _client(ctx).invoke(name, body, content_type)
    except ClientError as exc:
        _fail(str(exc))
    emit(
        reply,
        as_json,
        lambda r: _print_reply(name, r),
        to_json=lambda r: {
            "status": r.status,
            "activation_id": r.headers.get("x-ember-activation-id"),
            "body": _decoded_body(r),
        },
    )
    if reply.status >= 400:
        raise SystemExit(1)


def _print_queued(answer: dict[str, Any]) -> None:
    word = "Queued" if answer["status"] == "accepted" else "Already queued"
    click.echo(f"{word}: activation {answer['activation_id']}")
    click.echo(f"Follow it: fn activation {answer['activation_id']} --wait")


def _decoded_body(reply: Reply) -> Any:
    try:
        return reply.json()
    except ValueError:
        return reply.body.decode(errors="replace")


def _print_reply(name: str, reply: Reply) -> None:
    """The body as it came on success (bytes, not re-encoded); the error on stderr otherwise."""
    if reply.status < 400:
        sys.stdout.buffer.write(reply.body)
        if not reply.body.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        return
    activation = reply.headers.get("x-ember-activation-id")
    try:
        message = reply.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = reply.body.decode(errors="replace")
    suffix = (
        f" (activation {activation}; see: fn logs {name.split(':')[0]} --activation {activation})"
        if activation
        else ""
    )
    click.echo(f"fn: HTTP {reply.status}: {message}{suffix}", err=True)


@cli.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the deployed functions."""
    emit(_api(ctx, "GET", "/v1/functions"), as_json, _print_functions)


def _print_functions(data: dict[str, Any]) -> None:
    if not data["functions"]:
        click.echo("No functions yet; deploy one with: fn deploy handler.py")
        return
    _table(
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


@cli.command()
@click.argument("name")
@json_option
@click.pass_context
def versions(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the versions of function NAME, newest first."""
    emit(_api(ctx, "GET", f"/v1/functions/{name}/versions"), as_json, _print_versions)


def _print_versions(data: dict[str, Any]) -> None:
    _table(
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


@cli.command()
@click.argument("name")
@click.option(
    "--to",
    type=click.IntRange(min=1),
    help="Version to make active. Default: the one before the active version.",
)
@json_option
@click.pass_context
def rollback(ctx: click.Context, name: str, to: int | None, as_json: bool) -> None:
    """Make an earlier version of NAME the active one."""
    data = _api(ctx, "POST", f"/v1/functions/{name}/rollback", {"to": to})
    emit(data, as_json, lambda d: click.echo(f"{name} now serves version {d['active_version']}."))


def _print_activation(a: dict[str, Any]) -> None:
    temp = "cold" if a["cold"] else "warm"
    click.echo(
        f"--- {a['started_at'][:23]} {a['id']} v{a['version']} {a['status']} "
        f"HTTP {a['http_status']} {a['duration_ms']:.1f}ms {temp}"
    )
    if a.get("error"):
        click.echo(f"error: {a['error'].get('type', '')}: {a['error'].get('message', '')}")
    if a.get("logs"):
        click.echo(a["logs"].rstrip("\n"))


@cli.command()
@click.argument("name")
@click.option("--activation", "activation_id", help="Show this activation only.")
@click.option(
    "--limit",
    "-n",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many recent activations.",
)
@json_option
@click.pass_context
def logs(
    ctx: click.Context, name: str, activation_id: str | None, limit: int, as_json: bool
) -> None:
    """Show the logs of NAME's recent activations (oldest first), or of one activation."""
    if activation_id:
        activation = _api(ctx, "GET", f"/v1/activations/{activation_id}")
        if activation["function"] != name:
            _fail(f'activation {activation_id} belongs to "{activation["function"]}", not "{name}"')
        activations = [activation]
    else:
        activations = _api(ctx, "GET", f"/v1/functions/{name}/activations?limit={limit}")[
            "activations"
        ][::-1]
    emit({"activations": activations}, as_json, lambda d: _print_logs(name, d["activations"]))


def _print_logs(name: str, activations: list[dict[str, Any]]) -> None:
    if not activations:
        click.echo(f"No activations of {name} yet; call it with: fn invoke {name}")
    for activation in activations:
        _print_activation(activation)


@cli.command()
@click.argument("name")
@json_option
@click.pass_context
def delete(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete function NAME with all its versions and activation records."""
    data = _api(ctx, "DELETE", f"/v1/functions/{name}")
    emit(data, as_json, lambda _: click.echo(f"Deleted {name}."))


@cli.group()
def policy() -> None:
    """Warm-pool policies: show, set (live, no restart), and simulate on a trace."""


def _print_policy(p: dict[str, Any]) -> None:
    explicit = set(p.get("set", {}))

    def mark(field: str) -> str:
        return "" if field in explicit else "  (inherited)"

    click.echo(f"{p['function']}:")
    click.echo(f"  prewarm        {p['prewarm']}{mark('prewarm')}")
    click.echo(f"  keep-alive     {p['keep_alive_s']:g}s{mark('keep_alive_s')}")
    click.echo(f"  min-warm       {p['min_warm']}{mark('min_warm')}")
    click.echo(f"  max-instances  {p['max_instances']}{mark('max_instances')}")


@policy.command("show")
@click.argument("name", required=False)
@json_option
@click.pass_context
def policy_show(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Show the policy of function NAME, or the default and every override."""
    if name:
        emit(_api(ctx, "GET", f"/v1/functions/{name}/policy"), as_json, _print_policy)
    else:
        emit(_api(ctx, "GET", "/v1/policies"), as_json, _print_policies)


def _print_policies(data: dict[str, Any]) -> None:
    _table(
        ["FUNCTION", "PREWARM", "KEEP-ALIVE", "MIN-WARM", "MAX-INSTANCES"],
        [
            (
                p["function"],
                p["prewarm"],
                f"{p['keep_alive_s']:g}s",
                p["min_warm"],
                p["max_instances"],
            )
            for p in [data["default"], *data["functions"]]
        ],
    )


@policy.command("set")
@click.argument("name", required=False)
@click.option(
    "--default",
    "is_default",
    is_flag=True,
    help="Set the default that functions without their own setting use.",
)
@click.option(
    "--prewarm",
    type=click.Choice(["fixed", "off", "histogram", "histogram-cost"]),
    help="fixed (or off): keep idle instances for --keep-alive; histogram: learn "
    "each function's idle times, unload and prewarm before the next call; "
    "histogram-cost: the same, keeping warm only where that costs less than "
    "the cold starts it saves (see docs/policies.md).",
)
@click.option(
    "--keep-alive",
    help="Idle time before scale to zero, like 10m (histogram: while it is still learning).",
)
@click.option("--min-warm", type=click.IntRange(0, 10_000), help="Instances always warm.")
@click.option(
    "--max-instances", type=click.IntRange(1, 10_000), help="Instances of one version at most."
)
@click.option(
    "--unset",
    "unset",
    multiple=True,
    type=click.Choice(["prewarm", "keep-alive", "min-warm", "max-instances"]),
    help="Drop this setting (repeatable): it is inherited again.",
)
@json_option
@click.pass_context
def policy_set(
    ctx: click.Context,
    name: str | None,
    is_default: bool,
    prewarm: str | None,
    keep_alive: str | None,
    min_warm: int | None,
    max_instances: int | None,
    unset: tuple[str, ...],
    as_json: bool,
) -> None:
    """Set the warm-pool policy of function NAME (or --default); applies at once."""
    if bool(name) == is_default:
        raise click.UsageError("give a function NAME or --default (not both)")
    payload = {
        "prewarm": prewarm,
        "keep_alive": keep_alive,
        "min_warm": min_warm,
        "max_instances": max_instances,
        "unset": [u.replace("-", "_") for u in unset] or None,
    }
    path = "/v1/policy" if is_default else f"/v1/functions/{name}/policy"
    data = _api(ctx, "PUT", path, {k: v for k, v in payload.items() if v is not None})
    emit(data, as_json, _print_policy)


@policy.command("reset")
@click.argument("name")
@click.pass_context
def policy_reset(ctx: click.Context, name: str) -> None:
    """Drop NAME's own policy: it follows the default again."""
    _print_policy(_api(ctx, "DELETE", f"/v1/functions/{name}/policy"))


@policy.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulate(args: tuple[str, ...]) -> None:
    """Replay a trace through policies: --trace DIR | --csv FILE, --policy fixed:10m ...

    Prints cold starts, idle memory (GB·s) and instance starts per policy, with the oracle
    (knows every next call) at the first policy's idle memory as the lower bound. Runs locally;
    `fn policy simulate --help` lists every option.
    """
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "scheduler.simulate", *args])


# -- events ---------------------------------------------------------------------------------


def _print_delivery(d: dict[str, Any], *, verbose: bool = True) -> None:
    when = d["finished_at"] or d["started_at"] or d["created_at"]
    click.echo(
        f"--- {d['id']} {d['function']} ({d['source']}) {d['status']} after "
        f"{d['attempts']} attempt(s), {(when or '')[:23]}"
    )
    if d["status"] == "pending" and d.get("next_attempt_at"):
        click.echo(f"next attempt at {d['next_attempt_at'][:23]}")
    if d.get("error"):
        e = d["error"]
        click.echo(f"error: {e.get('type', '')}: {e.get('message', '')}")
        if e.get("dead_because"):
            click.echo(f"dead-lettered: {e['dead_because']}")
    if d.get("result") is not None:
        result = d["result"]
        click.echo("result: " + (result if isinstance(result, str) else json.dumps(result)))
    if verbose and d.get("logs"):
        click.echo(d["logs"].rstrip("\n"))


@cli.command()
@click.argument("activation_id")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=None,
    is_flag=False,
    flag_value=60.0,
    help="Wait (default up to 60 s) until an async activation succeeds or is dead-lettered.",
)
@json_option
@click.pass_context
def activation(ctx: click.Context, activation_id: str, wait_s: float | None, as_json: bool) -> None:
    """Show one activation: status, attempts, result or error, and logs."""
    import time

    deadline = time.monotonic() + (wait_s or 0)
    while True:
        data = _api(ctx, "GET", f"/v1/activations/{activation_id}")
        if (
            not data.get("async")
            or data["status"] in ("succeeded", "dead")
            or time.monotonic() >= deadline
        ):
            break
        time.sleep(0.1)
    emit(data, as_json, lambda d: _print_delivery(d) if d.get("async") else _print_activation(d))
    if data["status"] in ("dead", "error", "timeout", "crashed", "start_failed"):
        raise SystemExit(1)


@cli.command()
@click.argument("topic")
@click.option("--data", "-d", help="Event body: JSON text, @FILE, or - for stdin.")
@click.option("--content-type", help="Default: application/json when --data is valid JSON.")
@click.option("--idempotency-key", help="A repeat with the same key is not published again.")
@json_option
@click.pass_context
def publish(
    ctx: click.Context,
    topic: str,
    data: str | None,
    content_type: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Publish an event to TOPIC: each subscribed function gets it (durably, at least once)."""
    body, content_type = _read_data(data, content_type)
    headers = {"Content-Type": content_type or "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    try:
        reply = _client(ctx).request("POST", f"/v1/events/{topic}", body, headers)
        answer = reply.json()
    except ClientError as exc:
        _fail(str(exc))
    except ValueError:
        answer = {}
    if reply.status != 202:
        from fn.client import error_message

        _fail(error_message(reply.status, answer))
    emit(answer, as_json, _print_published)


def _print_published(answer: dict[str, Any]) -> None:
    word = "Published" if answer["status"] == "accepted" else "Already published"
    click.echo(f"{word} event {answer['event_id']} to {answer['deliveries']} subscriber(s).")


@cli.group()
def topic() -> None:
    """Create, list and delete topics (fn publish sends to them)."""


@topic.command("create")
@click.argument("name")
@click.pass_context
def topic_create(ctx: click.Context, name: str) -> None:
    """Create topic NAME (like orders.created)."""
    data = _api(ctx, "PUT", f"/v1/topics/{name}")
    click.echo(f"Created topic {name}." if data["created"] else f"Topic {name} already exists.")


@topic.command("list")
@json_option
@click.pass_context
def topic_list(ctx: click.Context, as_json: bool) -> None:
    """List topics with their number of subscribers."""
    emit(_api(ctx, "GET", "/v1/topics"), as_json, _print_topics)


def _print_topics(data: dict[str, Any]) -> None:
    if not data["topics"]:
        click.echo("No topics yet; create one with: fn topic create orders.created")
        return
    _table(
        ["TOPIC", "SUBSCRIBERS", "CREATED"],
        [(t["name"], t["subscribers"], t["created_at"][:19]) for t in data["topics"]],
    )


@topic.command("delete")
@click.argument("name")
@click.pass_context
def topic_delete(ctx: click.Context, name: str) -> None:
    """Delete topic NAME (it must have no subscribers)."""
    _api(ctx, "DELETE", f"/v1/topics/{name}")
    click.echo(f"Deleted topic {name}.")


@cli.group()
def trigger() -> None:
    """Run functions on events: topics, schedules, table changes."""


def _describe_trigger(t: dict[str, Any]) -> str:
    if t["kind"] == "topic":
        return f"topic {t['topic']}"
    if t["kind"] == "cron":
        return f'cron "{t["cron"]}" {t["timezone"]}, next {(t["next_fire_at"] or "")[:19]}'
    return f"table {t['table']} on {','.join(t['on'])} in {t['database']}"


@trigger.command("add")
@click.argument("name")
@click.option("--topic", "topic_name", help="Run NAME for each event published to this topic.")
@click.option(
    "--cron", help='Run NAME on a schedule, like "*/5 * * * *" (a sixth field adds seconds).'
)
@click.option(
    "--timezone", default="UTC", show_default=True, help="Time zone of --cron, like Europe/Paris."
)
@click.option("--table", help="Run NAME for each change of this table (SCHEMA.TABLE).")
@click.option(
    "--on",
    "operations",
    default="insert,update,delete",
    show_default=True,
    help="With --table: which changes.",
)
@click.option(
    "--database",
    envvar="FN_TRIGGER_DATABASE",
    show_envvar=True,
    help="With --table: the watched database's URL (kept as a secret). "
    "Default: Ember's own database.",
)
@json_option
@click.pass_context
def trigger_add(
    ctx: click.Context,
    name: str,
    topic_name: str | None,
    cron: str | None,
    timezone: str,
    table: str | None,
    operations: str,
    database: str | None,
    as_json: bool,
) -> None:
    """Add a trigger to function NAME: --topic, --cron or --table."""
    body: dict[str, Any] = {}
    if topic_name is not None:
        body["topic"] = topic_name
    if cron is not None:
        body.update(cron=cron, timezone=timezone)
    if table is not None:
        body.update(table=table, on=operations, database=database)
    data = _api(ctx, "POST", f"/v1/functions/{name}/triggers", body)
    emit(
        data,
        as_json,
        lambda t: click.echo(f"Added trigger {t['id']}: {name} runs on {_describe_trigger(t)}."),
    )


@trigger.command("list")
@click.argument("name", required=False)
@json_option
@click.pass_context
def trigger_list(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List triggers (of function NAME, or all)."""
    data = _api(ctx, "GET", "/v1/triggers" + (f"?function={name}" if name else ""))
    emit(data, as_json, _print_triggers)


def _print_triggers(data: dict[str, Any]) -> None:
    if not data["triggers"]:
        click.echo(
            "No triggers; add one with: fn trigger add NAME --topic T | --cron EXPR | --table T"
        )
        return
    _table(
        ["ID", "FUNCTION", "KIND", "WHAT"],
        [(t["id"], t["function"], t["kind"], _describe_trigger(t)) for t in data["triggers"]],
    )


@trigger.command("delete")
@click.argument("trigger_id", type=int)
@click.option(
    "--force",
    is_flag=True,
    help="Forget a table trigger even when its database "
    "cannot be reached (what it installed there then stays).",
)
@click.pass_context
def trigger_delete(ctx: click.Context, trigger_id: int, force: bool) -> None:
    """Delete trigger ID (a table trigger is uninstalled from its database)."""
    _api(ctx, "DELETE", f"/v1/triggers/{trigger_id}" + ("?force=1" if force else ""))
    click.echo(f"Deleted trigger {trigger_id}.")


@cli.group()
def dlq() -> None:
    """Inspect and resend dead-lettered async calls and events."""


@dlq.command("list")
@click.argument("name", required=False)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@click.pass_context
def dlq_list(ctx: click.Context, name: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first (of function NAME, or all)."""
    query = f"?limit={limit}" + (f"&function={name}" if name else "")
    emit(_api(ctx, "GET", "/v1/dlq" + query), as_json, _print_dead_letters)


def _print_dead_letters(data: dict[str, Any]) -> None:
    if not data["dead"]:
        click.echo("No dead letters.")
        return
    _table(
        ["ID", "FUNCTION", "SOURCE", "ATTEMPTS", "ERROR", "DEAD SINCE"],
        [
            (
                d["id"],
                d["function"],
                d["source"],
                d["attempts"],
                _error_summary(d["error"]),
                (d["finished_at"] or "")[:19],
            )
            for d in data["dead"]
        ],
    )


@dlq.command("show")
@click.argument("activation_id")
@json_option
@click.pass_context
def dlq_show(ctx: click.Context, activation_id: str, as_json: bool) -> None:
    """Show a dead letter: its error, the last attempt's logs."""
    emit(_api(ctx, "GET", f"/v1/activations/{activation_id}"), as_json, _print_delivery)


@dlq.command("redrive")
@click.argument("activation_ids", nargs=-1)
@click.option("--function", "function", help="Resend every dead letter of this function.")
@click.pass_context
def dlq_redrive(ctx: click.Context, activation_ids: tuple[str, ...], function: str | None) -> None:
    """Resend dead letters (by id, or all of --function) with a fresh count of attempts."""
    if not activation_ids and not function:
        raise click.UsageError("give activation ids, or --function NAME")
    data = _api(ctx, "POST", "/v1/dlq/redrive", {"ids": list(activation_ids), "function": function})
    click.echo(f"Resent {len(data['redriven'])} dead letter(s).")


@cli.command("state-dir", hidden=True)
def show_state_dir() -> None:
    """Print the state dir fn reads the gateway address and token from."""
    click.echo(str(state_dir()))


def _error_summary(error: dict[str, Any] | None) -> str:
    """A dead letter's error in one table cell."""
    error = error or {}
    return f"{error.get('type', '')}: {error.get('message', '')}"[:60]


def main() -> None:
    cli(prog_name="fn")
