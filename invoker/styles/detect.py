"""Which style a function is written in, when the deploy did not say (`--style auto`).

Only what is obvious from the entry point's name, its parameters and the kind of object it is:

    lambda_handler(event, context)             lambda
    handler(event, context)  (any other name)  ember, or lambda when its module uses Lambda's
                                               fields (statusCode, requestContext,
                                               context.aws_request_id...)
    main(args)                                 openwhisk
    main()                                     fission
    main(context)                              knative (the parliament template)
    handle(event, context) / handle(req)       openfaas
    any(request)                               gcf
    any function functions_framework registered gcf (@functions_framework.http, .cloud_event...)
    new()                                      knative (returns an object with async handle)
    an ASGI app (FastAPI, Starlette, ...)      asgi
    a WSGI app (Flask, Django, ...)            wsgi

When the default entry point `handler` is absent, the first of lambda_handler, main, handle,
app, application, new that the module defines is used. Anything else needs `--style`.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from invoker.protocol import STYLES
from invoker.styles import StyleMismatch
from invoker.styles.native import positional_arity, takes

WELL_KNOWN = ("lambda_handler", "main", "handle", "app", "application", "new")


def resolve_entry(module: Any, entry: str, filename: str) -> Any:
    """The object `entry` (a name, or a dotted attribute path like `api.app`) names in the
    module; LookupError when there is none."""
    target: Any = module
    for part in entry.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise LookupError(
                f'{filename} defines no function "{entry}"; add: def {entry}(event, context): ...'
                if "." not in entry
                else f'{filename} has no "{entry}"'
            )
    if not callable(target):
        raise LookupError(f'"{entry}" in {filename} is a {type(target).__name__}, not a function')
    return target


def _params(target: Any) -> list[str]:
    try:
        return [
            p.name
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return []


def is_asgi(target: Any) -> bool:
    """An ASGI 3 application: `async def app(scope, receive, send)`, or an object whose
    `__call__` is one (FastAPI, Starlette, Quart...)."""
    if inspect.isclass(target):
        return False
    if inspect.isfunction(target) or inspect.ismethod(target):
        call = target
    elif callable(target):
        call = type(target).__call__.__get__(target)  # bound: self not counted
    else:
        return False
    return inspect.iscoroutinefunction(call) and len(_params(call)) == 3


def is_wsgi(target: Any) -> bool:
    """A WSGI application: `app(environ, start_response)`, or an object with `wsgi_app`
    (Flask) or whose `__call__` takes (environ, start_response) (Django, Bottle, Falcon)."""
    if inspect.isclass(target) or is_asgi(target):
        return False
    if hasattr(target, "wsgi_app"):
        return True
    if inspect.isfunction(target):
        call = target
    elif callable(target):
        call = type(target).__call__.__get__(target)
    else:
        return False
    if inspect.iscoroutinefunction(call):
        return False
    names = _params(call)
    return len(names) == 2 and names[1] in ("start_response", "start")


def classify(name: str, target: Any) -> str | None:
    """The style that `target`, found under `name`, is obviously written in, or None."""
    if name.rsplit(".", 1)[-1] == "lambda_handler" and takes(target, 2):
        return "lambda"
    if is_asgi(target):
        return "asgi"
    if is_wsgi(target):
        return "wsgi"
    arity = positional_arity(target)
    if arity is None:
        return None
    params = _params(target)
    required, most = arity
    if most == -2:
        return None
    short = name.rsplit(".", 1)[-1]
    registry = sys.modules.get("functions_framework._function_registry")
    if registry is not None and short in getattr(registry, "REGISTRY_MAP", {}):
        return "gcf"
    if short == "new" and required == 0:
        return "knative"
    if short == "main" and required == 0 and most == 0:
        return "fission"
    if (required == 1 and (most == 1 or most == -1)) or (required == 0 and most == 1):
        first = params[0] if params else ""
        if first in ("request", "req_flask", "cloud_event", "cloudevent") or _is_cloud_event(
            target
        ):
            return "gcf"
        if short == "main":
            return "knative" if first == "context" else "openwhisk"
        if short == "handle":
            return "openfaas"
        return None
    if required <= 2 and (most == -1 or most >= 2):
        if short == "lambda_handler":
            return "lambda"
        if short == "handle":
            return "openfaas"
        return "ember"
    return None


def detect_style(module: Any, entry: str) -> tuple[str, str, Any]:
    """(style, entry, target) for a module deployed without a style; StyleMismatch (or
    LookupError when the entry point is missing) otherwise."""
    filename = getattr(module, "__file__", None) or getattr(module, "__name__", "the module")
    filename = str(filename).rsplit("/", 1)[-1]
    found = _lookup(module, entry)
    if found is None and entry == "handler":
        name = _first_defined(module, WELL_KNOWN)
        if name is not None:
            entry, found = name, _lookup(module, name)
        if entry == "main" and classify("main", found) == "fission":
            # `def main(): uvicorn.run(app)`, a script's entry point next to the app it serves,
            # or `async def main()`, one of the app's routes (Fission's main() is neither: it
            # reads flask.request, maybe beside a Flask app of its own)
            for name in ("app", "application"):
                app = _lookup(module, name)
                if (
                    app is not None
                    and (is_asgi(app) or is_wsgi(app))
                    and (
                        _runs_a_server(found)
                        or inspect.iscoroutinefunction(found)
                        or _serves(app, found)
                    )
                ):
                    entry, found = name, app
                    break
    if found is None:
        raise LookupError(
            f'{filename} defines no function "{entry}"; add: def {entry}(event, context): ... '
            "(or name the entry point with --handler)"
        )
    style = classify(entry, found)
    if style == "ember" and (_reads_like_lambda(module) or type(found).__name__ == "Mangum"):
        style = "lambda"  # Serverless Framework's handler.hello, SAM's app.handler...
    elif style == "openfaas" and takes(found, 2) and _reads_like_lambda(module, strong=True):
        style = "lambda"  # a Lambda handler named handle (OpenFaaS's return statusCode too)
    if style is None:
        raise StyleMismatch(
            f'the style of "{entry}" in {filename} is not obvious from its name and '
            f"parameters; give it with --style (one of: {', '.join(STYLES)})"
        )
    return style, entry, found


_LAMBDA_ONLY = re.compile(
    r"[\"'](queryStringParameters|pathParameters|requestContext|isBase64Encoded|httpMethod"
    r"|rawPath|multiValueHeaders)[\"']"
    r"|\.(aws_request_id|invoked_function_arn|get_remaining_time_in_millis)\b"
    r"|\b(aws_lambda_powertools|mangum|awslambdaric|LambdaContext)\b"
)
"""What only Lambda's events, context and libraries have."""
_PROXY_RESPONSE = (re.compile(r"[\"']statusCode[\"']"), re.compile(r"[\"']body[\"']"))
"""A proxy response ({"statusCode": ..., "body": ...}): both keys, not one of them."""


