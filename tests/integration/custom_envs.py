"""Environments of packages a test writes itself (a hostile or odd package), stored as a build
would store them under the hash of a requirements line: a deploy with that line reuses it
(no index involved)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from builds.packing import pack, tree_bytes
from builds.requirements import PYTHON, environment_hash, normalize_requirements
from store import Environment, Store


async def store_environment(
    store: Store, directory: Path, requirements: str, files: dict[str, str]
) -> str:
    """Store an environment of `files` (path: text) for `requirements`; its hash. Each
    top-level module gets a dist-info naming it (top_level.txt), as pip writes one."""
    normalized = normalize_requirements(requirements)
    env_hash = environment_hash(normalized)
    site = directory / f"site-{env_hash[:12]}"
    for path, text in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(text)
    tops = sorted({p.split("/", 1)[0].removesuffix(".py") for p in files})
    dist = site / "custom-1.0.dist-info"
    dist.mkdir()
    (dist / "top_level.txt").write_text("\n".join(tops) + "\n")
    archive = directory / f"{env_hash[:12]}.tar.gz"
    size = await asyncio.to_thread(pack, site, archive)
    env = Environment(
        hash=env_hash,
        requirements=normalized,
        lock="custom==1.0\n",
        python=PYTHON,
        size_bytes=size,
        unpacked_bytes=tree_bytes(site),
        chunks=0,
        build_s=0.0,
    )
    assert await store.put_environment(env, archive)
    return env_hash
