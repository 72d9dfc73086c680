"""Who may do what: the one place that decides it.

`ROUTES` classifies every admin route by the role it needs; `authorize` is the single check
(the admin middleware calls it, and so can any other HTTP surface, like a dashboard). A route
that is not in the table is refused to everyone but the admin token, and a test fails for it.

Roles, each including the ones before it: reader (read the namespace's functions, logs,
activations), invoker (call its private functions, publish events), deployer (deploy, delete,
roll back, set policies, triggers and secrets of its namespace), and the platform admin (the
admin token: everything, every namespace, keys and namespaces themselves).

Namespaces: functions (and their versions, policies, triggers, activations) and topics live in
one; the request names it (`X-Ember-Namespace`, or `?namespace=`), else the key's own, else
`default` (how names are stored: gateway/namespaces.py). A "shared" route (the default policy)
works on what is in no namespace: keys of the `default` namespace (and the admin) only.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from gateway.errors import bad_request, error_response
from gateway.keyring import KeyRefused
from gateway.namespaces import DEFAULT_NAMESPACE, NAMESPACE, qualify, shown_name, split_name
from gateway.platform import PLATFORM, Platform
from gateway.units import NAME

RANKS = {"reader": 1, "invoker": 2, "deployer": 3, "admin": 4}
NAMESPACE_HEADER = "X-Ember-Namespace"


@dataclass(slots=True, frozen=True)
class Rule:
    role: str
    """The least role that may use the route."""
    shared: bool = False
    """Works on what is not in a namespace: only the admin and keys of `default`."""


R, D, A = Rule("reader"), Rule("deployer"), Rule("admin")
ROUTES: dict[tuple[str, str], Rule] = {
    ("POST", "/v1/functions"): D,
    ("GET", "/v1/functions"): R,
    ("GET", "/v1/functions/{name}"): R,
    ("DELETE", "/v1/functions/{name}"): D,
    ("GET", "/v1/functions/{name}/versions"): R,
    ("POST", "/v1/functions/{name}/rollback"): D,
    ("GET", "/v1/functions/{name}/builds"): R,
    ("GET", "/v1/functions/{name}/activations"): R,
    ("GET", "/v1/activations/{id}"): R,  # the handler checks the function's namespace
    ("GET", "/v1/policy"): Rule("reader", shared=True),
    ("PUT", "/v1/policy"): A,
    ("GET", "/v1/functions/{name}/policy"): R,
    ("PUT", "/v1/functions/{name}/policy"): D,
    ("DELETE", "/v1/functions/{name}/policy"): D,
    ("GET", "/v1/policies"): R,
    ("PUT", "/v1/topics/{name}"): D,
    ("GET", "/v1/topics"): R,
    ("DELETE", "/v1/topics/{name}"): D,
    ("POST", "/v1/events/{topic}"): Rule("invoker"),
    ("POST", "/v1/events"): Rule("invoker"),
    ("POST", "/v1/functions/{name}/triggers"): D,
    ("GET", "/v1/triggers"): R,  # the handlers keep to the namespace's functions
    ("DELETE", "/v1/triggers/{id}"): D,
    ("GET", "/v1/dlq"): R,
    ("POST", "/v1/dlq/redrive"): D,
    ("GET", "/v1/whoami"): R,
    ("GET", "/v1/namespaces"): R,
    ("PUT", "/v1/namespaces/{namespace}"): A,
    ("POST", "/v1/keys"): A,
    ("GET", "/v1/keys"): A,
    ("DELETE", "/v1/keys/{id}"): A,
    ("PUT", "/v1/secrets/{secret}"): D,
    ("GET", "/v1/secrets"): R,
    ("DELETE", "/v1/secrets/{secret}"): D,
    ("GET", "/v1/audit"): D,
    # issue 19's read endpoints: a function's (path names are put in the namespace)
    ("GET", "/v1/functions/{name}/logs"): R,
    ("GET", "/v1/functions/{name}/stats"): R,
    ("GET", "/v1/functions/{name}/simulate"): R,
    # The pool is the platform's, not a namespace's (generic instances, memory of every
    # namespace's warm instances): the admin token only.
    ("GET", "/v1/pool"): A,
    # Trusting an environment runs its packages' import code in the process that builds other
    # functions' walls (docs/security.md): the operator's decision, never a key's.
    ("PUT", "/v1/environments/{hash}/trust"): A,
    ("DELETE", "/v1/environments/{hash}/trust"): A,
    ("GET", "/v1/environments/trusted"): A,
}
"""`/v1/openapi.json` and `/v1/docs` are public (served by the root application, outside this
table: they describe the API and hold nothing of it); `/ui` signs in with the admin token or a
reader/deployer key (gateway/dashboard_auth.py `viewer_for`, which uses `permit` below)."""


@dataclass(slots=True, frozen=True)
class Principal:
    """Who makes a request, and in which namespace."""

    actor: str
    """"admin", or "key:<id>"."""
    role: str
    namespace: str
    key_namespace: str | None
    """The namespace of the key (None: the admin token)."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


PRINCIPAL = web.RequestKey("principal", Principal)
"""Where the admin middleware leaves the principal on the request (`principal_of`)."""


def rule_for(method: str, route: str) -> Rule | None:
    return ROUTES.get(("GET" if method == "HEAD" else method, route))


