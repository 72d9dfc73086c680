"""`fn apply` decides "unchanged" by the sha256 the platform gives a version: its own copy of
the digest must be the store's (the CLI may not import the store)."""

from __future__ import annotations

from fn.cli.apply import code_digest as cli_digest
from store.records import code_digest as store_digest


def test_the_cli_digest_is_the_stores() -> None:
    for code, env, preimport in [
        (b"def handler(e, c):\n    return 1\n", None, ()),
        (b"PK\x03\x04 zip bytes", "ab" * 32, ("numpy", "pandas")),
        (b"", "", ("json",)),
    ]:
        assert cli_digest(code, env, preimport) == store_digest(code, env, preimport)
