-- Named queries: each block starts with "-- name: <query_name>" and runs as one statement.

-- name: create_function_or_bump
-- Reserve the next version number of a function, creating the function on first deploy.
INSERT INTO ember_functions (name, active_version, latest_version)
VALUES ($1, 1, 1)
ON CONFLICT (name) DO UPDATE
    SET latest_version = ember_functions.latest_version + 1, updated_at = now()
RETURNING latest_version;

-- name: insert_version
INSERT INTO ember_versions
    (function, version, source, sha256, filename, entry, env, timeout_s, memory_bytes, concurrency,
     max_attempts, max_event_age_s, archive, requirements, env_hash, lock, preimport, files,
     network, cpus, style, style_options)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22)
RETURNING *;

-- name: set_active_version
UPDATE ember_functions SET active_version = $2, updated_at = now()
WHERE name = $1
RETURNING active_version;

-- name: notify_function_changed
-- The active version (0 when deleted), so a gateway that already has that version cached (it
-- made the change) keeps its cache. Payloads, and why twice: store/changes.py.
SELECT pg_notify('ember_changes',
                 json_build_object('kind', 'function', 'function', $1::text,
                                   'version', $2::int)::text),
       pg_notify('ember_functions', $1::text || ':' || $2::int);

-- name: get_function
SELECT f.name, f.active_version, f.latest_version, f.created_at, f.updated_at,
       (SELECT count(*) FROM ember_versions v WHERE v.function = f.name) AS version_count
FROM ember_functions f
WHERE f.name = $1;

-- name: list_functions
SELECT f.name, f.active_version, f.latest_version, f.created_at, f.updated_at,
       (SELECT count(*) FROM ember_versions v WHERE v.function = f.name) AS version_count
FROM ember_functions f
ORDER BY f.name;

-- name: get_version
SELECT * FROM ember_versions WHERE function = $1 AND version = $2;

-- name: get_active_version
SELECT v.* FROM ember_versions v
JOIN ember_functions f ON f.name = v.function AND f.active_version = v.version
WHERE f.name = $1;

-- name: list_versions
-- Every column but the archive (up to FN_MAX_SOURCE each): a listing does not need the code.
SELECT v.function, v.version, v.source, v.sha256, v.filename, v.entry, v.env, v.timeout_s,
       v.memory_bytes, v.concurrency, v.created_at, v.max_attempts, v.max_event_age_s,
       NULL::bytea AS archive, v.requirements, v.env_hash, v.lock, v.preimport, v.files,
       v.network, v.cpus, v.style, v.style_options, v.access,
       (v.version = f.active_version) AS active
FROM ember_versions v JOIN ember_functions f ON f.name = v.function
WHERE v.function = $1
ORDER BY v.version DESC;

-- name: previous_version
-- The newest version older than the active one: what a plain rollback goes back to.
SELECT max(v.version) FROM ember_versions v
JOIN ember_functions f ON f.name = v.function
WHERE v.function = $1 AND v.version < f.active_version;

-- name: delete_function
DELETE FROM ember_functions WHERE name = $1 RETURNING name;

-- name: delete_activations
DELETE FROM ember_activations WHERE function = $1;

-- name: delete_function_policy
DELETE FROM ember_policies WHERE function = $1;

-- name: list_activations
SELECT id, function, version, started_at, duration_ms, cold, status, http_status, error, logs
FROM ember_activations
WHERE function = $1
ORDER BY started_at DESC
LIMIT $2;

-- name: create_restored_activations
CREATE TEMPORARY TABLE ember_restored_activations (LIKE ember_activations) ON COMMIT DROP;

-- name: insert_restored_activations
INSERT INTO ember_activations SELECT * FROM ember_restored_activations
ON CONFLICT (id) DO NOTHING;

-- name: get_activation
SELECT id, function, version, started_at, duration_ms, cold, status, http_status, error, logs
FROM ember_activations
WHERE id = $1;

-- name: function_exists
SELECT EXISTS (SELECT 1 FROM ember_functions WHERE name = $1);

-- name: lock_function
SELECT active_version FROM ember_functions WHERE name = $1 FOR UPDATE;

