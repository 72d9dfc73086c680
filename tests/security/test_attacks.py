"""Hostile functions against a real `fn up` (run as root, as a systemd service would): each
attack of docs/security.md is a handler that tries it and reports what happened; each test
asserts the attack failed and that the platform and a bystander function keep answering.

Needs root (uids of its own, cgroups, firewall rules): elsewhere the module is skipped, saying
which protection is missing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from fn.client import Client, Reply
from tests.conftest import fn_up_process

pytestmark = [pytest.mark.timeout(120)]

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


@pytest.fixture(scope="module")
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


# -- 1. the platform's credentials and files -----------------------------------------------------


def test_1_cannot_read_the_gateway_environment_or_the_admin_token(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            return {
                "environ": attempt(lambda: open(f"/proc/{event['gateway']}/environ").read()),
                "token": attempt(lambda: open(event["token"]).read()),
                "state": attempt(lambda: os.listdir(event["state"])),
                "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "admin_api": attempt(lambda: socket.create_connection(
                    ("127.0.0.1", event["port"]), timeout=2)),
                "home": attempt(lambda: os.listdir("/root")),
                "env_keys": sorted(os.environ),
            }
    """)
    port = int(platform.url.rsplit(":", 1)[1])
    seen = platform.attack(
        "steal",
        source,
        {
            "gateway": platform.process.pid,
            "token": str(platform.state_dir / "token"),
            "state": str(platform.state_dir),
            "port": port,
        },
    )
    assert seen["environ"].startswith("failed: FileNotFoundError"), seen
    assert seen["token"].startswith("failed: FileNotFoundError"), seen
    assert seen["state"].startswith("failed: FileNotFoundError"), seen
    assert seen["processes"] == [1, 2], seen  # its own init and itself, nothing else
    assert seen["admin_api"].startswith("failed: OSError"), seen  # no route to the gateway
    assert "DATABASE_URL" not in seen["env_keys"]
    assert "FN_TOKEN" not in seen["env_keys"]
    # /root holds at most the way to Python (when Python lives there), nothing of the rest.
    assert seen["home"] in ("succeeded: []", "succeeded: ['.pyenv']") or seen["home"].startswith(
        "failed"
    ), seen
    platform.healthy()


# -- 2. other instances' memory and code ---------------------------------------------------------


def test_2_cannot_read_another_instance_memory_or_code(platform: Platform) -> None:
    [victim] = platform.pids_of("bystander")
    victim_children = [p.pid for p in psutil.Process(victim).children(recursive=True)]
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            out = {}
            for pid in event["pids"]:
                out[f"mem {pid}"] = attempt(lambda: open(f"/proc/{pid}/mem", "rb").read(1))
                out[f"environ {pid}"] = attempt(lambda: open(f"/proc/{pid}/environ").read())
            out["sockets"] = glob.glob("/tmp/ember-*-*/*.sock")
            out["other code"] = [open(p).read() for p in glob.glob("/tmp/**/handler.py",
                                                                   recursive=True)
                                 if "API_" + "KEY" in open(p).read()]
            libc = ctypes.CDLL(None, use_errno=True)

            def errno_of(result):
                return ctypes.get_errno() if result == -1 else f"returned {result}"

            # On a child of its own (same uid, same namespaces): only seccomp says no.
            child = os.fork()
            if child == 0:
                import time
                time.sleep(30)
                os._exit(0)
            out["process_vm_readv"] = attempt(lambda: errno_of(
                libc.process_vm_readv(child, 0, 0, 0, 0, 0)))
            out["ptrace"] = attempt(lambda: errno_of(libc.ptrace(16, child, 0, 0)))
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            return out
    """)
    seen = platform.attack("peek", source, {"pids": [victim, *victim_children]})
    for key, outcome in seen.items():
        if key.startswith(("mem", "environ")):
            assert outcome.startswith("failed"), (key, outcome)
    assert seen["sockets"] == [], seen
    assert seen["other code"] == [], seen  # only its own code
    # Both calls come back -1 with EPERM (1): refused by seccomp.
    assert seen["process_vm_readv"] == "succeeded: 1", seen
    assert seen["ptrace"] == "succeeded: 1", seen
    platform.healthy()


# -- 3. the database ----------------------------------------------------------------------------


def test_3_the_database_needs_a_password_and_is_out_of_reach(platform: Platform) -> None:
    socket_dir = platform.state_dir / "pgdata"
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            def connect():
                s = socket.socket(socket.AF_UNIX)
                s.connect(event["socket"])
            return {"unix": attempt(connect),
                    "tcp": attempt(lambda: socket.create_connection(("127.0.0.1", 5432), 2))}
    """)
    seen = platform.attack("db", source, {"socket": str(socket_dir / ".s.PGSQL.5432")})
    assert seen["unix"].startswith("failed"), seen
    assert seen["tcp"].startswith("failed"), seen
    # Even from the host, the socket wants a password now; the platform's role is no superuser.
    import asyncio

    import asyncpg

    async def probe() -> tuple[str, bool]:
        try:
            await asyncpg.connect(f"postgresql://postgres@/postgres?host={socket_dir}")
            refused = "connected"
        except asyncpg.InvalidPasswordError as exc:
            refused = f"refused: {exc}"
        password = (platform.state_dir / "pgdata.secrets" / "ember").read_text().strip()
        conn = await asyncpg.connect(f"postgresql://ember:{password}@/postgres?host={socket_dir}")
        try:
            superuser = bool(
                await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            )
        finally:
            await conn.close()
        return refused, superuser

    refused, superuser = asyncio.run(probe())
    assert refused.startswith("refused"), refused
    assert not superuser
    platform.healthy()


