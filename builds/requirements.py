"""What a requirements.txt may say (an allowlist), its normal form, and the environment hash
(the requirements with the Python version and platform) that names a built environment."""

from __future__ import annotations

import hashlib
import re
import sys
import sysconfig

MAX_REQUIREMENTS_BYTES = 64 << 10
PYTHON = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
PLATFORM = sysconfig.get_platform()
# What a requirements line may be (an allowlist: pip reads many options, some of which read
# files or run code from paths): a requirement from an index, optionally with extras, a version
# specifier, environment markers and --hash options; a direct reference over http(s); or one
# of the index and binary options below.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(
    rf"^{_NAME}(?:\s*\[\s*{_NAME}(?:\s*,\s*{_NAME})*\s*\])?"
    r"(?:\s*@\s*https?://[^\s;]+)?"
    r"(?:\s*[<>=!~][^;\s@]*(?:\s*,\s*[<>=!~][^;\s@]*)*)?"
    r"(?:\s*;[^@]*)?$"
)
_HASH = re.compile(r"^--hash=sha(256|384|512):[0-9a-f]+$")
_URL_OPTIONS = frozenset({"-i", "--index-url", "--extra-index-url"})
_VALUE_OPTIONS = frozenset({"--only-binary", "--no-binary"})
_FLAG_OPTIONS = frozenset({"--pre", "--prefer-binary"})
_BINARY_VALUE = re.compile(rf"^(:all:|:none:|{_NAME}(,{_NAME})*)$")


class BuildFailed(Exception):
    """pip could not install the requirements; `log` is its whole output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


class RequirementsError(ValueError):
    """The requirements cannot be built here (a local path, an editable install, ...)."""


def normalize_requirements(text: str) -> str:
    """One requirement per line, comments and blank lines dropped, sorted: the same set of
    requirements always hashes the same. Lines that point at the deployer's own files are
    refused: the build runs on the platform, which cannot see them."""
    if len(text.encode()) > MAX_REQUIREMENTS_BYTES:
        raise RequirementsError(f"requirements are larger than {MAX_REQUIREMENTS_BYTES} bytes")
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if not _allowed(line):
            raise RequirementsError(
                f"requirements line {number}: {line!r} is not supported: give packages from "
                "an index (like requests==2.32.3, with extras, markers or --hash), an "
                "https:// URL (name @ https://...), or the options -i/--index-url, "
                "--extra-index-url, --pre, --prefer-binary, --only-binary, --no-binary. "
                "Local paths, -e, -r, -c and other options cannot be used: the build runs on "
                "the platform"
            )
        lines.append(line)
    return "\n".join(sorted(set(lines))) + "\n" if lines else ""


def _allowed(line: str) -> bool:
    tokens = line.split()
    if tokens[0].startswith("-"):
        option, _, value = tokens[0].partition("=")
        values = [value] if value else tokens[1:]
        if option in _FLAG_OPTIONS:
            return not value and len(tokens) == 1
        if len(values) != 1 or (not value and len(tokens) != 2):
            return False
        if option in _URL_OPTIONS:
            return re.fullmatch(r"https?://\S+", values[0]) is not None
        return option in _VALUE_OPTIONS and _BINARY_VALUE.match(values[0]) is not None
    requirement, *options = re.split(r"\s+(?=--)", line)
    if re.search(r"\s-", requirement):  # pip reads " -C..." in a marker as an option
        return False
    return _REQUIREMENT.match(requirement) is not None and all(_HASH.match(o) for o in options)


def environment_hash(normalized: str) -> str:
    return hashlib.sha256(f"{PYTHON}\n{PLATFORM}\n{normalized}".encode()).hexdigest()
