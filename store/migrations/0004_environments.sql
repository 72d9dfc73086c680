-- Functions with dependencies: multi-file source, and environments built from requirements.

ALTER TABLE ember_versions
    ADD COLUMN archive      bytea,                       -- a zip of a multi-file function
    ADD COLUMN files        text[] NOT NULL DEFAULT '{}', -- the names in it
    ADD COLUMN requirements text NOT NULL DEFAULT '',    -- as deployed
    ADD COLUMN env_hash     text,                        -- the environment it runs with
    ADD COLUMN lock         text NOT NULL DEFAULT '',    -- name==version --hash=... per package
    ADD COLUMN preimport    text[] NOT NULL DEFAULT '{}';

-- One environment per set of requirements (and Python): installed once, shared by every function
-- with the same requirements. Its files are a tar.gz kept in chunks.
CREATE TABLE ember_environments (
    hash            text PRIMARY KEY,
    requirements    text NOT NULL,
    lock            text NOT NULL,
    python          text NOT NULL,
    size_bytes      bigint NOT NULL,
    unpacked_bytes  bigint NOT NULL,
    chunks          integer NOT NULL,
    build_s         double precision NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ember_environment_chunks (
    hash    text NOT NULL REFERENCES ember_environments (hash) ON DELETE CASCADE,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (hash, seq)
);

-- Every deploy with requirements: built, taken from the cache, or failed (with pip's output).
CREATE TABLE ember_builds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    function    text NOT NULL,
    env_hash    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('succeeded', 'cached', 'failed')),
    log         text NOT NULL DEFAULT '',
    duration_s  double precision NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ember_builds_by_function ON ember_builds (function, id DESC);
