-- What a table trigger installs in the watched database (Ember's own or the user's): a schema
-- with the outbox table, the capture function, and helpers to add and remove triggers. A change
-- is written to the outbox in the transaction that made it, so it survives Ember being down.

-- name: setup
CREATE SCHEMA IF NOT EXISTS ember_outbox;
CREATE TABLE IF NOT EXISTS ember_outbox.changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger_id  bigint NOT NULL,
    payload     jsonb NOT NULL
);
CREATE OR REPLACE FUNCTION ember_outbox.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO ember_outbox.changes (trigger_id, payload) VALUES (
        TG_ARGV[0]::bigint,
        jsonb_build_object(
            'op', lower(TG_OP),
            'table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
            'old', CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
            'new', CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END,
            'at', clock_timestamp()));
    PERFORM pg_notify('ember_outbox', TG_ARGV[0]);
    RETURN NULL;
END $$;

-- name: lock
-- $1: OUTBOX_LOCK_KEY (a parameter: hex integer literals need Postgres 16).
SELECT pg_advisory_xact_lock($1);

-- name: resolve_table
-- The table's schema-qualified, quoted name; raises when there is no such table.
SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1::regclass;

-- name: find_trigger
-- The table a trigger of ours is on, wherever the table has been renamed or moved to.
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname = $1 AND NOT t.tgisinternal;

-- name: remove_changes
DELETE FROM ember_outbox.changes WHERE trigger_id = $1;

-- name: remaining_triggers
SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ember\_trigger\_%' AND NOT tgisinternal;

-- name: drop_schema
DROP SCHEMA IF EXISTS ember_outbox CASCADE;

-- name: take_changes
SELECT id, trigger_id, payload::text AS payload FROM ember_outbox.changes
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: delete_changes
DELETE FROM ember_outbox.changes WHERE id = ANY($1::bigint[]);

-- name: has_schema
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'ember_outbox');