def test_3b_code_changed_in_the_database_does_not_run(platform: Platform) -> None:
    """Had someone rewritten a function's source in Postgres (and notified the gateways), the
    sha256 check stops it at the next specialization."""
    platform.deploy("victim", "def handler(event, context):\n    return 'genuine'\n")
    assert platform.value("victim") == "genuine"
    import asyncio

    import asyncpg

    socket_dir = platform.state_dir / "pgdata"
    password = (platform.state_dir / "pgdata.secrets" / "postgres").read_text().strip()

    async def tamper() -> None:
        conn = await asyncpg.connect(
            f"postgresql://postgres:{password}@/postgres?host={socket_dir}"
        )
        try:
            await conn.execute(
                "UPDATE ember_versions SET source = $1 WHERE function = 'victim'",
                "def handler(event, context):\n    return 'attacker'\n",
            )
            await conn.execute("SELECT pg_notify('ember_functions', 'victim:999')")
        finally:
            await conn.close()

    asyncio.run(tamper())
    platform.client.api("PUT", "/v1/functions/victim/policy", {"keep_alive": "0"})
    deadline = time.monotonic() + 20
    while platform.pids_of("victim") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not platform.pids_of("victim")
    reply = platform.call("victim")  # a cold start, from the row as the database has it now
    assert reply.status == 502, reply.body
    assert "does not match its sha256" in reply.json()["error"]["message"]
    platform.client.api("DELETE", "/v1/functions/victim")
    platform.healthy()


# -- 4 and 5. the platform's processes and the zygote's pipe --------------------------------------


