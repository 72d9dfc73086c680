"""What instances leave in the platform's socket directory: the code each one was given, and
the whole directory of a platform that was killed before it could remove its own."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def remove_code_dirs(folder: str, pid: int) -> None:
    for code_dir in Path(folder).glob(f"ember-fn-{pid}-*"):
        shutil.rmtree(code_dir, ignore_errors=True)


def remove_dirs_of_dead_platforms() -> None:
    """A platform killed with SIGKILL leaves its socket directory (and its instances' code):
    the next one removes the directories of platforms whose process is gone."""
    for folder in Path(tempfile.gettempdir()).glob("ember-*-*"):
        owner = folder.name.split("-")[1]
        if not owner.isdigit() or not folder.is_dir():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's
