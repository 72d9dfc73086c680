"""Stack files: an AWS SAM template or an OpenFaaS stack file read into a `Plan` of Ember
functions (files, handler, style, settings, schedules, routes, policy) and the list of what
has no Ember equivalent, each with its reason. Pure: reading the files is all it does; the
deploy itself is `fn.cli.stack_deploy`.

    read_yaml(text, where) -> the document      kind_of(document) -> "sam", "openfaas" or None

Scalars are read as the text written (YAML's `yes`, `0.10` or `08` stay what they say: they
become environment variables); CloudFormation's short-form intrinsics (`!Ref X`, `!Sub ...`,
`!GetAtt A.B`, ...) read as their long form (`{"Ref": "X"}`), as in a JSON template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class StackError(ValueError):
    """The file is not a stack file Ember reads (or not valid YAML); the message says why."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Unmapped:
    """Something of the file that Ember does not do, and why."""

    what: str
    reason: str


@dataclass(slots=True, frozen=True, kw_only=True)
class Schedule:
    cron: str
    """Ember's cron syntax (five fields)."""
    timezone: str = "UTC"
    origin: str
    """What the file said, like `Schedule Nightly: rate(1 day)`."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Route:
    method: str
    """GET, POST, ... or ANY."""
    path: str
    """The sub-path after /fn/NAME, as the file writes it (`/hello/{name}`), or "" for all."""
    origin: str


@dataclass(slots=True, frozen=True, kw_only=True)
class PlannedFunction:
    name: str
    origin: str
    """Where it comes from in the file: the SAM logical id, the OpenFaaS function key."""
    code_dir: Path | None
    """The directory deployed (its requirements.txt is installed); None: `source` alone."""
    filename: str
    """The main module's path in the deployed files, like hello_world/app.py."""
    entry: str | None
    style: str
    source: str | None = None
    """The main module's text when it is not a file of `code_dir` (SAM's InlineCode)."""
    prefix: str = ""
    """Where `code_dir`'s files go in the deployed files (OpenFaaS: function/)."""
    extra: tuple[tuple[Path, str], ...] = ()
    """More files or trees to deploy: (path, where in the deployed files); a path the
    function's own files already have is not overwritten."""
    requirements: tuple[str, ...] = ()
    """Requirement lines added to code_dir's requirements.txt (from SAM layers)."""
    style_options: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    """Deploy settings as `fn deploy` takes them: timeout, memory, cpus, max_attempts..."""
    policy: Mapping[str, int] = field(default_factory=dict)
    """Warm-pool policy settings (min_warm, max_instances) set after the deploy."""
    schedules: tuple[Schedule, ...] = ()
    routes: tuple[Route, ...] = ()


@dataclass(slots=True, kw_only=True)
class Plan:
    kind: str
    """sam or openfaas."""
    functions: list[PlannedFunction] = field(default_factory=list)
    not_mapped: list[Unmapped] = field(default_factory=list)

    def skip(self, what: str, reason: str) -> None:
        self.not_mapped.append(Unmapped(what=what, reason=reason))


KIND_NAMES = {"sam": "AWS SAM template", "openfaas": "OpenFaaS stack file"}

_NAME_INVALID = re.compile(r"[^a-z0-9_-]+")


def outside(base: Path, path: Path) -> bool:
    """Whether `path` (links followed) lies outside the directory of the template or stack
    file `base`: such files are not deployed (a file from elsewhere must not end up in a
    function, as faas-cli refuses paths outside the build context)."""
    root = base.resolve()
    return not path.resolve().is_relative_to(root)


OUTSIDE = "is outside the template's directory; only files below it are deployed"


def ember_name(raw: str) -> str:
    """A function name by Ember's rules (a lowercase letter, then up to 62 of a-z, 0-9, _ and
    -): lowercased, other characters turned into -, a leading non-letter dropped."""
    name = _NAME_INVALID.sub("-", raw.lower())
    name = re.sub(r"^[^a-z]+", "", name)[:63].rstrip("-_")
    return name or "function"


# -- reading ---------------------------------------------------------------------------------


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    yaml.constructor.SafeConstructor,
    yaml.resolver.BaseResolver,
):
    """YAML with every scalar as its text (BaseResolver resolves no int, bool or null), merge
    keys (`<<: *defaults`), and CloudFormation's `!Tag` short forms."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.BaseResolver.__init__(self)


_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _intrinsic(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    return {name: value}


_Loader.add_multi_constructor("!", _intrinsic)


def read_yaml(text: str, where: str) -> Any:
    loader = _Loader(text)  # a safe constructor: builds no objects
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackError(f"{where} is not valid YAML{at}: {problem}") from None
    finally:
        loader.dispose()


def kind_of(doc: Any) -> str | None:
    """sam, openfaas, or None when the document is neither."""
    if not isinstance(doc, dict):
        return None
    transform = doc.get("Transform")
    transforms = transform if isinstance(transform, list) else [transform]
    resources = doc.get("Resources")
    if "AWS::Serverless-2016-10-31" in transforms or (
        isinstance(resources, dict)
        and any(
            isinstance(r, dict) and str(r.get("Type", "")).startswith("AWS::")
            for r in resources.values()
        )
    ):
        return "sam"
    functions = doc.get("functions")
    provider = doc.get("provider")
    if isinstance(functions, dict) and (
        (isinstance(provider, dict) and provider.get("name") in ("openfaas", "faas"))
        or any(isinstance(f, dict) and ("lang" in f or "image" in f) for f in functions.values())
    ):
        return "openfaas"
    return None
