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

import inspect
import re
import sys
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
        for name in WELL_KNOWN:
            found = _lookup(module, name)
            if found is not None:
                entry = name
                break
        if entry == "main" and classify("main", found) == "fission" and _runs_a_server(found):
            # `def main(): uvicorn.run(app)`: a script's entry point next to the app it serves
            # (Fission's main() reads flask.request beside a Flask app of its own)
            for name in ("app", "application"):
                app = _lookup(module, name)
                if app is not None and (is_asgi(app) or is_wsgi(app)):
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
    return _LAMBDA_ONLY.search(source) is not None or (
        not strong and all(p.search(source) for p in _PROXY_RESPONSE)
    )


def default_entry(module: Any, entry: str) -> str:
    """The entry point of a deploy that named its style but not its handler: `entry`, unless it
    is the default `handler` and the module has none, then the first of WELL_KNOWN it defines
    (`--style lambda` finds lambda_handler)."""
    if entry != "handler" or _lookup(module, entry) is not None:
        return entry
    return next((name for name in WELL_KNOWN if _lookup(module, name) is not None), entry)


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
