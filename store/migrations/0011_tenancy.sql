-- Tenancy (issue 18): namespaces, API keys, secrets, the audit trail, and each version's
-- access settings (private or public, the secrets it reads, CORS origins).

CREATE TABLE ember_namespaces (
    name        text PRIMARY KEY,
    auth        text NOT NULL DEFAULT 'public' CHECK (auth IN ('public', 'key')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ember_api_keys (
    id          text PRIMARY KEY,
    namespace   text NOT NULL,
    role        text NOT NULL CHECK (role IN ('reader', 'invoker', 'deployer')),
    secret_hash bytea NOT NULL,
    description text NOT NULL DEFAULT '',
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE TABLE ember_secrets (
    namespace   text NOT NULL,
    name        text NOT NULL,
    ciphertext  bytea NOT NULL,
    keys        text[] NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

CREATE TABLE ember_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    namespace   text NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    action      text NOT NULL,
    status      integer NOT NULL
);
CREATE INDEX ember_audit_namespace_at ON ember_audit (namespace, at);

ALTER TABLE ember_versions ADD COLUMN access jsonb NOT NULL DEFAULT '{}'::jsonb;
