"""The admin API under `/v1`: deploy, list, show, delete, versions, rollback, activations.

Every route needs `Authorization: Bearer <token>` (see `app.auth_middleware`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

from aiohttp import web

from builds.requirements import BuildFailed, RequirementsError
from config.units import ConfigError
from gateway import schemas as api
from gateway import tenancy
from gateway.api_spec import operation
from gateway.auth import may_see, principal_of
from gateway.errors import error_response, json_response
from gateway.events import delivery_json
from gateway.frameworks import missing_module, missing_packages, with_packages
from gateway.namespaces import qualify, split_name
from gateway.platform import Platform
from gateway.requests import json_body, limit_of, not_found, platform_of
from gateway.units import (
    FILENAME,
    NAME,
    ArchiveError,
    archive_names,
    checked_style_options,
    parse_access,
    parse_function_config,
    read_archive,
)
from gateway.views import activation_json, function_json, version_json
from scheduler.scheduler import AtCapacity, StartFailed
from store import (
    ActivationId,
    FunctionNotFound,
    Package,
    TriggerError,
    Version,
    VersionNotFound,
)

routes = web.RouteTableDef()


@routes.post("/v1/functions")
@operation(
    "functions",
    "Deploy a version (active at once)",
    body=api.DeployRequest,
    responses={201: api.VersionJSON},
)
async def deploy(request: web.Request) -> web.Response:
    platform = platform_of(request)
    body = await json_body(request)
    namespace = principal_of(request).namespace
    if isinstance(body.get("name"), str):
        request[tenancy.AUDIT_SUBJECT] = f"function {body['name'][:70]}"
    await tenancy.ensure_namespace(platform, namespace)
    response = await _deploy(platform, body, namespace)
    platform.metrics.deploys.labels("ok" if response.status < 300 else "rejected").inc()
    return response


async def _deploy(platform: Platform, body: dict[str, Any], namespace: str) -> web.Response:
    name, source = body.get("name"), body.get("source")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return error_response(
            400,
            "bad_name",
            f"invalid function name {name!r}: use 1-63 "
            "lowercase letters, digits, - and _, starting with a letter",
        )
    name = qualify(namespace, name)
    if body.get("archive") is not None and source is None:
        source = ""  # taken from the archive below
    if not isinstance(source, str) or (not source.strip() and body.get("archive") is None):
        return error_response(400, "bad_source", "the request has no source code")
    filename = body.get("filename", "handler.py")
    if not isinstance(filename, str) or not FILENAME.match(filename):
        return error_response(
            400,
            "bad_filename",
            f"invalid file name {filename!r}: the module "
            "must be a Python identifier ending in .py, like handler.py",
        )
    try:
        config = parse_function_config(body)
        access = parse_access(body, await tenancy.default_auth(platform, name, namespace))
    except ConfigError as exc:
        return error_response(400, "bad_config", str(exc), setting=exc.setting)
    missing = await tenancy.missing_secrets(platform, namespace, access["secrets"])
    if missing is not None:
        return missing
    config = dataclasses.replace(config, **access)
    archive = None
    files = {filename: source}
    if body.get("archive") is not None:
        try:  # (decoding, unzipping and compiling in a thread: calls go on meanwhile)
            archive, files = await asyncio.to_thread(
                read_archive, body["archive"], filename, platform.settings.max_source_bytes
            )
        except ArchiveError as exc:
            return error_response(400, "bad_archive", str(exc))
        source = files[filename]
    elif len(source.encode()) > platform.settings.max_source_bytes:
        return error_response(
            400,
            "source_too_large",
            f"{filename} is larger than the limit "
            f"of {platform.settings.max_source_bytes} bytes (FN_MAX_SOURCE)",
        )
    for path, text in files.items():
        try:
            await asyncio.to_thread(compile, text, path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            return error_response(
                400,
                "syntax_error",
                f"{path}, line {exc.lineno}: {exc.msg}",
                file=path,
                line=exc.lineno,
                offset=exc.offset,
                text=(exc.text or "").rstrip("\n"),
            )
        except ValueError as exc:  # e.g. null bytes in the source
            return error_response(400, "bad_source", f"{path}: {exc}")
    if "/" in filename and archive is None:
        return error_response(
            400,
            "bad_filename",
            f"{filename} is a module in a package: deploy the directory that holds it "
            f"(fn deploy DIR --handler {filename.removesuffix('.py')}.FUNCTION)",
        )
    names = tuple(archive_names(archive)) if archive else ()
    requirements = body.get("requirements") or ""
    if not isinstance(requirements, str):
        return error_response(
            400, "bad_requirements", "requirements must be the text of a requirements.txt"
        )
    added = [] if config.style == "ember" else missing_packages(config.style, files, requirements)
    added_total: list[str] = []
    given = requirements
    detected_first = False
    for attempt in range(MAX_FRAMEWORK_RETRIES + 1):
        if added:
            requirements = with_packages(requirements, added)
            added_total += added
        packaged = await _package(platform, name, requirements, archive, names)
        if isinstance(packaged, web.Response):
            return packaged
        built = packaged
        candidate = Version(
            function=name,
            version=0,
            source=source,
            sha256="",
            filename=filename,
            config=config,
            created_at=_now(),
            package=built,
        )
        try:
            checked = await platform.scheduler.check(candidate)
        except AtCapacity as exc:
            return error_response(
                503,
                "at_capacity",
                f"{filename} could not be checked: {exc}",
                headers={"Retry-After": str(round(exc.retry_after_s))},
            )
        except StartFailed as exc:
            module = missing_module(exc.error)
            if attempt < MAX_FRAMEWORK_RETRIES and config.style != "ember" and module is not None:
                # A framework the platform it was written for provides, found missing only
                # by the import (a style detected there that hands it a Flask request; a
                # template that needs two of them finds them one at a time).
                added = missing_packages(config.style, files, requirements, also=[module])
                if added:
                    continue
            if exc.error.get("type") == "StyleMismatch":
                return error_response(
                    422, "style_mismatch", str(exc.error.get("message", exc)), logs=exc.logs
                )
            return error_response(
                422,
                "import_error",
                f"{filename} failed to import: {exc}",
                type=exc.error.get("type"),
                traceback=exc.error.get("traceback", ""),
                logs=exc.logs,
            )
        if config.style == "auto" and added_total and attempt < MAX_FRAMEWORK_RETRIES:
            # Added before the style was known: the detected platform's own versions (Fission's
            # Flask 2) replace them, checked again.
            wanted = missing_packages(checked.style, files, given)
            if sorted(wanted) != sorted(added_total):
                platform.scheduler.drop_checked_soon(checked)
                config = dataclasses.replace(config, style=checked.style, entry=checked.entry)
                requirements, added, added_total, detected_first = given, wanted, [], True
                continue
        break
    detected = config.style == "auto" or detected_first
    config = dataclasses.replace(
        config,
        style=checked.style,
        entry=checked.entry,
        style_options=checked_style_options(checked.style, checked.style_options),
    )
    try:
        version = await platform.store.create_version(
            name, source=source, filename=filename, config=config, package=built
        )
    except BaseException:
        platform.scheduler.drop_checked_soon(checked)
        raise
    platform.functions.put(version, active=True)
    if platform.router.is_home(name):
        await platform.scheduler.admit(checked, version)  # drops the instance on any failure
    else:  # its home gateway starts the instances of its calls (docs/kubernetes.md)
        platform.scheduler.drop_checked_soon(checked, "import check done; the home is a peer")
    await platform.scheduler.ensure_warm(version)
    out = version_json(version, active=True)
    out["style_detected"] = detected
    out["added_requirements"] = added_total
    return json_response(out, status=201)


MAX_FRAMEWORK_RETRIES = 3
"""Import checks again after adding a provided package the previous one found missing."""


async def _package(
    platform: Platform,
    name: str,
    requirements: str,
    archive: bytes | None,
    names: tuple[str, ...],
) -> Package | web.Response:
    """The deploy's package, its requirements installed (once per set of requirements)."""
    if not requirements.strip():
        return Package(archive=archive, files=names)
    try:
        env = await platform.builder.ensure(name, requirements)
    except RequirementsError as exc:
        return error_response(400, "bad_requirements", str(exc))
    except BuildFailed as exc:
        return error_response(
            422,
            "build_failed",
            f"installing the requirements failed; the previous "
            f"version (if any) keeps serving. pip said:\n{exc}",
            log=exc.log[-20000:],
            hint=f"full output: fn build-logs {name}",
        )
    return Package(
        archive=archive,
        requirements=requirements,
        env_hash=env.hash,
        lock=env.lock,
        files=names,
    )


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


