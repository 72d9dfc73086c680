"""A function's files as the zip a deploy sends: hidden files, caches and virtualenvs left
out, requirements.txt sent apart (as the requirements), fixed dates and modes so that the same
files give the same sha256."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_SKIPPED = frozenset({"__pycache__", "venv", ".venv", "node_modules"})


def zip_dir(root: Path, prefix: str = "", extra: Sequence[tuple[Path, str]] = ()) -> bytes:
    """The function's directory as a zip: hidden files, caches and virtualenvs left out, and
    requirements.txt (sent as the requirements). `prefix` puts the files in a folder of the zip
    (an OpenFaaS handler goes in function/); `extra` adds (file or directory, path in the zip)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    written: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for base, at in ((root, prefix.rstrip("/")), *extra):
            paths = sorted(base.rglob("*")) if base.is_dir() else [base]
            for path in paths:
                rel = path.relative_to(base) if base.is_dir() else Path(path.name)
                if (
                    any(part.startswith(".") or part in _SKIPPED for part in rel.parts)
                    or path.is_symlink()
                    or not path.is_file()
                    or path.suffix == ".pyc"
                    or (base == root and rel == Path("requirements.txt"))
                ):
                    continue
                name = (Path(at) / rel if base.is_dir() else Path(at)).as_posix()
                if name in written:
                    continue  # the function's own file wins over an extra one
                written.add(name)
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16  # fixed: the same files give the same sha256
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