def _reads_like_lambda(module: Any, *, strong: bool = False) -> bool:
    """Whether the module's source uses what only Lambda's events, context, libraries or
    proxy responses have (a dict with a "statusCode" of its own is not enough; with `strong`,
    a proxy response is not either: OpenFaaS's python3-http answers with the same keys)."""
    file = getattr(module, "__file__", None)
    try:
        source = Path(file).read_text(errors="replace") if file else ""
    except OSError:
        return False
    return _source_reads_like_lambda(source, strong=strong)


def _source_reads_like_lambda(source: str, *, strong: bool) -> bool:
    return _LAMBDA_ONLY.search(source) is not None or (
        not strong and all(p.search(source) for p in _PROXY_RESPONSE)
    )


def before_import(
    style: str, entry: str, filename: str, root: str, meta: Mapping[str, Any]
) -> Callable[[str], None]:
    """Set up what `style` gives a function before its module (`filename` under `root`) is
    imported, for the specialization `meta` (function, version, memory_bytes): Lambda's
    environment variables, for a lambda-style module (or, with `auto`, one that reads like one:
    `lambda_before_import`). Returns what is called with the style the module was bound
    with, which takes back what does not apply."""
    if style == "auto":
        entry = lambda_before_import(Path(root, filename), entry) or ""
        style = "lambda" if entry else style
    if style == "lambda":
        from invoker.styles import aws_lambda

        undo = aws_lambda.before_import(
            meta["function"],
            int(meta.get("version", 0)),
            int(meta.get("memory_bytes", 0)) >> 20,
            filename.removesuffix(".py").removesuffix("/__init__").replace("/", "."),
            entry,
            root,
        )
        return lambda bound: None if bound == "lambda" else undo()
    return lambda bound: None


