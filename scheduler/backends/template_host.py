"""The `scheduler.backends.TemplateBackend` side of a backend that keeps templates on this node
(`scheduler.backends.templates`): what the scheduler asks of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.backends.templates import Templates
    from store.records import Version


class KeepsTemplates:
    """The `scheduler.backends.TemplateBackend` side of a backend whose `templates` are
    these (the local backend's)."""

    templates: Templates | None

    def keep_template(
        self,
        version: Version,
        meta: Mapping[str, object],
        code: bytes,
        *,
        keep_alive_s: float,
        fits: Callable[[], bool],
    ) -> None:
        """The version earned a template: make it (in the background, in free room)."""
        if self.templates is not None:
            self.templates.keep(version, meta, code, keep_alive_s=keep_alive_s, fits=fits)

    def has_template(self, version: Version) -> bool:
        return self.templates is not None and self.templates.get(version) is not None

    def drop_templates(self, function: str, keep_version: int | None = None) -> int:
        """Retire the function's templates (all of them without a function)."""
        return self.templates.drop(function, keep_version) if self.templates is not None else 0

    def give_template_room(self) -> bool:
        return self.templates is not None and self.templates.give_room()

    def template_usage(self) -> tuple[int, int]:
        return self.templates.usage() if self.templates is not None else (0, 0)