def test_4_cannot_signal_the_gateway_or_the_zygote(platform: Platform) -> None:
    zygote = platform.zygote_pid
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            out = {}
            for name in ("gateway", "zygote"):
                for sig in (signal.SIGSTOP, signal.SIGKILL):
                    out[f"{name} {sig.name}"] = attempt(lambda: os.kill(event[name], sig))
            out["everyone"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
            return out
    """)
    seen = platform.attack("killer", source, {"gateway": platform.process.pid, "zygote": zygote})
    for key, outcome in seen.items():
        if key != "everyone":
            assert outcome.startswith("failed: ProcessLookupError"), (key, outcome)
    assert platform.process.poll() is None
    assert psutil.Process(zygote).status() != psutil.STATUS_STOPPED
    platform.healthy()


def test_5_cannot_take_the_zygote_pipe_and_garbage_on_it_is_survived(platform: Platform) -> None:
    zygote = platform.zygote_pid
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            libc = ctypes.CDLL(None, use_errno=True)
            def pidfd():
                fd = libc.syscall(434, event["zygote"], 0)  # pidfd_open
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "pidfd_open")
                got = libc.syscall(438, fd, 1, 0)  # pidfd_getfd
                if got < 0:
                    raise OSError(ctypes.get_errno(), "pidfd_getfd")
                return got
            return {"pidfd_getfd": attempt(pidfd)}
    """)
    seen = platform.attack("pipe", source, {"zygote": zygote})
    assert seen["pidfd_getfd"].startswith(
        ("failed: ProcessLookupError", "failed: PermissionError")
    ), seen
    # What the attack would have done, done from the host: garbage on the report pipe.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, zygote, 0)
    assert pidfd >= 0, ctypes.get_errno()
    pipe = libc.syscall(438, pidfd, 1, 0)
    assert pipe >= 0, ctypes.get_errno()
    os.write(pipe, b"\n")
    os.close(pipe)
    os.close(pidfd)
    deadline = time.monotonic() + 20
    reported: list[str] = []
    while time.monotonic() < deadline:
        reply = platform.client.request("GET", "/healthz")
        health = reply.json()
        if reply.status == 503:  # until the zygote is replaced, /healthz says why
            reported.append(health["error"]["message"])
        elif health["isolation"]["incidents"] and platform.zygote_pid != zygote:
            break
        time.sleep(0.02)
    assert "malformed report" in health["isolation"]["incidents"][0]
    assert platform.zygote_pid != zygote
    assert all("malformed report" in message for message in reported)
    platform.deploy("after-garbage", "def handler(event, context):\n    return 'fine'\n")
    assert platform.value("after-garbage") == "fine"
    platform.healthy()


# -- 6. the channel ------------------------------------------------------------------------------


def test_6_cannot_replace_another_instance_socket(platform: Platform) -> None:
    socket_dir = next(Path("/tmp").glob(f"ember-{platform.process.pid}-*"))
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            def hijack():
                for path in glob.glob(event["dir"] + "/*.sock"):
                    os.unlink(path)
                s = socket.socket(socket.AF_UNIX)
                s.bind(event["dir"] + "/x.sock")
                s.listen()
            def bind_anywhere():
                s = socket.socket(socket.AF_UNIX)
                s.bind("/tmp/mine.sock")
            return {"list": attempt(lambda: os.listdir(event["dir"])),
                    "hijack": attempt(hijack), "bind": attempt(bind_anywhere)}
    """)
    seen = platform.attack("hijack", source, {"dir": str(socket_dir)})
    assert seen["list"].startswith("failed: FileNotFoundError"), seen
    assert seen["hijack"].startswith("failed"), seen
    assert seen["bind"].startswith("failed: PermissionError"), seen  # seccomp: no servers
    assert not (socket_dir / "x.sock").exists()
    # The next deploy's code goes to a genuine generic instance, as do its callers.
    platform.deploy("after-hijack", "def handler(event, context):\n    return 'genuine'\n")
    assert platform.value("after-hijack") == "genuine"
    platform.healthy()


# -- 7. resources --------------------------------------------------------------------------------


def test_7a_fork_bomb_meets_the_pids_limit(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os, time
        def handler(event, context):
            children, error = [], None
            for _ in range(2000):
                try:
                    pid = os.fork()
                except OSError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    break
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
            return {"forked": len(children), "error": error}
    """)
    seen = platform.attack("forkbomb", source)
    assert seen["forked"] < 300, seen
    assert seen["error"] is not None, seen
    platform.client.api("DELETE", "/v1/functions/forkbomb")
    platform.healthy()


