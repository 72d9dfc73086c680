"""An embedded, private Postgres (the `pgserver` package) for one machine and for tests.

The data directory is kept, so the next start reuses it; the server listens on a Unix socket in
that directory only, never on a TCP port. Every connection needs a password: the superuser's
and the platform's (a role that is not a superuser, owner of the database) are generated at
the first start and kept in `<data_dir>.secrets/` (mode 0700, files 0600), outside any
instance's view. A data directory from before (trust authentication) is converted at start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from store.errors import StoreError

log = logging.getLogger("ember.store.embedded")

PLATFORM_ROLE = "ember"
SUPERUSER = "postgres"
DATABASE = "postgres"
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
        self._server.cleanup()


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
