"""Ember supports Postgres 13 to 17; the embedded server is 16. Syntax and functions newer than
13 in the store's SQL fail only on an older server (the suite runs there with
EMBER_TEST_EXTERNAL_DATABASE_URL): this catches them without one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STORE = Path(__file__).resolve().parents[2] / "store"

# (pattern, what it is and which Postgres it needs)
NEWER_THAN_13 = [
    (r"\b0[xob][0-9a-f_]+\b", "a hex, octal or binary integer literal (Postgres 16)"),
    (r"\b\d+_\d+\b", "an underscore in a number (Postgres 16)"),
    (r"\bMERGE\s+INTO\b", "MERGE (Postgres 15)"),
    (r"\bJSON_TABLE\b", "JSON_TABLE (Postgres 17)"),
    (
        r"\bJSON_(OBJECT|ARRAY|OBJECTAGG|ARRAYAGG|SCALAR|SERIALIZE|QUERY|VALUE|EXISTS)\s*\(",
        "an SQL/JSON function (Postgres 16-17)",
    ),
    (r"\bIS\s+(NOT\s+)?JSON\b", "IS JSON (Postgres 16)"),
    (r"\bany_value\s*\(", "any_value (Postgres 16)"),
    (r"\brange_agg\s*\(|\bmultirange\b", "multiranges (Postgres 14)"),
    (
        r"\bstring_to_table\s*\(|\btrim_array\s*\(|\bdate_bin\s*\(|\bbit_count\s*\(",
        "a function added in Postgres 14",
    ),
    (r"\bregexp_(count|like|substr|instr)\s*\(", "a regexp function added in Postgres 15"),
    (r"\bNULLS\s+NOT\s+DISTINCT\b", "NULLS NOT DISTINCT (Postgres 15)"),
    (
        r"\bSEARCH\s+(DEPTH|BREADTH)\s+FIRST\b|\bCYCLE\s+\w+\s+SET\b",
        "SEARCH / CYCLE in a recursive query (Postgres 14)",
    ),
    (r"\bCREATE\s+OR\s+REPLACE\s+TRIGGER\b", "CREATE OR REPLACE TRIGGER (Postgres 14)"),
    (r"\bBEGIN\s+ATOMIC\b", "a SQL-standard function body (Postgres 14)"),
    (r"(?<!ARRAY)\[\s*''\s*\]", "jsonb subscripting (Postgres 14)"),
    (r"\bSECURITY_INVOKER\b", "a security_invoker view (Postgres 15)"),
]


def _sql_files() -> list[Path]:
    return sorted([*STORE.glob("*.sql"), *STORE.glob("migrations/*.sql")])


def _code(text: str) -> str:
    """The SQL without its comments and string literals (the names in them are no syntax)."""
    text = re.sub(r"--[^\n]*", "", text)
    return re.sub(r"'(?:[^']|'')*'", "''", text)


def test_there_is_sql_to_check() -> None:
    names = {p.name for p in _sql_files()}
    assert {"queries.sql", "outbox.sql", "0001_initial.sql"} <= names


@pytest.mark.parametrize("path", _sql_files(), ids=lambda p: p.name)
def test_the_store_uses_nothing_newer_than_postgres_13(path: Path) -> None:
    code = _code(path.read_text())
    found = [
        f"{path.name}: {what}: {match.group(0)!r}"
        for pattern, what in NEWER_THAN_13
        for match in re.finditer(pattern, code, re.IGNORECASE)
    ]
    assert not found, "\n".join(found)
