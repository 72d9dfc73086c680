-- Functions, their immutable versions, and activation records.

CREATE TABLE ember_functions (
    name            text PRIMARY KEY,
    active_version  integer NOT NULL,
    latest_version  integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ember_versions (
    function        text NOT NULL REFERENCES ember_functions (name) ON DELETE CASCADE,
    version         integer NOT NULL CHECK (version > 0),
    source          text NOT NULL,
    sha256          text NOT NULL,
    filename        text NOT NULL,
    entry           text NOT NULL,
    env             jsonb NOT NULL DEFAULT '{}',
    timeout_s       double precision NOT NULL CHECK (timeout_s > 0),
    memory_bytes    bigint NOT NULL CHECK (memory_bytes > 0),
    concurrency     integer NOT NULL CHECK (concurrency > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function, version)
);

CREATE TABLE ember_activations (
    id              uuid PRIMARY KEY,
    function        text NOT NULL,
    version         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     double precision NOT NULL,
    cold            boolean NOT NULL,
    status          text NOT NULL,
    http_status     integer NOT NULL,
    error           jsonb,
    logs            text NOT NULL DEFAULT ''
);

CREATE INDEX ember_activations_by_function ON ember_activations (function, started_at DESC);
