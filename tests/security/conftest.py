"""Hostile functions against a real `fn up` (run as root, as a systemd service would): each
attack of docs/security.md is a handler that tries it and reports what happened; each test
asserts the attack failed and that the platform and a bystander function keep answering.

One platform for the whole package (`fn up` takes seconds to start); tests deploy functions
of their own names and leave the bystander as they found it.

Needs root (uids of its own, cgroups, firewall rules): elsewhere the tests are skipped, saying
which protection is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from fn.client import Client, Reply
from tests.conftest import fn_up_process

BYSTANDER = textwrap.dedent("""
    import os
    SECRET = os.environ["API_KEY"]

    def handler(event, context):
        return {"ok": True, "secret_len": len(SECRET)}
""")


@dataclass
class Platform:
    """`fn up` as a subprocess, with the paths an attacker would aim at."""

    state_dir: Path
    process: subprocess.Popen[bytes]
    client: Client
    stderr: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.client.url

    def deploy(self, name: str, source: str, **config: Any) -> dict[str, Any]:
        body = {"name": name, "source": source, "filename": "handler.py", **config}
        result: dict[str, Any] = self.client.api("POST", "/v1/functions", body)
        return result

    def call(self, name: str, event: Any = None) -> Reply:
        return self.client.invoke(name, json.dumps(event or {}).encode(), "application/json")

    def value(self, name: str, event: Any = None) -> Any:
        """Call; what the handler returned (JSON decoded, text as str)."""
        reply = self.call(name, event)
        assert reply.status == 200, reply.body[:2000]
        if reply.headers.get("content-type", "").startswith("application/json"):
            return reply.json()
        return reply.body.decode()

    def attack(self, name: str, source: str, event: Any = None, **config: Any) -> Any:
        """Deploy a hostile handler, call it, return what it reports (it must answer)."""
        self.deploy(name, source, **config)
        return self.value(name, event)

    def healthy(self) -> None:
        """The platform answers, and the bystander still runs with its secret."""
        health = self.client.request("GET", "/healthz")
        assert health.status == 200, health.body
        reply = self.call("bystander")
        assert reply.status == 200, reply.body
        assert reply.json() == {"ok": True, "secret_len": 24}

    def pids_of(self, name: str) -> list[int]:
        pids: list[int] = self.client.api("GET", f"/v1/functions/{name}")["instances"]["pids"]
        return pids

    @property
    def zygote_pid(self) -> int:
        for child in psutil.Process(self.process.pid).children():
            if child.cmdline()[-1:] == ["--zygote"]:
                return child.pid
        raise AssertionError("no zygote")

    def log_bytes(self) -> int:
        return sum(len(line) for line in self.stderr)


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if os.geteuid() != 0:
        pytest.skip("the sandbox's uids, cgroups and firewall rules need root")
    state_dir = tmp_path_factory.mktemp("attacks") / "state"
    with fn_up_process(state_dir, FN_GENERIC_POOL="2") as up:
        url = json.loads((state_dir / "gateway.json").read_text())["url"]
        token = (state_dir / "token").read_text().strip()
        running = Platform(state_dir, up.process, Client(url, token, timeout_s=60), up.stderr)
        health = running.client.api("GET", "/healthz")
        off = health["isolation"]["protections_off"]
        if off:
            pytest.skip(f"protections off on this host: {off}")
        running.deploy("bystander", BYSTANDER, env={"API_KEY": "k" * 24})
        running.healthy()
        yield running


TRY = textwrap.dedent("""
    import os, socket, signal, glob, ctypes, errno

    def attempt(fn):
        try:
            return "succeeded: " + repr(fn())[:200]
        except BaseException as exc:
            return f"failed: {type(exc).__name__}: {exc}"[:300]
""")
