-- Async invocations and events: a durable delivery queue in Postgres, topics, triggers.

-- How often and how long a function's failed deliveries are retried (per version, set at deploy).
ALTER TABLE ember_versions
    ADD COLUMN max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    ADD COLUMN max_event_age_s double precision NOT NULL DEFAULT 86400
        CHECK (max_event_age_s > 0);

-- The policy may now also name the cost-aware histogram.
ALTER TABLE ember_policies DROP CONSTRAINT IF EXISTS ember_policies_prewarm_check;
ALTER TABLE ember_policies ADD CONSTRAINT ember_policies_prewarm_check
    CHECK (prewarm IN ('fixed', 'histogram', 'histogram-cost'));

CREATE TABLE ember_topics (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A function's subscription to a topic, its schedule, or its watch on a table.
CREATE TABLE ember_triggers (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    function        text NOT NULL REFERENCES ember_functions (name) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('topic', 'cron', 'table')),
    topic           text REFERENCES ember_topics (name),
    cron            text,
    timezone        text,
    next_fire_at    timestamptz,
    table_name      text,
    operations      text[],
    database_url    text,   -- the watched database (a secret); NULL: Ember's own
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'topic' OR topic IS NOT NULL),
    CHECK (kind <> 'cron' OR (cron IS NOT NULL AND timezone IS NOT NULL
                              AND next_fire_at IS NOT NULL)),
    CHECK (kind <> 'table' OR (table_name IS NOT NULL AND operations IS NOT NULL))
);
CREATE UNIQUE INDEX ember_triggers_one_subscription ON ember_triggers (function, topic)
    WHERE kind = 'topic';
CREATE INDEX ember_triggers_by_topic ON ember_triggers (topic) WHERE kind = 'topic';
CREATE INDEX ember_triggers_due ON ember_triggers (next_fire_at) WHERE kind = 'cron';

-- Published events that carried an idempotency key: a retried publish finds its first event.
CREATE TABLE ember_events (
    id              uuid PRIMARY KEY,
    topic           text NOT NULL,
    idempotency_key text NOT NULL,
    deliveries      integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, idempotency_key)
);

-- One row per function run that was asked for asynchronously: an async invocation, one
-- subscriber's copy of an event, a schedule tick, a table change. Its id is the activation id
-- the submitter gets back.
--   pending   waiting for run_at
--   running   claimed by a worker until run_at (the lease); past it, any worker may claim it
--             again (the earlier attempt is presumed lost: a redelivery)
--   succeeded / dead (dead-lettered: out of attempts or age, or a permanent error)
CREATE TABLE ember_deliveries (
    id              uuid PRIMARY KEY,
    function        text NOT NULL,
    version         integer,            -- NULL: whichever version is active when it runs
    source          text NOT NULL CHECK (source IN ('async', 'topic', 'cron', 'table')),
    trigger_id      bigint,
    event_id        uuid,
    idempotency_key text,
    payload         bytea NOT NULL,
    meta            jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'succeeded', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    claims          integer NOT NULL DEFAULT 0,    -- every claim, to match outcomes to it
    redeliveries    integer NOT NULL DEFAULT 0,
    redrives        integer NOT NULL DEFAULT 0,
    run_at          timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    http_status     integer,
    result          bytea,
    result_type     text,
    error           jsonb,
    logs            text NOT NULL DEFAULT '',
    last_activation uuid
);
-- Per source: a caller's Idempotency-Key can never collide with a schedule's or a table's key.
CREATE UNIQUE INDEX ember_deliveries_idempotency
    ON ember_deliveries (function, source, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX ember_deliveries_due ON ember_deliveries (run_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX ember_deliveries_dead ON ember_deliveries (function, finished_at DESC)
    WHERE status = 'dead';
CREATE INDEX ember_deliveries_finished ON ember_deliveries (finished_at)
    WHERE status = 'succeeded';
