-- Warm-pool policies: one row per function that overrides something, and '*' for the default.
-- A NULL field inherits (function row -> '*' row -> the platform's settings).

CREATE TABLE ember_policies (
    function        text PRIMARY KEY,
    prewarm         text CHECK (prewarm IN ('fixed', 'histogram')),
    keep_alive_s    double precision CHECK (keep_alive_s >= 0),
    min_warm        integer CHECK (min_warm >= 0),
    max_instances   integer CHECK (max_instances > 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
