"""CloudFormation's intrinsic functions, resolved where the template alone gives the value.

`Template.resolve` turns `{"Ref": "Stage"}`, `!Sub "${Stage}-orders"`, `!Join`, `!Select`,
`!Split`, `!If` (with the template's Conditions), `!FindInMap` and `!Base64` into values, from
the template's Parameters (their Default, or an override from samconfig.toml) and the pseudo
parameters known without AWS (AWS::Partition, AWS::URLSuffix, and AWS::StackName and
AWS::Region when samconfig.toml names them). What depends on AWS (a resource's `!Ref` or
`!GetAtt`, `!ImportValue`, AWS::AccountId) raises `Unresolved`, saying what it needs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any


class Unresolved(ValueError):
    """A value the template alone does not give; the message says what it depends on."""


NO_VALUE = object()
"""AWS::NoValue: the property is left out."""

_PSEUDO = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = str(next(iter(value)))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def describe(value: Any) -> str:
    """An intrinsic as the short form a template writes (`!GetAtt Table.Arn`)."""
    if not is_intrinsic(value):
        return repr(value)
    ((name, arg),) = value.items()
    short = name.removeprefix("Fn::")
    if short == "GetAtt" and isinstance(arg, list):
        arg = ".".join(str(a) for a in arg)
    shown = arg if isinstance(arg, str) else repr(arg)
    return f"!{short} {shown}"


class Template:
    """A template's Parameters, Mappings, Conditions and resource types, for resolving."""

    def __init__(
        self,
        doc: Mapping[str, Any],
        overrides: Mapping[str, str],
        pseudo: Mapping[str, str],
    ) -> None:
        self.parameters: dict[str, Any] = {}
        self.undefaulted: set[str] = set()
        for name, spec in _mapping(doc.get("Parameters")).items():
            spec = _mapping(spec)
            value = overrides.get(name, spec.get("Default"))
            if value is None:
                self.undefaulted.add(name)
                continue
            kind = str(spec.get("Type", ""))
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                value = [v.strip() for v in str(value).split(",")]
            self.parameters[name] = value
        self.pseudo = {**_PSEUDO, **pseudo}
        self.resources = _mapping(doc.get("Resources"))
        self.resource_types = {
            name: str(_mapping(r).get("Type", "?")) for name, r in self.resources.items()
        }
        self.mappings = _mapping(doc.get("Mappings"))
        self.conditions = _mapping(doc.get("Conditions"))
        self._evaluating: set[str] = set()

    def resolve(self, value: Any) -> Any:
        """The value with its intrinsics resolved (NO_VALUE where AWS::NoValue leaves it out)."""
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if is_intrinsic(value):
            ((name, arg),) = value.items()
            return self._intrinsic(name, arg, value)
        return {
            k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not NO_VALUE
        }

    def text(self, value: Any) -> str:
        """A scalar value as text; Unresolved when it is not one."""
        resolved = self.resolve(value)
        if isinstance(resolved, list | dict) or resolved is NO_VALUE:
            raise Unresolved(f"{describe(value)} is not a single value")
        return str(resolved)

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise Unresolved(f"condition {name} is not defined")
        if name in self._evaluating:
            raise Unresolved(f"condition {name} refers to itself")
        self._evaluating.add(name)
        try:
            return self._truth(self.conditions[name])
        finally:
            self._evaluating.discard(name)

    def _truth(self, expr: Any) -> bool:
        if isinstance(expr, dict) and len(expr) == 1:
            ((name, arg),) = expr.items()
            args = arg if isinstance(arg, list) else [arg]
            if name == "Fn::Equals" and len(args) == 2:
                return self.text(args[0]) == self.text(args[1])
            if name == "Fn::Not" and len(args) == 1:
                return not self._truth(args[0])
            if name == "Fn::And":
                return all(self._truth(a) for a in args)
            if name == "Fn::Or":
                return any(self._truth(a) for a in args)
            if name == "Condition":
                return self.condition(str(arg))
        text = self.text(expr).lower()
        if text in ("true", "false"):
            return text == "true"
        raise Unresolved(f"{describe(expr)} is not a condition")

    def _ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.resource_types:
            kind = self.resource_types[name]
            raise Unresolved(f"!Ref {name}: an AWS resource ({kind}) that Ember does not create")
        if name in self.undefaulted:
            raise Unresolved(f"!Ref {name}: a parameter without a Default")
        raise Unresolved(f"!Ref {name}: known only on AWS")

    def _intrinsic(self, name: str, arg: Any, whole: Any) -> Any:
        args = arg if isinstance(arg, list) else [arg]
        if name == "Ref":
            return self._ref(str(arg))
        if name == "Fn::Sub":
            return self._sub(args[0], _mapping(args[1]) if len(args) > 1 else {})
        if name == "Fn::Join" and len(args) == 2:
            items = self.resolve(args[1])
            if not isinstance(items, list):
                raise Unresolved(f"{describe(whole)}: the second argument is not a list")
            return self.text(args[0]).join(self.text(i) for i in items)
        if name == "Fn::Select" and len(args) == 2:
            items = self.resolve(args[1])
            index = self.text(args[0])
            if not isinstance(items, list) or not index.isdigit() or int(index) >= len(items):
                raise Unresolved(f"{describe(whole)}: no such item")
            return items[int(index)]
        if name == "Fn::Split" and len(args) == 2:
            return self.text(args[1]).split(self.text(args[0]))
        if name == "Fn::If" and len(args) == 3:
            return self.resolve(args[1] if self.condition(str(args[0])) else args[2])
        if name == "Fn::FindInMap" and len(args) >= 3:
            keys = [self.text(a) for a in args[:3]]
            try:
                return self.resolve(self.mappings[keys[0]][keys[1]][keys[2]])
            except (KeyError, TypeError):
                raise Unresolved(f"{describe(whole)}: no such entry in Mappings") from None
        if name == "Fn::Base64":
            return base64.b64encode(self.text(args[0]).encode()).decode()
        if name == "Condition":
            return "true" if self.condition(str(arg)) else "false"
        if name == "Fn::GetAtt":
            raise Unresolved(f"{describe(whole)}: an attribute of an AWS resource")
        if name == "Fn::ImportValue":
            raise Unresolved(f"{describe(whole)}: an export of another AWS stack")
        raise Unresolved(f"{describe(whole)}: known only on AWS")

    def _sub(self, template: Any, variables: Mapping[str, Any]) -> str:
        if not isinstance(template, str):
            raise Unresolved(f"!Sub {template!r}: expected a string")

        def replace(match: re.Match[str]) -> str:
            key = match[1]
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in variables:
                return self.text(variables[key])
            if "." in key and key.split(".")[0] in self.resource_types:
                raise Unresolved(f"!Sub ${{{key}}}: an attribute of an AWS resource")
            return self.text({"Ref": key})

        return _SUB_VARIABLE.sub(replace, template)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
