"""`fn up` killed with SIGKILL, then started again on the same state dir: the deliveries it had
claimed are retried at once (not when their leases end), the activation records it had not
written yet are not lost, and its embedded Postgres is stopped by the next clean stop. And a
second `fn up` on a state dir in use is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import psutil
import pytest

from fn.client import Client, ClientError
from tests.conftest import ROOT, shared

pytestmark = pytest.mark.timeout(150)
FN = str(Path(sys.executable).parent / "fn")


class FnUp:
    """`fn up` as a subprocess on `state_dir`; killed or stopped by its PID."""

    def __init__(self, state_dir: Path, expose: Path, **env_vars: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FN_")}
        env.pop("DATABASE_URL", None)
        env.update(FN_STATE_DIR=str(state_dir), FN_EXPOSE=str(expose), FN_GENERIC_POOL="1")
        env.update(env_vars)  # (DATABASE_URL: that database, no embedded Postgres)
        self.env = env
        self.process = subprocess.Popen(
            [FN, "up", "--port", "0"], env=env, cwd=ROOT, stderr=subprocess.PIPE
        )
        assert self.process.stderr is not None
        self.lines: list[bytes] = []
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith(b"Ember is up"):
                break
        else:
            pytest.fail(f"fn up exited with {self.process.wait()}: {self.log()}")
        stderr = self.process.stderr
        self._drain = threading.Thread(target=lambda: self.lines.extend(stderr), daemon=True)
        self._drain.start()
        address = json.loads((state_dir / "gateway.json").read_text())
        self.url = address["url"]
        self.client = Client(self.url, (state_dir / "token").read_text().strip(), timeout_s=30)
        self.children = psutil.Process(self.process.pid).children(recursive=True)

    def log(self) -> str:
        return b"".join(self.lines).decode(errors="replace")[-3000:]

    def _closed(self) -> None:
        self._drain.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would; its instances go with it (PDEATHSIG)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._closed()
        _, alive = psutil.wait_procs(self.children, timeout=10)
        assert not alive, f"processes outlived a killed fn up: {alive}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._closed()
        assert code == 0, self.log()
        _, alive = psutil.wait_procs(self.children, timeout=10)
        assert not alive, f"processes outlived fn up: {alive}"


@contextmanager
def platforms(state_dir: Path) -> Iterator[list[FnUp]]:
    """The `fn up`s a test starts; any left running is killed, and so is the embedded
    Postgres of `state_dir` if the platform left it (the failure then is the test's)."""
    started: list[FnUp] = []
    try:
        yield started
    finally:
        for up in started:
            if up.process.poll() is None:
                up.process.kill()
                up.process.wait()
                up._closed()
        postmaster = postmaster_of(state_dir / "pgdata")
        if postmaster is not None:
            postmaster.terminate()
            postmaster.wait(10)


def postmaster_of(pgdata: Path) -> psutil.Process | None:
    """The postgres running on `pgdata`, per its postmaster.pid (and the process's cwd)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if process.name() == "postgres" and Path(process.cwd()) == pgdata.resolve():
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def wait_until(predicate: object, timeout_s: float, what: object) -> float:
    """Poll `predicate` (a callable) until true; returns the seconds it took."""
    what = what() if callable(what) else what
    assert callable(predicate)
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout_s, f"not within {timeout_s}s: {what}"
        time.sleep(0.05)
    return time.monotonic() - t0


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


HOLDING = (
    "import os, time\n"
    "def handler(event, context):\n"
    "    with open(context.config['STARTED'], 'a') as f:\n"
    "        f.write(str(event['n']) + '\\n')\n"
    "    deadline = time.monotonic() + 25\n"
    "    while os.path.exists(context.config['HOLD']) and time.monotonic() < deadline:\n"
    "        time.sleep(0.01)\n"
    "    with open(context.config['OUT'], 'a') as f:\n"
    "        f.write(str(event['n']) + '\\n')\n"
)


def test_claimed_deliveries_are_retried_at_once_after_a_kill(tmp_path: Path) -> None:
    state, out = tmp_path / "state", shared(tmp_path)
    started, done, hold = out / "started", out / "done", out / "hold"
    hold.touch()
    with platforms(state) as running:
        running.append(first := FnUp(state, out))
        env = {"STARTED": str(started), "OUT": str(done), "HOLD": str(hold)}
        first.client.api(
            "POST",
            "/v1/functions",
            {"name": "slow", "source": HOLDING, "filename": "handler.py", "env": env},
        )
        for n in range(3):
            reply = first.client.request(
                "POST",
                "/fn/slow",
                json.dumps({"n": n}).encode(),
                {"Prefer": "respond-async", "Content-Type": "application/json"},
            )
            assert reply.status == 202, reply.body
        # All three claimed and running in handlers that wait for `hold` to go.
        wait_until(
            lambda: len(lines(started)) == 3, 30, lambda: f"three deliveries running: {first.log()}"
        )
        first.kill()
        hold.unlink()
        assert lines(done) == []

        running.append(second := FnUp(state, out))
        # The leases run for the timeout plus two minutes: retried well before.
        took_s = wait_until(lambda: len(set(lines(done))) == 3, 20, "the deliveries retried")
        assert set(lines(done)) == {"0", "1", "2"}, second.log()
        assert took_s < 20
        second.stop()


async def _lock_activations(state: Path) -> asyncpg.Connection:
    """A superuser's transaction holding the activations table: the platform's batches of
    records wait, as they would behind a slow disk, while calls go on (no SQL on the warm
    path)."""
    pgdata = state / "pgdata"
    socket_dir = (pgdata / "postmaster.pid").read_text().splitlines()[4]
    password = (state / "pgdata.secrets" / "postgres").read_text().strip()
    conn = await asyncpg.connect(
        host=socket_dir, user="postgres", password=password, database="postgres"
    )
    await conn.execute("BEGIN; LOCK TABLE ember_activations IN ACCESS EXCLUSIVE MODE")
    return conn


def test_activation_records_survive_a_kill(tmp_path: Path) -> None:
    state, out = tmp_path / "state", shared(tmp_path)
    with platforms(state) as running:
        running.append(first := FnUp(state, out))
        source = "def handler(event, context):\n    return event\n"
        first.client.api(
            "POST", "/v1/functions", {"name": "echo", "source": source, "filename": "handler.py"}
        )
        assert first.client.invoke("echo", b"{}", "application/json").status == 200
        loop = asyncio.new_event_loop()
        try:
            lock = loop.run_until_complete(_lock_activations(state))
            ids = []
            for n in range(20):
                reply = first.client.invoke("echo", json.dumps({"n": n}).encode(), "text/plain")
                assert reply.status == 200, reply.body
                ids.append(reply.headers["x-ember-activation-id"])
            first.kill()  # with the records of 20 calls not yet in Postgres
            loop.run_until_complete(lock.close())
        finally:
            loop.close()

        running.append(second := FnUp(state, out))
        missing = [
            i for i in ids if second.client.request("GET", f"/v1/activations/{i}").status != 200
        ]
        assert missing == [], f"{len(missing)} of {len(ids)} activation records lost"
        second.stop()


def test_no_embedded_postgres_is_left_after_a_kill_and_a_restart(tmp_path: Path) -> None:
    state, out = tmp_path / "state", shared(tmp_path)
    pgdata = state / "pgdata"
    with platforms(state) as running:
        running.append(first := FnUp(state, out))
        postmaster = postmaster_of(pgdata)
        assert postmaster is not None
        first.kill()
        assert postmaster.is_running()  # a daemon: not a child of fn up

        running.append(second := FnUp(state, out))
        second.stop()
        postmaster.wait(10)  # (psutil.TimeoutExpired if it runs on)
        assert postmaster_of(pgdata) is None
        assert not (pgdata / "postmaster.pid").exists()


def test_a_second_fn_up_on_a_state_dir_in_use_is_refused(tmp_path: Path) -> None:
    state, out = tmp_path / "state", shared(tmp_path)
    with platforms(state) as running:
        running.append(first := FnUp(state, out))
        second = subprocess.run(
            [FN, "up", "--port", "0"],
            env=first.env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        message = second.stderr.decode()
        assert second.returncode == 1, message
        assert f"the state dir {state} is in use" in message
        assert f"pid {first.process.pid}" in message
        assert first.url in message
        # The first one is untouched: still found where the CLI looks, still serving.
        assert json.loads((state / "gateway.json").read_text())["url"] == first.url
        assert first.client.request("GET", "/healthz").status == 200
        first.stop()


def test_a_second_signal_exits_at_once_and_takes_the_embedded_postgres_along(
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "state", shared(tmp_path)
    pgdata = state / "pgdata"
    started, done, hold = out / "started", out / "done", out / "hold"
    hold.touch()
    with platforms(state) as running:
        running.append(up := FnUp(state, out))
        env = {"STARTED": str(started), "OUT": str(done), "HOLD": str(hold)}
        up.client.api(
            "POST",
            "/v1/functions",
            {"name": "slow", "source": HOLDING, "filename": "handler.py", "env": env},
        )

        def call_slow() -> None:
            with contextlib.suppress(ClientError):  # the platform exits under it: expected
                up.client.invoke("slow", b'{"n": 1}', "application/json")

        call = threading.Thread(target=call_slow, daemon=True)
        call.start()
        wait_until(started.exists, 30, "the call to start")
        postmaster = postmaster_of(pgdata)
        assert postmaster is not None
        up.process.send_signal(signal.SIGTERM)  # a clean stop: it waits for the call...
        wait_until(lambda: b"shutting down" in b"".join(up.lines), 30, "the first signal")
        up.process.send_signal(signal.SIGTERM)  # ...and the impatient second Ctrl-C
        assert up.process.wait(timeout=30) == 130
        up._closed()
        postmaster.wait(20)  # (psutil.TimeoutExpired if it runs on)
        assert postmaster_of(pgdata) is None
