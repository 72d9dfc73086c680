"""Where new instances can be forked from instead of importing: a version's template
(`scheduler.backends.templates`) and a trusted environment's zygote
(`scheduler.backends.env_zygotes`); when a version earns a template, and what both are charged.

A part of `Scheduler` (mixed in through `Upkeep`) kept in a module of its own; the state it
works on is the scheduler's, declared below.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

from invoker.protocol import Reply
from scheduler.backends import Backend, TemplateBackend
from scheduler.backends.env_zygotes import EnvZygoteBackend, EnvZygotes
from scheduler.capacity import Room
from scheduler.live import Checked, Prepare, Tracked, add_prepared, specialize_meta
from scheduler.pool import VersionKey
from scheduler.router import PolicyRouter
from scheduler.settings import PoolSettings
from scheduler.tasks import Supervisor
from store.records import Version


class Forking:
    backend: Backend
    settings: PoolSettings
    policies: PolicyRouter
    room: Room
    _versions: dict[VersionKey, Tracked]
    _tasks: Supervisor
    _prepare: Prepare | None

    @functools.cached_property
    def _templates(self) -> TemplateBackend | None:
        return self.backend if isinstance(self.backend, TemplateBackend) else None

    def _forkable(self, version: Version) -> bool:
        """A new instance of `version` is to be forked from its template (not a generic
        instance specialized: that would import the module again)."""
        if self._env_zygotes and self._env_zygotes.fork_source(version.package.env_hash):
            return True  # (or from its trusted environment's zygote: imported its packages)
        templates = self._templates
        return templates is not None and templates.has_template(version)

    def _keep_template(
        self, version: Version, meta: Mapping[str, object], code: bytes, reply: Reply
    ) -> None:
        """An instance of `version` was specialized by an import: its template is made when
        that was not its first import on this node (it cold-started again, or scaled out), or
        its import was slow (`slow_import`). Never for a deploy's check (version 0,
        untracked): `admit` decides for that import."""
        tracked = self._versions.get((version.function, version.version))
        if self._templates is None or reply.get("template") == "forked" or tracked is None:
            return
        tracked.imports += 1
        if tracked.imports >= 2 or self.slow_import(reply):
            self._templates.keep_template(
                version,
                meta,
                code,
                keep_alive_s=self.policies.settings(version.function).keep_alive_s,
                fits=self.room.generic_fits,  # (a template never evicts an instance)
            )

    def slow_import(self, reply: Reply) -> bool:
        """The import took more CPU than `template_slow_import_s`, as the instance says (its
        CPU time: a loaded machine stretches the wall time of every import alike). A function
        that lies gets a template it could also earn by a second cold start."""
        cpu_ms = reply.get("import_cpu_ms")
        if not isinstance(cpu_ms, float | int) or cpu_ms != cpu_ms:  # (absent, junk, NaN)
            return False
        return cpu_ms >= self.settings.template_slow_import_s * 1000

    @functools.cached_property
    def _env_zygotes(self) -> EnvZygotes | None:
        """Trusted environments' zygotes (`scheduler.backends.env_zygotes`), if the backend
        keeps them: charged like templates, and their environments' instances forked."""
        backend = self.backend
        return backend.env_zygotes if isinstance(backend, EnvZygoteBackend) else None

    async def _template_of(self, version: Version, checked: Checked) -> None:
        tracked = self._versions.get(key := (version.function, version.version))
        meta = specialize_meta(version, self.settings.max_response_bytes)
        if self._prepare is not None:
            add_prepared(meta, await self._prepare(version))
        code = version.package.archive or version.source.encode()
        if tracked is not None and self._versions.get(key) is tracked:  # (not deleted, rolled)
            self._keep_template(version, meta, code, {"ok": True, "import_cpu_ms": math.inf})

    def _fork_sources_usage(self) -> tuple[int, int]:
        """Templates and environment zygotes charged against the node's capacity: how many
        (each counts as an instance) and their memory."""
        templates, template_bytes = (
            (0, 0) if self._templates is None else self._templates.template_usage()
        )
        zygotes, zygote_bytes = (0, 0) if self._env_zygotes is None else self._env_zygotes.usage()
        return templates + zygotes, template_bytes + zygote_bytes
