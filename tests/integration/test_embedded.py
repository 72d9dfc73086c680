"""The embedded Postgres: passwords for every connection, the platform as a non-superuser, and
a data directory from before (trust authentication, objects of the superuser) converted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from store.embedded import start_embedded_postgres


async def _owners(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("""
            SELECT c.oid::regclass::text AS name, pg_get_userbyid(c.relowner) AS owner
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('public', 'legacy') AND c.relkind IN ('r', 'S')
            UNION ALL
            SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'legacy'
            UNION ALL
            SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace
            WHERE nspname = 'legacy'""")
        await conn.execute("INSERT INTO public.old_t (x) VALUES (DEFAULT)")
        return {r["name"]: r["owner"] for r in rows}
    finally:
        await conn.close()


async def test_an_older_data_directory_is_converted(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    pg = await asyncio.to_thread(start_embedded_postgres, data)
    try:
        conn = await asyncpg.connect(pg.superuser_url)
        try:  # what an earlier Ember left: the superuser's objects, trust authentication
            await conn.execute("""
                CREATE SCHEMA legacy;
                CREATE TABLE public.old_t (id bigint GENERATED ALWAYS AS IDENTITY, x serial);
                CREATE SEQUENCE public.free_seq;
                CREATE TABLE legacy.t2 (id int);
                CREATE FUNCTION legacy.f() RETURNS int LANGUAGE sql AS 'SELECT 1';""")
        finally:
            await conn.close()
        (data / "pg_hba.conf").write_text("local all all trust\n")
    finally:
        await asyncio.to_thread(pg.stop)
    pg = await asyncio.to_thread(start_embedded_postgres, data)
    try:
        owners = await _owners(pg.url)
        assert set(owners.values()) == {"ember"}, owners
        assert {
            "old_t",
            "old_t_id_seq",
            "old_t_x_seq",
            "free_seq",
            "legacy.t2",
            "legacy",
            "legacy.f()",
        } <= set(owners)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                pg.superuser_url.replace(pg.superuser_url.split(":")[2].split("@")[0], "wrong")
            )
        conn = await asyncpg.connect(pg.url)
        try:
            assert not await conn.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg.stop)
