"""An invoker pod's fetch of its environment (`invoker.environments`), on a fake urlopen, and
the tokens that let it (`gateway.env_tokens`)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from gateway.env_tokens import EnvTokens, TokenRefused
from gateway.settings import Settings
from invoker.environments import (
    EnvironmentRefused,
    EnvironmentUnavailable,
    ensure_environment,
)
from invoker.protocol import EnvironmentSource

HASH = "a" * 64


def archive(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def file(name: str, data: bytes = b"x = 1\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def source(data: bytes, **overrides: Any) -> EnvironmentSource:
    s: EnvironmentSource = {
        "hash": HASH,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "url": "http://envcache.test/environments/" + HASH,
        "token": "v1.token",
    }
    s.update(overrides)  # type: ignore[typeddict-item]
    return s


class Opener:
    """urlopen serving one body, recording what was asked."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests: list[Any] = []

    def __call__(self, request: Any, timeout: float) -> io.BytesIO:
        self.requests.append(request)
        return io.BytesIO(self.body)


def test_an_environment_is_fetched_checked_unpacked_and_then_found_in_the_cache(
    tmp_path: Path,
) -> None:
    data = archive([file("tiny/__init__.py", b"VERSION = '1.0'\n")])
    opener = Opener(data)
    first = ensure_environment(source(data), tmp_path, urlopen=opener)
    assert not first.cached
    assert first.path == tmp_path / HASH
    assert (first.path / "tiny" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    [request] = opener.requests
    assert request.get_header("Authorization") == "Bearer v1.token"
    # Another function with the same environment on this pod: nothing downloaded.
    again = ensure_environment(source(data), tmp_path, urlopen=opener)
    assert again.cached
    assert again.path == first.path
    assert len(opener.requests) == 1
    assert [p.name for p in tmp_path.iterdir()] == [HASH]  # no work directory left


def test_an_archive_that_does_not_match_its_sha256_is_refused_before_unpacking(
    tmp_path: Path,
) -> None:
    good = archive([file("tiny/__init__.py")])
    bad = archive([file("tiny/__init__.py", b"import os; os.system('evil')\n")])
    with pytest.raises(EnvironmentRefused, match="does not match the sha256"):
        ensure_environment(source(good, size_bytes=len(bad)), tmp_path, urlopen=Opener(bad))
    # Larger than announced: refused while it arrives.
    with pytest.raises(EnvironmentRefused, match="larger than"):
        ensure_environment(source(good), tmp_path, urlopen=Opener(good + b"\0" * 10))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "members",
    [
        [file("/etc/evil.py")],
        [file("../evil.py")],
        [file("pkg/../../evil.py")],
        [link("pkg", "/etc")],
        [link("pkg", "../../outside")],
        [link("pkg", "/etc/passwd", tarfile.LNKTYPE)],
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-absolute", "symlink-out", "hardlink"],
)
def test_entries_that_would_land_outside_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    # (Even with the right sha256: a platform build never makes one, but the pod trusts no
    # archive's paths.)
    data = archive(members)
    cache = tmp_path / "cache"
    with pytest.raises(EnvironmentRefused, match="refused"):
        ensure_environment(source(data), cache, urlopen=Opener(data))
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_bad_sources_and_network_errors_name_what_failed(tmp_path: Path) -> None:
    data = archive([file("m.py")])
    with pytest.raises(EnvironmentRefused, match="not http"):
        ensure_environment(source(data, url="file:///etc/passwd"), tmp_path, urlopen=Opener(data))
    with pytest.raises(EnvironmentRefused, match="hex digest"):
        ensure_environment(source(data, hash="../x"), tmp_path, urlopen=Opener(data))

    def unreachable(request: Any, timeout: float) -> io.BytesIO:
        raise OSError("connection refused")

    with pytest.raises(EnvironmentUnavailable, match="connection refused; is the environment"):
        ensure_environment(source(data), tmp_path, urlopen=unreachable)


def test_tokens_are_scoped_to_one_environment_and_expire() -> None:
    now = [1_000_000.0]
    tokens = EnvTokens("admin-token", ttl_s=60, clock=lambda: now[0])
    token = tokens.issue(HASH)
    assert "admin-token" not in token
    tokens.check(token, HASH)
    refusals = {
        "missing": ("", HASH),
        "forged": (token[:-4] + "0000", HASH),
        "malformed": ("Bearer x", HASH),
        "other key": (EnvTokens("another-admin-token").issue(HASH), HASH),
    }
    for why, (bad, env) in refusals.items():
        with pytest.raises(TokenRefused) as refused:
            tokens.check(bad, env)
        assert refused.value.status == 401, why
    with pytest.raises(TokenRefused) as refused:
        tokens.check(token, "b" * 64)
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    now[0] += 62
    with pytest.raises(TokenRefused) as refused:
        tokens.check(token, HASH)
    assert (refused.value.status, refused.value.code) == (401, "token_expired")


def test_the_gateway_reads_where_pods_fetch_environments() -> None:
    env = {"FN_STATE_DIR": "/state", "EMBER_ENV_URL": "http://cache:8083/"}
    settings = Settings.from_env({**env, "EMBER_ENV_TOKEN_TTL": "5m"})
    assert (settings.env_url, settings.env_token_ttl_s) == ("http://cache:8083", 300.0)
    assert Settings.from_env({"FN_STATE_DIR": "/state"}).env_url is None