-- name: lock_migrations
SELECT pg_advisory_lock($1);

-- name: unlock_migrations
SELECT pg_advisory_unlock($1);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS ember_migrations (
    number      integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT number FROM ember_migrations;

-- name: record_migration
INSERT INTO ember_migrations (number, name) VALUES ($1, $2);

-- name: set_policy
-- Set the given fields of a function's policy ('*': the default); NULL arguments keep a field,
-- and the fields named in $6 are unset (inherited again).
INSERT INTO ember_policies AS p (function, prewarm, keep_alive_s, min_warm, max_instances)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (function) DO UPDATE SET
    prewarm = CASE WHEN 'prewarm' = ANY($6::text[]) THEN NULL
                   ELSE COALESCE(EXCLUDED.prewarm, p.prewarm) END,
    keep_alive_s = CASE WHEN 'keep_alive_s' = ANY($6::text[]) THEN NULL
                        ELSE COALESCE(EXCLUDED.keep_alive_s, p.keep_alive_s) END,
    min_warm = CASE WHEN 'min_warm' = ANY($6::text[]) THEN NULL
                    ELSE COALESCE(EXCLUDED.min_warm, p.min_warm) END,
    max_instances = CASE WHEN 'max_instances' = ANY($6::text[]) THEN NULL
                         ELSE COALESCE(EXCLUDED.max_instances, p.max_instances) END,
    updated_at = now()
RETURNING *;

-- name: list_policies
SELECT * FROM ember_policies ORDER BY function;

-- name: delete_policy
DELETE FROM ember_policies WHERE function = $1 RETURNING function;

-- name: notify_policy_changed
SELECT pg_notify('ember_changes',
                 json_build_object('kind', 'policy', 'function', $1::text)::text),
       pg_notify('ember_functions', 'policy:' || $1::text);

-- name: insert_delivery
-- Submit, and ($10) wake every gateway's workers, in one round trip. A notifying commit takes a
-- global lock, so the submitting gateway wakes its own worker directly when it can take the work. With an idempotency key already used for the
-- function, nothing is inserted and no row comes back (see find_delivery_by_key).
WITH ins AS (
    INSERT INTO ember_deliveries (id, function, version, source, trigger_id, idempotency_key,
                                  payload, meta, run_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now()))
    ON CONFLICT (function, source, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT ins.id, CASE WHEN $10 THEN pg_notify('ember_deliveries', '') END FROM ins;

-- name: insert_deliveries
-- A batch of async invocations in one statement; those whose idempotency key the function has
-- seen before are not inserted and not returned ($8: NOTIFY, as for insert_delivery).
WITH ins AS (
    INSERT INTO ember_deliveries (id, function, version, source, idempotency_key, payload, meta)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[],
                         $6::bytea[], $7::jsonb[])
    ON CONFLICT (function, source, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT array_agg(id) AS ids, CASE WHEN $8 THEN pg_notify('ember_deliveries', '') END AS notified
FROM ins;

-- name: find_delivery_by_key
SELECT id FROM ember_deliveries WHERE function = $1 AND source = $2 AND idempotency_key = $3;

-- name: notify_deliveries
SELECT pg_notify('ember_deliveries', '');

-- name: insert_event
INSERT INTO ember_events (id, topic, idempotency_key, deliveries)
VALUES ($1, $2, $3, $4)
ON CONFLICT (topic, idempotency_key) DO NOTHING
RETURNING id;

-- name: find_event_by_key
SELECT id, deliveries FROM ember_events WHERE topic = $1 AND idempotency_key = $2;

-- name: fan_out_events
-- A batch of events ($1 ids, $2 topics, $3 payloads, $4 content types), all or nothing: when a
-- topic does not exist nothing is inserted and `missing` names it; else per event id, its
-- deliveries.
WITH ev AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[])
        AS e(id, topic, payload, content_type)
), missing AS (
    SELECT DISTINCT ev.topic FROM ev
    WHERE NOT EXISTS (SELECT 1 FROM ember_topics WHERE name = ev.topic)
), ins AS (
    INSERT INTO ember_deliveries (id, function, source, trigger_id, event_id, payload, meta)
    SELECT gen_random_uuid(), t.function, 'topic', t.id, ev.id, ev.payload,
           jsonb_build_object('method', 'POST', 'path', '/', 'query', '',
                              'content_type', ev.content_type,
                              'headers', jsonb_build_array(
                                  jsonb_build_array('X-Ember-Topic', ev.topic)))
    FROM ev JOIN ember_triggers t ON t.kind = 'topic' AND t.topic = ev.topic
    WHERE NOT EXISTS (SELECT 1 FROM missing)
    RETURNING event_id
), counts AS (
    SELECT event_id, count(*)::int AS n FROM ins GROUP BY event_id
)
SELECT (SELECT array_agg(topic ORDER BY topic) FROM missing) AS missing,
       (SELECT array_agg(event_id ORDER BY event_id) FROM counts) AS event_ids,
       (SELECT array_agg(n ORDER BY event_id) FROM counts) AS deliveries,
       CASE WHEN $5 THEN pg_notify('ember_deliveries', '') END AS notified;

-- name: set_event_deliveries
UPDATE ember_events SET deliveries = $2 WHERE id = $1;

-- name: enqueue_changes
-- Table changes moved from a watched database's outbox; the key makes a repeated move a no-op.
INSERT INTO ember_deliveries (id, function, source, trigger_id, idempotency_key, payload, meta)
SELECT gen_random_uuid(), t.function, 'table', t.id, 'change:' || c.trigger_id || ':' || c.id,
       c.payload, '{"content_type": "application/json"}'::jsonb
FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS c(id, trigger_id, payload)
JOIN ember_triggers t ON t.id = c.trigger_id AND t.kind = 'table'
ON CONFLICT (function, source, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;

-- name: claim_deliveries
-- Take up to $1 due deliveries for gateway run $3; each is leased for its function's timeout
-- plus $2 seconds.
WITH due AS (
    SELECT d.id, d.status AS was,
           coalesce((SELECT v.timeout_s FROM ember_versions v
                     JOIN ember_functions f ON f.name = v.function
                     WHERE v.function = d.function
                       AND v.version = coalesce(d.version, f.active_version)), 0) AS timeout_s
    FROM ember_deliveries d
    WHERE d.status IN ('pending', 'running') AND d.run_at <= now()
    ORDER BY d.run_at
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE ember_deliveries d SET
    status = 'running',
    attempts = d.attempts + 1,
    claims = d.claims + 1,
    redeliveries = d.redeliveries + (due.was = 'running')::int,
    started_at = now(),
    run_at = now() + make_interval(secs => due.timeout_s + $2),
    claimed_by = $3
FROM due
WHERE d.id = due.id
RETURNING d.id, d.function, d.version, d.source, d.trigger_id, d.event_id, d.payload, d.meta,
          d.attempts, d.claims, d.created_at, (due.was = 'running') AS redelivered;

-- name: next_delivery_due
SELECT extract(epoch FROM min(run_at) - now()) FROM ember_deliveries
WHERE status IN ('pending', 'running');

-- name: finish_deliveries
-- Record outcomes in one statement: succeeded / dead rows are final, pending ones retry at run_at.
-- Only rows still under this claim change (a lease that ran out was claimed again).
UPDATE ember_deliveries d SET
    status = o.status,
    run_at = coalesce(o.run_at, d.run_at),
    finished_at = CASE WHEN o.status IN ('succeeded', 'dead') THEN now() END,
    http_status = o.http_status,
    result = o.result,
    result_type = o.result_type,
    error = o.error,
    logs = o.logs,
    last_activation = o.activation,
    attempts = d.attempts - o.uncount::int
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::bytea[],
            $7::text[], $8::jsonb[], $9::text[], $10::uuid[], $11::bool[])
    AS o(id, claim, status, run_at, http_status, result, result_type, error, logs, activation,
         uncount)
WHERE d.id = o.id AND d.claims = o.claim AND d.status = 'running';

-- name: get_delivery
SELECT * FROM ember_deliveries WHERE id = $1;

-- name: list_dead
-- $3: only this namespace's (its functions are stored as NAMESPACE.NAME; default's have no dot).
SELECT * FROM ember_deliveries
WHERE status = 'dead' AND ($1::text IS NULL OR function = $1)
  AND ($3::text IS NULL
       OR ($3 = 'default' AND strpos(function, '.') = 0)
       OR starts_with(function, $3 || '.'))
ORDER BY finished_at DESC
LIMIT $2;

-- name: redrive
-- Send dead deliveries again with a fresh count of attempts: by id, or every one of a function.
UPDATE ember_deliveries SET
    status = 'pending', attempts = 0, redrives = redrives + 1, run_at = now(), created_at = now(),
    finished_at = NULL
WHERE status = 'dead'
  AND (id = ANY($1::uuid[]) OR ($2::text IS NOT NULL AND function = $2))
RETURNING id;

-- name: release_deliveries
-- Give back deliveries a stopping worker did not finish: due again now, the attempt not counted.
UPDATE ember_deliveries d SET status = 'pending', run_at = now(), attempts = d.attempts - 1
FROM unnest($1::uuid[], $2::int[]) AS r(id, claim)
WHERE d.id = r.id AND d.claims = r.claim AND d.status = 'running';

-- name: delivery_depth
SELECT function, status, count(*)::int AS n FROM ember_deliveries
WHERE status IN ('pending', 'running', 'dead')
GROUP BY function, status;

-- name: delete_deliveries
DELETE FROM ember_deliveries WHERE function = $1;

-- name: create_topic
INSERT INTO ember_topics (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING name;

-- name: list_topics
SELECT t.name, t.created_at,
       (SELECT count(*) FROM ember_triggers g WHERE g.topic = t.name)::int AS subscribers
FROM ember_topics t ORDER BY t.name;

-- name: topic_exists
SELECT EXISTS (SELECT 1 FROM ember_topics WHERE name = $1);

-- name: delete_topic
DELETE FROM ember_topics WHERE name = $1 RETURNING name;

-- name: insert_trigger
INSERT INTO ember_triggers (function, kind, topic, cron, timezone, next_fire_at, table_name,
                            operations, database_url)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING *;

-- name: list_triggers
SELECT * FROM ember_triggers WHERE ($1::text IS NULL OR function = $1) ORDER BY id;

-- name: get_trigger
SELECT * FROM ember_triggers WHERE id = $1;

-- name: set_trigger_table
UPDATE ember_triggers SET table_name = $2 WHERE id = $1;

-- name: delete_trigger
DELETE FROM ember_triggers WHERE id = $1 RETURNING *;

-- name: table_triggers
SELECT * FROM ember_triggers WHERE kind = 'table' ORDER BY id;

-- name: due_schedules
SELECT id, function, cron, timezone, next_fire_at FROM ember_triggers
WHERE kind = 'cron' AND next_fire_at <= $1
ORDER BY next_fire_at
LIMIT 100
FOR UPDATE SKIP LOCKED;

-- name: set_next_fire
UPDATE ember_triggers SET next_fire_at = $2 WHERE id = $1;

-- name: next_schedule_due
SELECT min(next_fire_at) FROM ember_triggers WHERE kind = 'cron';

-- name: notify_triggers_changed
SELECT pg_notify('ember_changes',
                 json_build_object('kind', 'triggers', 'trigger_kind', $1::text)::text),
       pg_notify('ember_functions', 'triggers:' || $1::text);

-- name: get_environment
SELECT * FROM ember_environments WHERE hash = $1;

-- name: insert_environment
INSERT INTO ember_environments (hash, requirements, lock, python, size_bytes, unpacked_bytes,
                                chunks, build_s)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (hash) DO NOTHING
RETURNING hash;

-- name: insert_environment_chunk
INSERT INTO ember_environment_chunks (hash, seq, data) VALUES ($1, $2, $3);

-- name: get_environment_chunk
SELECT data FROM ember_environment_chunks WHERE hash = $1 AND seq = $2;

-- name: insert_build
INSERT INTO ember_builds (function, env_hash, status, log, duration_s)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: list_builds
SELECT * FROM ember_builds WHERE function = $1 ORDER BY id DESC LIMIT $2;

-- name: try_leader_lock
SELECT pg_try_advisory_lock($1);

-- name: ping
SELECT 1;

-- name: advertise_scheduler
INSERT INTO ember_scheduler_leader (singleton, address, elected_at) VALUES (true, $1, now())
ON CONFLICT (singleton) DO UPDATE SET address = EXCLUDED.address, elected_at = now();

-- name: scheduler_address
SELECT address FROM ember_scheduler_leader;

-- Retention (store/retention.py). Per table: the cutoff, then batches of deletes. A row goes when
-- it is older than $1 (now() minus the age, read once per round) or at or before $2 (the newest
-- row beyond the count; NULL when the table is within it); the oldest $3 such rows per batch,
-- found by the index on the timestamp.

-- name: retention_lock
SELECT pg_try_advisory_lock($1);

-- name: retention_unlock
SELECT pg_advisory_unlock($1);

-- name: cutoff_activations
SELECT now() - $1::interval AS before,
       (SELECT started_at FROM ember_activations
        ORDER BY started_at DESC OFFSET $2 LIMIT 1) AS through;

-- name: prune_activations
DELETE FROM ember_activations WHERE id IN (
    SELECT id FROM ember_activations
    WHERE started_at < $1 OR started_at <= $2
    ORDER BY started_at
    LIMIT $3);

-- name: cutoff_deliveries
-- Succeeded deliveries only: pending and running ones are work, dead letters wait for a redrive.
SELECT now() - $1::interval AS before,
       (SELECT finished_at FROM ember_deliveries WHERE status = 'succeeded'
        ORDER BY finished_at DESC OFFSET $2 LIMIT 1) AS through;

-- name: prune_deliveries
DELETE FROM ember_deliveries WHERE id IN (
    SELECT id FROM ember_deliveries
    WHERE status = 'succeeded' AND (finished_at < $1 OR finished_at <= $2)
    ORDER BY finished_at
    LIMIT $3);

-- name: cutoff_events
-- Published events' idempotency keys: a publish retried after this is a new event.
SELECT now() - $1::interval AS before,
       (SELECT created_at FROM ember_events
        ORDER BY created_at DESC OFFSET $2 LIMIT 1) AS through;

-- name: prune_events
DELETE FROM ember_events WHERE id IN (
    SELECT id FROM ember_events
    WHERE created_at < $1 OR created_at <= $2
    ORDER BY created_at
    LIMIT $3);

-- name: cutoff_builds
SELECT now() - $1::interval AS before,
       (SELECT created_at FROM ember_builds
        ORDER BY created_at DESC OFFSET $2 LIMIT 1) AS through;

-- name: prune_builds
DELETE FROM ember_builds WHERE id IN (
    SELECT id FROM ember_builds
    WHERE created_at < $1 OR created_at <= $2
    ORDER BY created_at
    LIMIT $3);

-- name: register_gateway
INSERT INTO ember_gateways (id, name, home, pid) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now();

-- name: heartbeat_gateway
UPDATE ember_gateways SET heartbeat_at = now() WHERE id = $1;

-- name: deregister_gateway
DELETE FROM ember_gateways WHERE id = $1;

-- name: release_dead_gateways
-- Forget the gateway runs that are gone, other than $1: those on home $2 (the caller holds that
-- home's lock, so no other run there is alive) and those without a heartbeat for $3 seconds
-- (NULL: none). Their running deliveries fall due now, as when a lease ends: the next claim
-- takes them again and counts a redelivery.
WITH dead AS (
    DELETE FROM ember_gateways
    WHERE id <> $1
      AND (home = $2 OR heartbeat_at < now() - make_interval(secs => $3))
    RETURNING id
)
UPDATE ember_deliveries d SET run_at = now()
FROM dead
WHERE d.claimed_by = dead.id AND d.status = 'running' AND d.run_at > now()
RETURNING d.id;

-- ---- dashboard and logs (issue 19) -------------------------------------------------------

-- name: list_activations_since
-- A function's activations that started after $2, oldest first ($3 at most: the newest ones).
SELECT * FROM (
    SELECT id, function, version, started_at, duration_ms, cold, status, http_status, error, logs
    FROM ember_activations
    WHERE function = $1 AND started_at > $2
    ORDER BY started_at DESC
    LIMIT $3
) newest
ORDER BY started_at;

-- name: activation_series
-- A function's calls since $2 in buckets of $3 seconds: counts, errors, cold starts, latency.
SELECT to_timestamp(floor(extract(epoch FROM started_at) / $3) * $3) AS bucket,
       count(*) AS calls,
       count(*) FILTER (WHERE status <> 'success') AS errors,
       count(*) FILTER (WHERE cold) AS cold,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms
FROM ember_activations
WHERE function = $1 AND started_at > $2
GROUP BY bucket
ORDER BY bucket;

-- name: activation_summary
-- Every function's calls since $1 (one row per function that had any).
SELECT function,
       count(*) AS calls,
       count(*) FILTER (WHERE status <> 'success') AS errors,
       count(*) FILTER (WHERE cold) AS cold,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms
FROM ember_activations
WHERE started_at > $1
GROUP BY function;

-- name: list_arrivals
-- When a function was called since $2 (and for how long), oldest first: a trace to simulate.
SELECT started_at, duration_ms
FROM ember_activations
WHERE function = $1 AND started_at > $2
ORDER BY started_at
LIMIT $3;

-- name: function_activation_summary
-- One function's calls since $2 (no row when it had none).
SELECT function,
       count(*) AS calls,
       count(*) FILTER (WHERE status <> 'success') AS errors,
       count(*) FILTER (WHERE cold) AS cold,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms
FROM ember_activations
WHERE function = $1 AND started_at > $2
GROUP BY function;
-- == Broker sources (events/sources/) ==================================================

-- name: insert_source_trigger
INSERT INTO ember_triggers (function, kind, source_options, source_url)
VALUES ($1, $2, $3, $4)
RETURNING *;

-- name: source_triggers
SELECT * FROM ember_triggers
WHERE kind IN ('nats', 'rabbitmq', 'redis', 'mqtt', 'kafka')
ORDER BY id;

-- name: enqueue_messages
-- A batch of broker messages for the function of trigger $1 (kind $2), one delivery each; a
-- message the broker gave again ($4 keys: its stream sequence, entry id or offset) is not
-- inserted again. $7: NOTIFY every gateway's workers. Returns how many were new.
WITH ins AS (
    INSERT INTO ember_deliveries (id, function, source, trigger_id, idempotency_key, payload,
                                  meta)
    SELECT m.id, t.function, $2, t.id, m.key, m.payload, m.meta
    FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::jsonb[]) AS m(id, key, payload, meta)
    JOIN ember_triggers t ON t.id = $1
    ON CONFLICT (function, source, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING 1
)
SELECT count(*)::int AS inserted,
       CASE WHEN $7 THEN pg_notify('ember_deliveries', '') END AS notified
FROM ins;

-- name: source_backlog
-- How many deliveries of function $1 from source kind $2 wait or run, counted up to $3.
SELECT count(*)::int FROM (
    SELECT 1 FROM ember_deliveries
    WHERE function = $1 AND source = $2 AND status IN ('pending', 'running')
    LIMIT $3
) AS waiting;

-- name: try_source_lock
-- The lock that makes one gateway the only consumer of a source: (class, trigger id).
SELECT pg_try_advisory_lock($1::int, $2::int);

-- name: release_source_lock
SELECT pg_advisory_unlock($1::int, $2::int);
-- ---------------------------------------------------------------------------------------------
-- Tenancy (issue 18): namespaces, API keys, secrets, the audit trail, version access settings.

-- name: set_version_access
UPDATE ember_versions SET access = $3 WHERE function = $1 AND version = $2 RETURNING *;

-- name: notify_access_changed
-- Keys or namespaces changed: every gateway reloads its key cache (store/changes.py).
SELECT pg_notify('ember_changes', json_build_object('kind', 'access')::text);

-- name: list_api_keys_all
SELECT * FROM ember_api_keys ORDER BY namespace, created_at;

-- name: insert_api_key
INSERT INTO ember_api_keys (id, namespace, role, secret_hash, description, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: revoke_api_key
UPDATE ember_api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1 AND ($2::text IS NULL OR namespace = $2)
RETURNING *;

-- name: list_namespaces
SELECT n.name, n.auth, n.created_at FROM ember_namespaces n ORDER BY n.name;

-- name: upsert_namespace
INSERT INTO ember_namespaces (name, auth) VALUES ($1, coalesce($2, 'public'))
ON CONFLICT (name) DO UPDATE SET auth = coalesce($2, ember_namespaces.auth)
RETURNING name, auth, created_at;

-- name: set_secret
INSERT INTO ember_secrets (namespace, name, ciphertext, keys) VALUES ($1, $2, $3, $4)
ON CONFLICT (namespace, name) DO UPDATE
    SET ciphertext = excluded.ciphertext, keys = excluded.keys, updated_at = now()
RETURNING namespace, name, keys, updated_at;

-- name: get_secret_ciphertext
SELECT ciphertext FROM ember_secrets WHERE namespace = $1 AND name = $2;

-- name: list_secrets
SELECT namespace, name, keys, updated_at FROM ember_secrets WHERE namespace = $1 ORDER BY name;

-- name: delete_secret
DELETE FROM ember_secrets WHERE namespace = $1 AND name = $2 RETURNING name;

-- name: functions_using_secret
-- The functions of namespace $1 with a version that reads its secret $2 (the active one, or
-- an older one called pinned, NAME:2): rotating it rolls their warm instances. (A function of
-- namespace "team-a" is stored as "team-a.NAME".)
SELECT f.name FROM ember_functions f
WHERE EXISTS (
    SELECT 1 FROM ember_versions v WHERE v.function = f.name AND v.access -> 'secrets' ? $2
)
  AND CASE WHEN $1 = 'default' THEN strpos(f.name, '.') = 0
           ELSE starts_with(f.name, $1 || '.') END;

-- name: notify_secret_rotated
SELECT pg_notify('ember_changes',
                 json_build_object('kind', 'secret', 'functions', $1::text[])::text);

-- name: record_audit
INSERT INTO ember_audit (actor, namespace, method, path, action, status, subject)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: list_audit
-- Newest first; $1: one namespace, or NULL for all.
SELECT id, at, actor, namespace, method, path, action, status, subject FROM ember_audit
WHERE $1::text IS NULL OR namespace = $1
ORDER BY id DESC
LIMIT $2;

-- Call routing between gateways (gateway/routing.py) ------------------------------------------

-- name: advertise_gateway
-- Set (or, with NULL, withdraw) the address where run $1 takes calls for the functions it is
-- home to. UPDATE 0: the run was taken for dead meanwhile (its heartbeat registers it again).
UPDATE ember_gateways SET address = $2 WHERE id = $1;

-- name: list_gateway_homes
-- The runs that may be home to functions: an address, and a heartbeat within $1 seconds.
SELECT id, name, address FROM ember_gateways
WHERE address IS NOT NULL AND heartbeat_at >= now() - make_interval(secs => $1)
ORDER BY id;

-- Trusted environments (scheduler/backends/env_zygotes.py) ------------------------------------

-- name: trust_environment
-- Trust environment $1, importing modules $2 (empty: its top-level packages); NULL when there
-- is no such environment.
INSERT INTO ember_trusted_envs (hash, modules)
SELECT hash, $2 FROM ember_environments WHERE hash = $1
ON CONFLICT (hash) DO UPDATE SET modules = EXCLUDED.modules, trusted_at = now()
RETURNING hash, modules, trusted_at,
    (SELECT requirements FROM ember_environments e WHERE e.hash = ember_trusted_envs.hash),
    (SELECT lock FROM ember_environments e WHERE e.hash = ember_trusted_envs.hash);

-- name: untrust_environment
DELETE FROM ember_trusted_envs WHERE hash = $1 RETURNING hash;

-- name: list_trusted_environments
SELECT t.hash, t.modules, t.trusted_at, e.requirements, e.lock FROM ember_trusted_envs t
JOIN ember_environments e USING (hash)
ORDER BY t.trusted_at;

-- name: notify_trust_changed
-- An environment was trusted or untrusted: every gateway reloads the list (store/changes.py).
SELECT pg_notify('ember_changes', json_build_object('kind', 'trust')::text);