def test_7b_memory_limit_holds_across_children_and_shm(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os
        def handler(event, context):
            if event.get("shm"):
                try:
                    with open("/dev/shm/fill", "wb") as f:
                        for _ in range(1024):
                            f.write(b"x" * (1 << 20))
                except OSError as exc:
                    return {"shm": f"{type(exc).__name__}: {exc}"}
                return {"shm": "filled 1 GiB"}
            children = []
            for _ in range(4):  # four children of 100 MiB each under a 128 MiB limit
                pid = os.fork()
                if pid == 0:
                    block = bytearray(100 << 20)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    import time; time.sleep(1)
                    os._exit(0)
                children.append(pid)
            return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    """)
    platform.deploy("hog", source, memory="128Mi")
    shm = platform.call("hog", {"shm": True})
    assert shm.status == 200, shm.body
    assert "No space left" in shm.json()["shm"], shm.body
    reply = platform.call("hog")
    # The cgroup's OOM killer stops children past the limit (or the whole instance: a 502).
    if reply.status == 200:
        assert -signal.SIGKILL in reply.json(), reply.json()
    else:
        assert reply.status == 502, reply.body
    platform.healthy()


def test_7c_nothing_outlives_the_function(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os, time
        def handler(event, context):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(600)
                os._exit(0)
            os.wait()
            return os.getuid()
    """)
    uid = platform.attack("escape", source)

    def of_the_function() -> list[psutil.Process]:
        return [
            p
            for p in psutil.process_iter(["uids"])
            if p.info["uids"] and p.info["uids"].real == uid
        ]

    assert len(of_the_function()) >= 2  # the instance and the escaped grandchild
    platform.client.api("DELETE", "/v1/functions/escape")
    deadline = time.monotonic() + 10
    while of_the_function() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not of_the_function()
    platform.healthy()


def test_7d_output_floods_stay_in_the_activation(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os
        def handler(event, context):
            chunk = b"y" * (1 << 20)
            for _ in range(100):
                os.write(1, chunk)
                os.write(2, chunk)
            return "flooded"
    """)
    before = platform.log_bytes()
    assert platform.attack("flood", source) == "flooded"
    deadline = time.monotonic() + 10  # the activation record is written in batches
    records: list[dict[str, Any]] = []
    while not records and time.monotonic() < deadline:
        records = platform.client.api("GET", "/v1/functions/flood/activations?limit=1")[
            "activations"
        ]
    assert records, "no activation record"
    assert len(records[0].get("logs") or "") <= 70 * 1024
    # 200 MB were written to fds 1 and 2: none of it reached the platform's own log (the
    # instance's fds are a pipe its runtime drains; the gateway's stderr is not among them).
    assert platform.log_bytes() - before < 64 * 1024
    platform.healthy()


def test_7e_a_huge_response_is_refused_and_the_gateway_stays_small(platform: Platform) -> None:
    source = textwrap.dedent("""
        def handler(event, context):
            return b"z" * (200 << 20)
    """)
    rss_before = psutil.Process(platform.process.pid).memory_info().rss
    platform.deploy("huge", source, memory="1Gi")
    reply = platform.call("huge")
    assert reply.status == 502, reply.body[:500]
    assert reply.json()["error"]["code"] == "response_too_large"
    grown = psutil.Process(platform.process.pid).memory_info().rss - rss_before
    assert grown < 50 << 20, grown
    platform.healthy()


# -- 8. the network ------------------------------------------------------------------------------


def test_8_no_loopback_or_private_address_and_no_listening(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            out = {}
            for host, port in event["targets"]:
                out[f"{host}:{port}"] = attempt(
                    lambda: socket.create_connection((host, port), timeout=2))
            def serve():
                s = socket.socket()
                s.bind(("0.0.0.0", 8099))
                s.listen()
            out["listen"] = attempt(serve)
            out["dns"] = attempt(lambda: socket.getaddrinfo(event["name"], 443)[0][4][0])
            return out
    """)
    port = int(platform.url.rsplit(":", 1)[1])
    targets = [
        ("127.0.0.1", port),
        ("127.0.0.1", 5432),
        ("127.0.0.1", 6379),
        ("127.0.0.1", 5672),
        ("::1", port),
        ("10.0.0.1", 80),
        ("192.168.1.1", 80),
        ("169.254.169.254", 80),
    ]
    targets += [
        (a.address, port)
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family.name == "AF_INET" and not a.address.startswith("127.")
    ]
    try:  # a name this host resolves through its resolver (not /etc/hosts)
        name = "pypi.org"
        socket.getaddrinfo(name, 443)
    except OSError:
        name = ""
    seen = platform.attack("net", source, {"targets": targets, "name": name or "localhost"})
    if name:
        assert seen["dns"].startswith("succeeded"), seen  # the resolver stays reachable
    for target, outcome in seen.items():
        if target not in ("listen", "dns"):
            # Rejected by the firewall: EHOSTUNREACH (IPv4) or EACCES (IPv6), never connected.
            assert "No route to host" in outcome or "Permission denied" in outcome, (
                target,
                outcome,
            )
    assert seen["listen"].startswith("failed: PermissionError"), seen
    platform.healthy()