@routes.get("/v1/functions")
@operation("functions", "List functions", responses={200: api.FunctionList})
async def list_functions(request: web.Request) -> web.Response:
    platform, namespace = platform_of(request), principal_of(request).namespace
    functions = await platform.store.list_functions()
    return json_response(
        {
            "functions": [
                function_json(f, platform) for f in functions if split_name(f.name)[0] == namespace
            ]
        }
    )


@routes.get("/v1/functions/{name}")
@operation(
    "functions", "Show a function and its active version", responses={200: api.FunctionDetail}
)
async def show_function(request: web.Request) -> web.Response:
    platform = platform_of(request)
    name = request.match_info["name"]
    try:
        function = await platform.store.get_function(name)
        active = await platform.store.get_version(name)
    except FunctionNotFound:
        return not_found(name)
    return json_response(
        {**function_json(function, platform), "active": version_json(active, active=True)}
    )


@routes.delete("/v1/functions/{name}")
@operation(
    "functions", "Delete a function, its versions and triggers", responses={200: api.Deleted}
)
async def delete_function(request: web.Request) -> web.Response:
    platform = platform_of(request)
    name = request.match_info["name"]
    try:
        for trigger in await platform.store.list_triggers(name):
            if trigger.kind == "table":  # uninstall it from the watched database
                await platform.events.remove(trigger)
        platform.deleting.add(name)  # its notification's echo: this handler retires it
        await platform.store.delete_function(name)
    except FunctionNotFound:
        platform.deleting.discard(name)
        return not_found(name)
    except TriggerError as exc:
        platform.deleting.discard(name)
        return error_response(
            503,
            "watched_database_unavailable",
            f"cannot uninstall a table trigger of {name} ({exc}); retry, or "
            "remove it with fn trigger delete ID --force first",
        )
    platform.events.triggers_changed()
    platform.functions.invalidate(name)
    try:
        await platform.scheduler.retire(name)  # its instances are gone when this answers
    finally:
        platform.deleting.discard(name)
    return json_response({"deleted": name})


