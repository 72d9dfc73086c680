"""Secrets at rest: encrypted with Fernet (AES-128-CBC + HMAC-SHA256, `cryptography`) before
they reach Postgres, decrypted only to specialize an instance.

The key: `EMBER_SECRETS_KEY` (on Kubernetes, from a Secret: deploy/ maps it), else the file
`EMBER_SECRETS_KEY_FILE`, else `secrets.key` in the state dir (mode 0600, made on first start).
Postgres alone (a dump, a replica) holds nothing readable. Values never leave through the API,
the activation records, the platform's logs or /metrics: only the specialize message carries
them, to the instance, which gets them as environment variables. The same key seals the
broker URLs of triggers (`encrypt`/`decrypt`, events/sources/secrets.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import orjson
from cryptography.fernet import Fernet, InvalidToken

from gateway.namespaces import split_name
from scheduler.scheduler import Prepare, Prepared
from store import Store, Version

KEY_VARIABLE = "EMBER_SECRETS_KEY"
KEY_FILE_VARIABLE = "EMBER_SECRETS_KEY_FILE"


class SecretError(Exception):
    """A secret cannot be used: missing, or not readable with this platform's key."""


class Vault:
    def __init__(self, key: bytes | None) -> None:
        """`key` None: no key was given (Kubernetes without the Secret): using a secret fails
        with what to set, everything else works."""
        self._fernet = Fernet(key) if key is not None else None

    @classmethod
    def from_environment(cls, state_dir: Path, *, generate: bool = True) -> Vault:
        """The key from the environment or its file; else, with `generate` (one machine), the
        state dir's, made on first start. Replicas (Kubernetes) must share one: no generating."""
        key = os.environ.get(KEY_VARIABLE)
        if key:
            return cls(key.strip().encode())
        path = Path(os.environ.get(KEY_FILE_VARIABLE) or state_dir / "secrets.key")
        try:
            return cls(path.read_bytes().strip())
        except FileNotFoundError:
            if not generate:
                return cls(None)
        fresh = Fernet.generate_key()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(fresh + b"\n")
        return cls(fresh)

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            raise SecretError(
                f"no key for secrets: set {KEY_VARIABLE} on every gateway (on Kubernetes, the "
                "secrets-key of secret/ember-secrets: docs/security.md)"
            )
        return self._fernet

    def encrypt(self, plain: bytes) -> bytes:
        """`plain` sealed with the platform's key (what else is secret: broker URLs)."""
        return self._cipher().encrypt(plain)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._cipher().decrypt(token)
        except InvalidToken:
            raise SecretError(
                "a sealed value cannot be decrypted with this platform's key "
                "(EMBER_SECRETS_KEY or secrets.key in the state dir changed?)"
            ) from None

    def seal(self, values: Mapping[str, str]) -> bytes:
        return self._cipher().encrypt(orjson.dumps(dict(values)))

    def open(self, ciphertext: bytes) -> dict[str, str]:
        try:
            values = orjson.loads(self._cipher().decrypt(ciphertext))
        except InvalidToken:
            raise SecretError(
                "a secret cannot be decrypted with this platform's key (EMBER_SECRETS_KEY or "
                "secrets.key in the state dir changed?); set it again: fn secret set"
            ) from None
        return {str(k): str(v) for k, v in values.items()}

    async def values_for(self, store: Store, version: Version) -> dict[str, str]:
        """The environment variables a version's secrets give its instance."""
        namespace, _ = split_name(version.function)
        env: dict[str, str] = {}
        for name in version.config.secrets:
            ciphertext = await store.get_secret_ciphertext(namespace, name)
            if ciphertext is None:
                raise SecretError(
                    f"secret {name!r} of namespace {namespace!r} does not exist: "
                    f"fn secret set {name} KEY=VALUE"
                )
            env.update(self.open(ciphertext))
        return env


def with_secrets(prepare: Prepare, vault: Vault, store: Store) -> Prepare:
    """`prepare`, and the version's secrets as environment variables of its instance."""

    async def prepare_with_secrets(version: Version) -> Prepared:
        prepared = await prepare(version)
        if version.config.secrets:
            prepared["env"] = await vault.values_for(store, version)
        return prepared

    return prepare_with_secrets
