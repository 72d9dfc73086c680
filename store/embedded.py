"""An embedded, private Postgres (the `pgserver` package) for one machine and for tests.

The data directory is kept, so the next start reuses it; the server listens on a Unix socket in
that directory only, never on a TCP port. Every connection needs a password: the superuser's
and the platform's (a role that is not a superuser, owner of the database) are generated at
the first start and kept in `<data_dir>.secrets/` (mode 0700, files 0600), outside any
instance's view. A data directory from before (trust authentication) is converted at start.

After a platform is killed (SIGKILL) its server runs on; the next start reuses it and its clean
stop stops it (pgserver's record of the killed process is dropped). A postmaster.pid whose pid
is not a postgres of the same data directory is removed before the start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import secrets
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import psutil

from store.errors import StoreError

log = logging.getLogger("ember.store.embedded")

PLATFORM_ROLE = "ember"
SUPERUSER = "postgres"
DATABASE = "postgres"
HANDLES = ".handle_pids.json"
"""pgserver's list of the processes using a server (it stops the server when the last goes)."""
HBA = (
    "# Written by Ember (store/embedded.py): a password for every connection, Unix socket only.\n"
    "local all all scram-sha-256\n"
)


@dataclass(slots=True)
class EmbeddedPostgres:
    data_dir: Path
    url: str
    """The platform's connection: the `ember` role, not a superuser."""
    superuser_url: str
    _server: Any

    def stop(self) -> None:
        """Stop the server, unless another live process still uses it."""
        _forget_dead_handles(self.data_dir)  # else a killed user's pid keeps it running
        self._server.cleanup()

    def stop_now(self) -> None:
        """Ask the server for a fast shutdown (its clients are cut) without waiting: for a
        platform that must exit at once (a second Ctrl-C). Only the postmaster named by this
        data dir's `postmaster.pid` is signalled; the platform's state-dir lock says it is
        this platform's."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, signal.SIGINT)  # postgres: SIGINT is the "fast" shutdown mode
        except (OSError, ValueError):
            pass


def _forget_dead_handles(data_dir: Path) -> None:
    """pgserver stops the server when its last user lets go, and counts users by the pids in
    `.handle_pids.json`: one killed (SIGKILL) never lets go. Drop the pids no longer running."""
    path = data_dir / HANDLES
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
    if alive != pids:
        log.info("forgetting dead users of the embedded postgres", extra={"pids": pids})
        path.write_text(json.dumps(alive))


def _postmaster_of(data_dir: Path) -> psutil.Process | None:
    """The running postmaster of `data_dir`, per its postmaster.pid, if that pid is a postgres
    serving this very directory (a pid left by a crash may have been reused by anything)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if process.name() != "postgres":
            return None
        resolved = data_dir.resolve()
        if Path(process.cwd()).resolve() == resolved:  # a postmaster runs in its data dir
            return process
        cmdline = process.cmdline()
        if str(resolved) in cmdline or str(data_dir) in cmdline:
            return process
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return None


def _remove_stale_pid_file(data_dir: Path) -> None:
    """A postmaster.pid whose pid is no postgres of this directory (the machine rebooted, the
    pid was reused): Postgres would refuse to start, and pgserver take it for running."""
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists() and _postmaster_of(data_dir) is None:
        log.warning("removing a stale postmaster.pid", extra={"data_dir": str(data_dir)})
        pid_file.unlink(missing_ok=True)


