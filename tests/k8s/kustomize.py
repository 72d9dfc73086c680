"""Render a kustomization as `kubectl kustomize` does, for the features deploy/ uses.

A user's machine may have no kubectl, and the tests must still check every object that
`kubectl apply -k` creates; so this renders: `resources` (files and directories), `patches` (by
path, strategic merge: maps merge, lists of named items merge by name), `secretGenerator`
(literals and files, with `generatorOptions.disableNameSuffixHash`) and `images`. Anything else
in a kustomization is refused, so deploy/ cannot drift into features this does not render.
Where kubectl exists, a test compares the two renderings.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
_KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "patches",
    "secretGenerator",
    "generatorOptions",
    "images",
}


def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def strategic_merge(target: Any, patch: Any) -> Any:
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = strategic_merge(target.get(key), value) if key in target else value
        return merged
    if (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in target + patch)
    ):
        merged_list = list(target)
        names = [i["name"] for i in merged_list]
        for item in patch:
            if item["name"] in names:
                index = names.index(item["name"])
                merged_list[index] = strategic_merge(merged_list[index], item)
            else:
                merged_list.append(item)
        return merged_list
    return copy.deepcopy(patch)


def _image(image: str, rules: list[dict[str, str]]) -> str:
    name, _, tag = image.partition(":")
    for rule in rules:
        if rule["name"] == name:
            tag = rule.get("newTag", tag)
            return rule.get("newName", name) + (f":{tag}" if tag else "")
    return image


def render(directory: Path) -> list[Obj]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KNOWN
    if unknown:
        raise ValueError(f"{directory}: kustomization fields this renderer lacks: {unknown}")
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    hashed = not kustomization.get("generatorOptions", {}).get("disableNameSuffixHash")
    for generator in kustomization.get("secretGenerator", []):
        if hashed:
            raise ValueError("secretGenerator without disableNameSuffixHash is not rendered")
        data: dict[str, str] = {}
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = base64.b64encode(value.encode()).decode()
        for spec in generator.get("files", []):
            key, _, file = spec.partition("=")
            data[key] = base64.b64encode((directory / file).read_bytes()).decode()
        meta = {"name": generator["name"]}
        if "namespace" in generator:
            meta["namespace"] = generator["namespace"]
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta,
                "type": generator.get("type", "Opaque"),
                "data": data,
            }
        )
    by_key = {_key(o): i for i, o in enumerate(objects)}
    for patch_entry in kustomization.get("patches", []):
        patch = yaml.safe_load((directory / patch_entry["path"]).read_text())
        index = by_key.get(_key(patch))
        if index is None:
            raise ValueError(f"{patch_entry['path']}: patches nothing ({_key(patch)})")
        objects[index] = strategic_merge(objects[index], patch)
    rules = kustomization.get("images", [])
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            container["image"] = _image(container["image"], rules)
    return objects