def test_8b_network_none_has_only_loopback(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            def loop():
                server = socket.socket()
                server.bind(("127.0.0.1", 0))
                server.listen()
                socket.create_connection(server.getsockname(), timeout=2)
                return "own loopback works"
            return {"out": attempt(lambda: socket.create_connection(("1.1.1.1", 53), 2)),
                    "gateway": attempt(lambda: socket.create_connection(
                        ("127.0.0.1", event["port"]), 2)),
                    "loop": attempt(loop)}
    """)
    port = int(platform.url.rsplit(":", 1)[1])
    seen = platform.attack("offline", source, {"port": port}, network="none")
    assert "Network is unreachable" in seen["out"], seen
    assert seen["gateway"].startswith("failed: ConnectionRefusedError"), seen  # its own lo
    assert seen["loop"] == "succeeded: 'own loopback works'", seen
    platform.healthy()


def test_identity_of_an_instance(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os
        def handler(event, context):
            status = dict(line.split(":\\t", 1) for line in open("/proc/self/status")
                          if ":\\t" in line)
            return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                    "no_new_privs": status["NoNewPrivs"].strip(),
                    "seccomp": status["Seccomp"].strip(), "cap_eff": status["CapEff"].strip(),
                    "hostname": os.uname().nodename, "tmp": os.listdir("/tmp")}
    """)
    seen = platform.attack("whoami", source)
    assert seen["uid"] >= 100_000, seen
    assert seen["gid"] == seen["uid"], seen
    assert seen["groups"] == []
    assert (seen["no_new_privs"], seen["seccomp"]) == ("1", "2")
    assert int(seen["cap_eff"], 16) == 0
    other = platform.attack("whoami-too", source)
    assert other["uid"] != seen["uid"]  # a uid per function


# -- found by a hostile review: around seccomp, the host's /dev, a forged reply --------------------


def test_io_uring_and_datagram_socketpairs_are_denied(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            libc = ctypes.CDLL(None, use_errno=True)
            params = ctypes.create_string_buffer(120)

            def uring():
                fd = libc.syscall(425, 8, params)  # io_uring_setup
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "io_uring_setup")
                return fd

            def datagram():
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                a.sendto(b"hello", b"\\0ember-probe")

            return {"uring": attempt(uring), "dgram": attempt(datagram),
                    "stream pair": attempt(lambda: len(socket.socketpair()))}
    """)
    seen = platform.attack("uring", source)
    assert seen["uring"].startswith("failed: OSError: [Errno 38]"), seen  # ENOSYS
    assert seen["dgram"].startswith("failed: PermissionError"), seen
    assert seen["stream pair"] == "succeeded: 2", seen  # what asyncio and others need
    platform.healthy()


def test_dev_is_the_instance_own(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            terminals = []
            def open_many():
                for _ in range(200):
                    terminals.append(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY))
            outcome = attempt(open_many)
            return {"dev": sorted(os.listdir("/dev")), "ptmx": outcome,
                    "opened": len(terminals), "null": attempt(
                        lambda: os.write(os.open("/dev/null", os.O_WRONLY), b"x"))}
    """)
    seen = platform.attack("ptys", source)
    assert set(seen["dev"]) <= {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "ptmx",
        "pts",
        "shm",
    }, seen
    # Its own devpts, capped at 64 (and kernel.pty.reserve keeps the host's own terminals).
    assert seen["opened"] == 64, seen
    assert seen["ptmx"].startswith("failed: OSError: [Errno 28]"), seen
    assert seen["null"] == "succeeded: 1", seen
    platform.healthy()