def _secret(folder: Path, name: str) -> str:
    """A password kept in `folder/name` (0600), created on first use."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / name
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _url(socket_dir: str, user: str, password: str, database: str = DATABASE) -> str:
    return f"postgresql://{user}:{quote(password, safe='')}@/{quote(database)}?host={socket_dir}"


def _write_hba(hba: Path) -> bool:
    """Passwords for every connection; True when the file changed (reload the server)."""
    if hba.exists() and hba.read_text() == HBA:
        return False
    hba.write_text(HBA)
    return True


_REASSIGN = """
DO $$
DECLARE item record;
BEGIN
    FOR item IN
        SELECT n.nspname FROM pg_namespace n
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
          AND pg_get_userbyid(n.nspowner) <> '{role}'
    LOOP
        EXECUTE format('ALTER SCHEMA %I OWNER TO {role}', item.nspname);
    END LOOP;
    -- tables and views (the sequences of their serial and identity columns follow them)
    FOR item IN
        SELECT c.oid::regclass::text AS name, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND pg_get_userbyid(c.relowner) <> '{role}'
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO {role}',
            CASE item.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                 WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, item.name);
    END LOOP;
    FOR item IN
        SELECT c.oid::regclass::text AS name FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
          AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> '{role}'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.deptype IN ('a', 'i'))
    LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNER TO {role}', item.name);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure::text AS name, p.prokind FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
          AND pg_get_userbyid(p.proowner) <> '{role}'
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO {role}',
            CASE item.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                 ELSE 'FUNCTION' END, item.name);
    END LOOP;
END $$"""


async def _connect_as_superuser(
    server_url: str, socket_dir: str, password: str, folder: Path, hba: Path
) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_url(socket_dir, SUPERUSER, password))
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        pass
    try:  # the first start (or one from before passwords): trust, as initdb left it
        return await asyncpg.connect(server_url)
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.ClientCannotConnectError,
    ) as exc:
        raise StoreError(
            f"the embedded Postgres refused the superuser password kept in {folder}; if that "
            f"file was lost, put the line 'local all all trust' in {hba} for one start "
            f"(Ember then sets new passwords): {exc}"
        ) from exc


async def _secure(
    server_url: str,
    socket_dir: str,
    hba: Path,
    folder: Path,
    superuser_password: str,
    platform_password: str,
) -> None:
    """Passwords on, the platform's role in place and owner of the database's objects."""
    conn = await _connect_as_superuser(server_url, socket_dir, superuser_password, folder, hba)
    try:
        await conn.execute(
            await conn.fetchval(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                SUPERUSER,
                superuser_password,
            )
        )
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", PLATFORM_ROLE)
        verb = "ALTER" if exists else "CREATE"
        await conn.execute(
            await conn.fetchval(
                "SELECT format('%s ROLE %I LOGIN CREATEDB NOSUPERUSER NOCREATEROLE "
                "NOREPLICATION NOBYPASSRLS PASSWORD %L', $1::text, $2::text, $3::text)",
                verb,
                PLATFORM_ROLE,
                platform_password,
            )
        )
        await conn.execute(f'ALTER DATABASE "{DATABASE}" OWNER TO "{PLATFORM_ROLE}"')
        # What earlier versions created as the superuser becomes the platform's.
        await conn.execute(_REASSIGN.format(role=PLATFORM_ROLE))
        if _write_hba(hba):
            await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse, when already running) the Postgres whose data lives in `data_dir`."""
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    # After a crash: a server still running is reused, and stopped by our `stop`.
    _forget_dead_handles(data_dir)
    _remove_stale_pid_file(data_dir)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
        warnings.simplefilter("ignore")
        import pgserver  # imported here: only needed when no DATABASE_URL is given

        server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    server_url = server.get_uri()
    socket_dir = server.get_postmaster_info().socket_dir
    folder = data_dir.with_name(data_dir.name + ".secrets")
    superuser_password = _secret(folder, SUPERUSER)
    platform_password = _secret(folder, PLATFORM_ROLE)
    try:
        # A thread of its own: callers may be inside an event loop (that then waits here).
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pg-secure") as pool:
            pool.submit(
                lambda: asyncio.run(
                    _secure(
                        server_url,
                        str(socket_dir),
                        data_dir / "pg_hba.conf",
                        folder,
                        superuser_password,
                        platform_password,
                    )
                )
            ).result()
    except BaseException:
        server.cleanup()
        raise
    log.info("embedded postgres ready", extra={"data_dir": str(data_dir)})
    return EmbeddedPostgres(
        data_dir=data_dir,
        url=_url(str(socket_dir), PLATFORM_ROLE, platform_password),
        superuser_url=_url(str(socket_dir), SUPERUSER, superuser_password),
        _server=server,
    )


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database)))
