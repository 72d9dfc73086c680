"""What other platforms give every function without asking: installed at deploy.

A handler written for Cloud Functions imports `functions_framework` and gets a Flask request; one
written for Fission does `from flask import request`; a Lambda function imports `boto3`. Those
platforms provide these packages, so their users' requirements do not list them. A deploy adds
each such package its code imports (or its style needs) to the requirements, unless they
already name it; the deploy's answer says what was added.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping

PROVIDED: dict[str, str] = {
    "flask": "flask",
    "werkzeug": "werkzeug",
    "functions_framework": "functions-framework",
    "cloudevents": "cloudevents",
    "parliament": "parliament-functions",
    "boto3": "boto3",
    "botocore": "botocore",
}
"""Modules the platforms provide -> the package that installs them."""

PROVIDED_BY_STYLE: dict[str, dict[str, str]] = {
    # Fission's Python environment image: Flask 2.1 (flask.escape, werkzeug's url_quote
    # still there), with redis, requests and python-dateutil beside it.
    "fission": {
        "flask": "flask<2.3",
        "werkzeug": "werkzeug<3",
        "redis": "redis",
        "requests": "requests",
        "dateutil": "python-dateutil",
    },
}
"""What one platform provides besides PROVIDED, or in another version."""

BRINGS: dict[str, set[str]] = {
    "functions-framework": {"flask", "werkzeug", "cloudevents", "cloudevents<2"},
}
"""Packages another one installs (in the versions it needs): not added beside it."""

NEEDED_BY_STYLE: dict[str, tuple[str, ...]] = {
    "fission": ("flask",),
    "gcf": ("flask",),
}
"""Packages a style's adapter itself uses (it hands the handler a Flask request)."""

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


LEGACY_CLOUDEVENTS = "cloudevents<2"
"""What parliament (Knative's older Python templates) and code written against the CloudEvents
SDK 1.x API need: cloudevents 2 moved `cloudevents.http` to `cloudevents.v1.http`."""
_LEGACY_IMPORTS = ("parliament", "cloudevents.http", "cloudevents.conversion", "cloudevents.sdk")


def imported_modules(files: Mapping[str, str]) -> set[str]:
    """Top-level names of the modules the function's files import (absolute imports)."""
    return {name.split(".")[0] for name in _imports(files)}


def _imports(files: Mapping[str, str]) -> set[str]:
    """Dotted names the function's files import (`from a import b` counts a and a.b)."""
    names: set[str] = set()
    for text in files.values():
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: str) -> set[str]:
    names = set()
    for line in requirements.splitlines():
        match = _REQUIREMENT_NAME.match(line.split("#", 1)[0])
        if match:
            names.add(_normalized(match[1]))
    return names


def missing_packages(
    style: str, files: Mapping[str, str], requirements: str, also: Iterable[str] = ()
) -> list[str]:
    """The packages to add: those the style needs, those of `PROVIDED` its code imports, and
    `also` (modules an import check found missing), less those the requirements name and the
    function's own modules."""
    if "--hash" in requirements:  # pip's hash-checking mode takes no unpinned additions
        return []
    own = {path.split("/")[0].removesuffix(".py") for path in files}
    imports = _imports(files)
    modules = imported_modules(files) | set(NEEDED_BY_STYLE.get(style, ())) | set(also)
    named = requirement_names(requirements)
    provided = provided_by(style)
    wanted = {provided[m] for m in modules if m in provided and m not in own}

    if any(name.startswith(_LEGACY_IMPORTS) for name in imports if name.split(".")[0] not in own):
        wanted.discard("cloudevents")
        wanted.add(LEGACY_CLOUDEVENTS)
    for package, brings in BRINGS.items():
        if package in wanted:
            wanted -= brings
    added = [p for p in sorted(wanted) if _normalized(re.split("[<>=!~]", p)[0]) not in named]
    if "flask<2.3" in added and "werkzeug" not in named and "werkzeug<3" not in added:
        added.append("werkzeug<3")  # (the Flask 2 we add runs on Werkzeug 2)
    return added


def provided_by(style: str) -> dict[str, str]:
    """Module -> package for what the platform of `style` provides ("auto": the style is not
    known yet, any platform's)."""
    if style == "auto":
        extra = {m: p for packages in PROVIDED_BY_STYLE.values() for m, p in packages.items()}
        return {**extra, **PROVIDED}  # (another platform's pins do not apply to all)
    return {**PROVIDED, **PROVIDED_BY_STYLE.get(style, {})}


def with_packages(requirements: str, packages: Iterable[str]) -> str:
    lines = requirements.rstrip("\n")
    added = "\n".join(
        f"{p}  # provided by the platform the function was written for" for p in packages
    )
    return f"{lines}\n{added}\n" if lines else f"{added}\n"


def missing_module(error: Mapping[str, object]) -> str | None:
    """The provided module an import check failed to find (`No module named 'flask'`)."""
    if error.get("type") not in ("ModuleNotFoundError", "ImportError"):
        return None
    match = re.search(r"No module named '([A-Za-z0-9_]+)", str(error.get("message", "")))
    return match[1] if match and match[1] in provided_by("auto") else None
