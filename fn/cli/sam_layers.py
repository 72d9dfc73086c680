"""A SAM function's Layers. A layer of the template whose ContentUri is a local directory gives
the function its files (its python/ folder, which Lambda puts on the path as /opt/python, or
else the directory itself, as `sam build` packs it) and its requirements.txt; a public layer
known to hold one package (Powertools for AWS Lambda, Klayers) becomes that package in the
requirements; any other layer is listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fn.cli.cfn import Template, Unresolved, describe, is_intrinsic
from fn.cli.stacks import OUTSIDE, Plan, outside

LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
_POWERTOOLS = re.compile(r":layer:AWSLambdaPowertoolsPython")
_KLAYERS = re.compile(r":layer:Klayers-p\d+-([A-Za-z0-9_.-]+?)(?::\d+)?$")


@dataclass(slots=True, frozen=True, kw_only=True)
class Layers:
    trees: tuple[tuple[Path, str], ...] = ()
    """Directories whose files join the function's (at the top of its files)."""
    requirements: tuple[str, ...] = ()
    """Requirement lines the layers bring."""


def plan_layers(
    result: Plan,
    tpl: Template,
    logical_id: str,
    layers: Any,
    base: Path,
    resources: dict[str, Any],
) -> Layers:
    trees: list[tuple[Path, str]] = []
    requirements: list[str] = []
    for layer in layers if isinstance(layers, list) else []:
        where = f"{logical_id} layer {describe(layer) if is_intrinsic(layer) else layer}"
        ref = layer.get("Ref") if isinstance(layer, dict) else None
        if isinstance(ref, str) and ref in resources:
            reason = _local_layer(ref, resources[ref], tpl, base, trees, requirements)
            if reason:
                result.skip(where, reason)
            continue
        try:
            arn = tpl.text(layer)
        except Unresolved:
            arn = describe(layer)
        if _POWERTOOLS.search(arn):
            requirements.append("aws-lambda-powertools")
        elif m := _KLAYERS.search(arn):
            requirements.append(m[1])
        else:
            result.skip(
                where,
                "Ember has no layers: list the layer's packages in requirements.txt, or put "
                "its modules in CodeUri",
            )
    return Layers(trees=tuple(trees), requirements=tuple(requirements))


def _local_layer(
    name: str,
    resource: Any,
    tpl: Template,
    base: Path,
    trees: list[tuple[Path, str]],
    requirements: list[str],
) -> str | None:
    """Add a layer of the template; the reason when it cannot be."""
    resource = resource if isinstance(resource, dict) else {}
    if resource.get("Type") not in LAYER_TYPES:
        return f"{name} is not a layer of this template"
    props = resource.get("Properties") if isinstance(resource.get("Properties"), dict) else {}
    content = props.get("ContentUri", props.get("Content"))
    try:
        uri = tpl.text(content)
    except Unresolved as exc:
        return f"its content is not a local directory: {exc}"
    folder = base / uri
    if outside(base, folder):
        return f"its content {uri} {OUTSIDE}"
    if uri.startswith("s3://") or not folder.is_dir():
        return f"its content {uri} is not a local directory next to the template"
    trees.append((folder / "python" if (folder / "python").is_dir() else folder, ""))
    listed = folder / "requirements.txt"
    if listed.is_file():
        requirements.extend(
            line
            for line in listed.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    return None
