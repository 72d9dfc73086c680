"""The JSON of the tenancy routes (namespaces, API keys, secrets, the audit trail), as
TypedDicts beside `gateway/schemas.py` (same rules: responses may grow, requests name what the
handlers read).

(No `from __future__ import annotations` here: TypedDict reads `NotRequired` at class creation.)"""

from typing import Annotated, Literal, NotRequired, TypedDict

from gateway.schemas import Limit, Name

Namespace = Annotated[str, ("pattern", "^[a-z][a-z0-9-]{0,39}$")]
Role = Literal["reader", "invoker", "deployer"]


class WhoAmI(TypedDict):
    actor: str
    role: Literal["reader", "invoker", "deployer", "admin"]
    namespace: str


class NamespaceJSON(TypedDict):
    name: str
    auth: Literal["public", "key"]
    created_at: str


class NamespaceList(TypedDict):
    namespaces: list[NamespaceJSON]


class NamespaceRequest(TypedDict):
    auth: NotRequired[Literal["public", "key"] | None]


class NamespaceSet(TypedDict):
    name: str
    auth: Literal["public", "key"]


class KeyRequest(TypedDict):
    role: Role
    namespace: NotRequired[Namespace]
    description: NotRequired[Annotated[str, ("maxLength", 200)] | None]
    expires_in: NotRequired[Annotated[str, ("pattern", "^[0-9]{1,6}(s|m|h|d)?$")] | None]


class KeyJSON(TypedDict):
    """An API key as listed: never its secret (only its hash is kept)."""

    id: str
    namespace: str
    role: str
    description: str
    created_by: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class KeyCreated(KeyJSON):
    """The one answer that holds the key itself: keep it, it is not shown again."""

    key: str


class KeyList(TypedDict):
    keys: list[KeyJSON]


class KeysQuery(TypedDict):
    namespace: NotRequired[Namespace]


class SecretRequest(TypedDict):
    values: dict[str, str]


class SecretJSON(TypedDict):
    """A secret's names of values, never the values."""

    secret: str
    namespace: str
    keys: list[str]
    updated_at: str


class SecretSet(SecretJSON):
    functions: list[str]
    """The functions that read it (their warm instances were replaced)."""


class SecretList(TypedDict):
    secrets: list[SecretJSON]


class SecretDeleted(TypedDict):
    deleted: Name
    namespace: str


class AuditEntry(TypedDict):
    id: int
    at: str
    actor: str
    namespace: str
    action: str
    path: str
    status: int


class AuditList(TypedDict):
    audit: list[AuditEntry]


class AuditQuery(TypedDict):
    limit: NotRequired[Limit]
    namespace: NotRequired[Namespace]
