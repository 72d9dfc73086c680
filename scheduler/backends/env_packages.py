"""What an environment's zygote imports when the operator names no module: the top-level
packages of the environment's dists, read from their metadata without following a link
(`scheduler.backends.env_zygotes`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def top_level_modules(path: Path) -> list[str]:
    """The top-level packages of an environment's dists (`*.dist-info/top_level.txt`, else the
    first part of the paths in its `RECORD`), sorted; private ones (`_x`) and tests left out."""
    found: set[str] = set()
    for dist in sorted(path.glob("*.dist-info")):
        names = _read(dist / "top_level.txt").split()
        if not names:
            for line in _read(dist / "RECORD").splitlines():
                first = line.split(",", 1)[0].split("/", 1)[0].removesuffix(".py")
                if first and not first.endswith((".dist-info", ".data")) and first != "..":
                    names.append(first)
        found.update(n for n in names if _MODULE.fullmatch(n))
    return sorted(n for n in found if not n.startswith("_") and n not in ("test", "tests"))


def _read(path: Path) -> str:
    """A small metadata file of the environment, never through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, errors="replace") as f:
        return f.read(1 << 20)