@routes.get("/v1/functions/{name}/versions")
@operation("functions", "List a function's versions", responses={200: api.VersionList})
async def list_versions(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        versions = await platform_of(request).store.list_versions(name)
    except FunctionNotFound:
        return not_found(name)
    return json_response({"versions": [version_json(v, active=a) for v, a in versions]})


@routes.post("/v1/functions/{name}/rollback")
@operation(
    "functions",
    "Activate an earlier version",
    body=api.RollbackRequest,
    body_required=False,
    responses={200: api.RolledBack},
)
async def rollback(request: web.Request) -> web.Response:
    platform = platform_of(request)
    name = request.match_info["name"]
    body = await json_body(request)
    to = body.get("to")
    if to is not None and (isinstance(to, bool) or not isinstance(to, int) or to < 1):
        return error_response(
            400,
            "bad_version",
            f"invalid version {to!r}: expected a number from fn versions " + name,
        )
    try:
        opening = await tenancy.rollback_opens(platform, name, to, body.get("auth"))
        if opening is not None:
            return opening
        active = await platform.store.set_active_version(name, to)
    except FunctionNotFound:
        return not_found(name)
    except VersionNotFound as exc:
        if to is None:
            return error_response(
                409,
                "no_previous_version",
                f'function "{name}" has no version before the active one',
            )
        return error_response(
            404, "version_not_found", f"{exc}; list them with: fn versions {name}"
        )
    platform.functions.invalidate(name)
    await platform.scheduler.ensure_warm(await platform.functions.resolve(name))
    return json_response({"function": name, "active_version": active})


@routes.get("/v1/functions/{name}/builds")
@operation(
    "functions", "Latest requirement builds", query=api.LimitQuery, responses={200: api.BuildList}
)
async def list_builds(request: web.Request) -> web.Response:
    """The latest builds of NAME's requirements, newest first, with pip's output."""
    platform = platform_of(request)
    name = request.match_info["name"]
    builds = await platform.store.list_builds(name, limit=limit_of(request))
    if not builds:
        try:
            await platform.store.get_function(name)
        except FunctionNotFound:
            return not_found(name)
    return json_response(
        {
            "builds": [
                {
                    "id": b.id,
                    "function": b.function,
                    "environment": b.env_hash,
                    "status": b.status,
                    "duration_s": round(b.duration_s, 3),
                    "created_at": b.created_at.isoformat(),
                    "log": b.log,
                }
                for b in builds
            ]
        }
    )


@routes.get("/v1/functions/{name}/activations")
@operation(
    "activations", "Recent activations", query=api.LimitQuery, responses={200: api.ActivationList}
)
async def list_activations(request: web.Request) -> web.Response:
    platform = platform_of(request)
    name = request.match_info["name"]
    limit = limit_of(request)
    try:
        await platform.store.get_function(name)
    except FunctionNotFound:
        return not_found(name)
    await platform.activations.flush()
    activations = await platform.store.list_activations(name, limit=limit)
    return json_response({"activations": [activation_json(a) for a in activations]})


@routes.get("/v1/activations/{id}")
@operation(
    "activations",
    "An activation or delivery",
    responses={200: api.ActivationJSON | api.DeliveryJSON},
)
async def show_activation(request: web.Request) -> web.Response:
    platform = platform_of(request)
    raw = request.match_info["id"]
    try:
        activation_id = ActivationId(uuid.UUID(raw))
    except ValueError:
        return error_response(400, "bad_activation_id", f'"{raw}" is not an activation id')
    delivery = await platform.store.get_delivery(activation_id)
    if delivery is not None and may_see(request, delivery.function):
        return json_response(delivery_json(delivery))
    activation = platform.activations.pending(activation_id) or await platform.store.get_activation(
        activation_id
    )
    if activation is None or not may_see(request, activation.function):
        return error_response(404, "activation_not_found", f'activation "{raw}" not found')
    return json_response(activation_json(activation))