def test_requirements_builds_run_inside_the_walls(platform: Platform, tmp_path: Path) -> None:
    """A package's build code (setup.py, a PEP 517 backend) is the function author's: pip runs
    confined as instances are, with only its work directories writable."""
    del platform  # (for its skip: the same host conditions)
    from scheduler.backends.isolation import IsolationSettings
    from scheduler.backends.local import LocalBackend

    state = tmp_path / "state"
    (state / "envs").mkdir(parents=True)
    (state / "token").write_text("secret-token")
    work = state / "envs" / "build-x"
    work.mkdir()
    attack = textwrap.dedent("""
        import json, os, socket
        def attempt(fn):
            try:
                return "succeeded: " + repr(fn())[:100]
            except BaseException as exc:
                return f"failed: {type(exc).__name__}"
        print(json.dumps({
            "uid": os.getuid(),
            "token": attempt(lambda: open(%r).read()),
            "write work": attempt(lambda: open(%r, "w").write("x")),
            "write elsewhere": attempt(lambda: open("/etc/ember-pwned", "w").write("x")),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "postgres": attempt(lambda: socket.create_connection(("127.0.0.1", 5432), 2)),
        }))
    """) % (str(state / "token"), str(work / "site.txt"))

    async def run() -> dict[str, Any]:
        backend = LocalBackend(
            isolation=IsolationSettings(), private_paths=(state,), environments=state / "envs"
        )
        await backend.start()
        try:
            prefix = backend.confine_command([work], "x")
            assert prefix, backend.report.summary()
            result = await asyncio.to_thread(
                subprocess.run,
                [*prefix, sys.executable, "-c", attack],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            seen: dict[str, Any] = json.loads(result.stdout)
            backend.release_build("x")
            return seen
        finally:
            await backend.close()

    import asyncio

    seen = asyncio.run(run())
    assert seen["uid"] == IsolationSettings().uid_first + IsolationSettings().uid_count - 1
    assert seen["token"] == "failed: FileNotFoundError", seen
    assert seen["write work"].startswith("succeeded"), seen
    assert seen["write elsewhere"].startswith("failed"), seen
    assert seen["pids"] == [1], seen  # the build itself is its namespace's PID 1
    assert seen["postgres"] == "failed: OSError", seen
    assert not Path("/etc/ember-pwned").exists()


def test_only_internet_unix_and_netlink_sockets(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            libc = ctypes.CDLL(None, use_errno=True)

            def raw_socket(family, kind, protocol):
                fd = libc.syscall(41, ctypes.c_long(family), ctypes.c_long(kind),
                                  ctypes.c_long(protocol))
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "socket")
                os.close(fd)

            return {"diag high bits": attempt(lambda: raw_socket(16, 3, (1 << 32) | 4)),
                    "unix high bits": attempt(lambda: raw_socket((1 << 32) | 1, 1, 0)),
                    "vsock": attempt(lambda: socket.socket(40, socket.SOCK_STREAM)),
                    "alg": attempt(lambda: socket.socket(38, socket.SOCK_SEQPACKET)),
                    "sock_diag": attempt(lambda: socket.socket(16, socket.SOCK_DGRAM, 4)),
                    "route": attempt(lambda: socket.socket(16, socket.SOCK_DGRAM, 0).close()),
                    "tcp": attempt(lambda: socket.socket().close())}
    """)
    for network in ("egress", "none"):
        seen = platform.attack(f"families-{network}", source, network=network)
        assert seen["vsock"].startswith("failed: OSError: [Errno 97]"), seen  # EAFNOSUPPORT
        assert seen["alg"].startswith("failed: OSError: [Errno 97]"), seen
        assert seen["sock_diag"].startswith("failed: PermissionError"), seen
        # the kernel reads ints' low 32 bits: so does the filter
        assert seen["diag high bits"].startswith("failed: PermissionError"), seen
        if network == "egress":
            assert seen["unix high bits"].startswith("failed: PermissionError"), seen
        assert seen["route"] == "succeeded: None", seen  # getaddrinfo needs it
        assert seen["tcp"] == "succeeded: None", seen
    platform.healthy()


def test_a_forged_status_does_not_reach_the_caller(platform: Platform) -> None:
    """The runtime refuses 1xx statuses; a handler that replaces the runtime's encoder gets
    the same answer from the gateway (no protocol switch through a proxy)."""
    source = textwrap.dedent("""
        import invoker.runtime

        def forged(result):
            return 101, [["Upgrade", "websocket"], ["Connection", "Upgrade"]], b""

        invoker.runtime.encode_result = forged

        def handler(event, context):
            return "upgrade me"
    """)
    platform.deploy("switcher", source)
    reply = platform.call("switcher")
    assert reply.status == 502, reply
    assert reply.json()["error"]["code"] == "invalid_response"
    platform.healthy()
