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

NEEDED_BY_STYLE: dict[str, tuple[str, ...]] = {
    "fission": ("flask",),
    "gcf": ("flask",),
}
"""Packages a style's adapter itself uses (it hands the handler a Flask request)."""

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def imported_modules(files: Mapping[str, str]) -> set[str]:
    """Top-level names of the modules the function's files import (absolute imports)."""
    names: set[str] = set()
    for text in files.values():
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
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
    own = {path.split("/")[0].removesuffix(".py") for path in files}
    modules = imported_modules(files) | set(NEEDED_BY_STYLE.get(style, ())) | set(also)
    named = requirement_names(requirements)
    wanted = sorted({PROVIDED[m] for m in modules if m in PROVIDED and m not in own})
    return [p for p in wanted if _normalized(p) not in named]


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
    return match[1] if match and match[1] in PROVIDED else None
