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
    (function, version, source, sha256, filename, entry, env, timeout_s, memory_bytes, concurrency)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: set_active_version
UPDATE ember_functions SET active_version = $2, updated_at = now()
WHERE name = $1
RETURNING active_version;

-- name: notify_function_changed
-- Payload "name:active_version" (0 when deleted), so a gateway that already has that version
-- cached (it made the change) keeps its cache.
SELECT pg_notify('ember_functions', $1 || ':' || $2::int);

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
SELECT v.*, (v.version = f.active_version) AS active
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

-- name: ping
SELECT 1;

-- name: set_policy
-- Set the given fields of a function's policy ('*': the default); NULL arguments keep a field.
INSERT INTO ember_policies AS p (function, prewarm, keep_alive_s, min_warm, max_instances)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (function) DO UPDATE SET
    prewarm = COALESCE(EXCLUDED.prewarm, p.prewarm),
    keep_alive_s = COALESCE(EXCLUDED.keep_alive_s, p.keep_alive_s),
    min_warm = COALESCE(EXCLUDED.min_warm, p.min_warm),
    max_instances = COALESCE(EXCLUDED.max_instances, p.max_instances),
    updated_at = now()
RETURNING *;

-- name: list_policies
SELECT * FROM ember_policies ORDER BY function;

-- name: delete_policy
DELETE FROM ember_policies WHERE function = $1 RETURNING function;

-- name: notify_policy_changed
SELECT pg_notify('ember_functions', 'policy:' || $1);