def authorize(request: web.Request, route: str | None) -> Principal | web.Response:
    """The principal of a request to `route` (a template like "/v1/functions/{name}"; None: no
    route matched, the caller answers 404/405 to whoever is authenticated), or the 401/403 to
    answer. No SQL: keys come from the platform's key ring. The one check of the admin API
    (and of any other surface that serves it, like a dashboard)."""
    principal = authenticate(request)
    if isinstance(principal, web.Response):
        return principal
    return permit(principal, request.method, route) or principal


def authenticate(request: web.Request) -> Principal | web.Response:
    """Who sends the request (the admin token, or a valid API key), in which namespace; else
    the 401 (or a 400 for a namespace that cannot be one)."""
    platform = request.app[PLATFORM]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # (surrogateescape: a header with bytes that are not UTF-8 is a wrong token, not a 500)
    presented = token.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not presented:
        return unauthorized(
            "unauthorized",
            "missing admin token (or API key): send Authorization: Bearer <token> (fn reads "
            "it from the state dir, or FN_TOKEN)",
        )
    wanted = _namespace_asked(request)
    if isinstance(wanted, web.Response):
        return wanted
    if hmac.compare_digest(presented, platform.token.encode()):
        return Principal("admin", "admin", wanted or DEFAULT_NAMESPACE, None)
    key = platform.keys.check(presented.decode("utf-8", "replace"))
    if isinstance(key, KeyRefused):
        code = "unauthorized" if key.code == "unknown_key" else key.code
        message = "wrong admin token or unknown API key" if code == "unauthorized" else key.message
        return unauthorized(code, message)
    return Principal(f"key:{key.id}", key.role, wanted or key.namespace, key.namespace)


def permit(principal: Principal, method: str, route: str | None) -> web.Response | None:
    """None when `principal` may use `route` (see `authorize`), else the 403 saying why."""
    if principal.key_namespace is not None and principal.namespace != principal.key_namespace:
        return forbidden(
            f"{principal.actor} is a key of namespace {principal.key_namespace!r}, not "
            f"{principal.namespace!r}: use a key of {principal.namespace!r} "
            f"(fn key create --namespace {principal.namespace} ...)"
        )
    if route is None:
        return None
    rule = rule_for(method, route)
    if rule is None:
        if principal.is_admin:
            return None
        return forbidden(f"{method} {route} is not open to API keys: use the admin token")
    if RANKS[principal.role] < RANKS[rule.role]:
        needed = "the admin token" if rule.role == "admin" else f"a {rule.role} key"
        return forbidden(
            f"{method} {route} needs {needed}; {principal.actor} is a "
            f"{principal.role} key of namespace {principal.namespace!r}",
            needs=rule.role,
        )
    if rule.shared and not principal.is_admin and principal.namespace != DEFAULT_NAMESPACE:
        return forbidden(
            f"{method} {route} works outside namespaces: it needs a key of the "
            f"{DEFAULT_NAMESPACE!r} namespace (or the admin token), not of "
            f"{principal.namespace!r}",
            needs=rule.role,
        )
    return None


def _namespace_asked(request: web.Request) -> str | web.Response | None:
    asked = request.headers.get(NAMESPACE_HEADER) or request.query.get("namespace")
    if asked is None:
        return None
    if not NAMESPACE.fullmatch(asked):
        return error_response(
            400,
            "bad_namespace",
            f"{asked[:50]!r} is not a namespace: 1-40 lowercase letters, digits and -, "
            "starting with a letter",
        )
    return asked


def unauthorized(code: str, message: str) -> web.Response:
    return error_response(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="ember"'})


def forbidden(message: str, needs: str | None = None) -> web.Response:
    return error_response(403, "forbidden", message, needs=needs)


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def scoped(request: web.Request, name: str | None) -> str | None:
    """A function name a request gives in its body or query, put in the request's namespace
    (names in the path are put there by the admin middleware). A name no function can have
    is a 400: `team-a.x` is how function `x` of `team-a` is stored, not a name of `default`."""
    if name is None:
        return None
    if not NAME.fullmatch(name):
        raise bad_request("bad_name", f"{name[:70]!r} is not a function name")
    return qualify(principal_of(request).namespace, name)


def may_see(request: web.Request, stored: str) -> bool:
    """Whether the request's principal may see function `stored` (its namespace's)."""
    principal = principal_of(request)
    return principal.is_admin or split_name(stored)[0] == principal.namespace


def invoke_refusal(platform: Platform, header: str, stored: str) -> web.Response | None:
    """None when `header` (Authorization) lets its bearer call private function `stored`, else
    the 401/403 that names the key it needs. No SQL."""
    namespace, _ = split_name(stored)
    needed = (
        f"an invoker key of namespace {namespace!r} "
        f"(fn key create --namespace {namespace} --role invoker)"
    )
    scheme, _, token = header.partition(" ")
    presented = token.strip()
    if scheme.lower() != "bearer" or not presented:
        return unauthorized(
            "key_required",
            f"function {shown_name(stored)!r} is private: send Authorization: Bearer <key>, "
            f"with {needed}",
        )
    if hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), platform.token.encode()):
        return None
    key = platform.keys.check(presented)
    if isinstance(key, KeyRefused):
        return unauthorized(
            key.code, f"{key.message}; function {shown_name(stored)!r} needs {needed}"
        )
    if key.namespace != namespace or RANKS[key.role] < RANKS["invoker"]:
        return forbidden(
            f"API key {key.id} ({key.role} of namespace {key.namespace!r}) may not call "
            f"{shown_name(stored)!r}: it needs {needed}",
            needs="invoker",
        )
    return None