def lambda_before_import(path: Path, entry: str) -> str | None:
    """The entry point of the module at `path`, deployed with `--style auto`, when it reads
    like a Lambda handler before it is imported (so that it gets Lambda's environment
    variables at import, as on Lambda), else None: its entry point (as `detect_style` would
    find it among the functions the file defines) is `lambda_handler`, or takes (event,
    context) in a module that `detect_style` would find reading like Lambda's."""
    try:
        source = path.read_text(errors="replace")
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return None
    defined = {
        node.name: len(node.args.posonlyargs) + len(node.args.args)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    short = entry.rsplit(".", 1)[-1]
    if entry == "handler" and short not in defined:
        entry = short = next((name for name in WELL_KNOWN if name in defined), short)
    if short == "lambda_handler":
        return entry
    if defined.get(short) != 2 or short in ("main", "new", "app", "application"):
        return None
    return entry if _source_reads_like_lambda(source, strong=short == "handle") else None


STYLE_ENTRIES = {
    "lambda": ("lambda_handler",),
    "openwhisk": ("main",),
    "fission": ("main",),
    "openfaas": ("handle",),
    "knative": ("new", "main"),
    "asgi": ("app", "application"),
    "wsgi": ("app", "application"),
}
"""The names each style's platform calls, looked for first when `--handler` is not given."""


def default_entry(module: Any, entry: str, style: str = "ember") -> str:
    """The entry point of a deploy that named its style but not its handler: `entry`, unless it
    is the default `handler` and the module has none, then the first the module defines of the
    names `style`'s platform calls (`--style openfaas` finds handle, `--style lambda`
    lambda_handler), then of WELL_KNOWN."""
    if entry != "handler" or _lookup(module, entry) is not None:
        return entry
    return (
        _first_defined(module, STYLE_ENTRIES.get(style, ()))
        or _first_defined(module, WELL_KNOWN)
        or entry
    )


def _first_defined(module: Any, names: tuple[str, ...]) -> str | None:
    """The first of `names` the module has, those it defines itself before those it imports
    (`from .util import main` beside `def handle(req)`: handle)."""
    found = [name for name in names if _lookup(module, name) is not None]
    own = getattr(module, "__name__", None)
    for name in found:
        target = _lookup(module, name)
        if not inspect.isfunction(target) or target.__module__ == own:
            return name
    return found[0] if found else None


def _runs_a_server(function: Any) -> bool:
    """Whether a function's source starts a server (`uvicorn.run(app)`, `app.run()`)."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return (
        re.search(r"\b(uvicorn|hypercorn|waitress|app|application)\.(run|serve)\(", source)
        is not None
    )


def _serves(app: Any, function: Any) -> bool:
    """Whether `function` is one of the routes of `app` (Starlette's and FastAPI's `routes`,
    Flask's `view_functions`)."""
    endpoints = [getattr(route, "endpoint", None) for route in getattr(app, "routes", None) or ()]
    views = getattr(app, "view_functions", None)
    if isinstance(views, dict):
        endpoints.extend(views.values())
    return any(endpoint is function for endpoint in endpoints)


def _is_cloud_event(function: Any) -> bool:
    """A function whose one parameter is annotated as a CloudEvent."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and "CloudEvent" in str(params[0].annotation)


def _lookup(module: Any, entry: str) -> Any:
    target: Any = module
    for part in entry.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target if callable(target) else None
