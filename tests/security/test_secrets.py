"""What an instance may read: the platform's credentials and files, other instances' memory
and code, and the database (attacks 1 to 3 of docs/security.md)."""

from __future__ import annotations

import textwrap
import time

import psutil
import pytest

from tests.security.conftest import TRY, Platform

pytestmark = [pytest.mark.timeout(120)]


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
