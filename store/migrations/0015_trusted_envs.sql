-- Environments the operator trusts (`fn env trust`, the admin token only): the local backend
-- keeps a zygote that imported their packages, and forks their functions' first instances
-- from it (docs/cold-starts.md). Untrusting deletes the row.
CREATE TABLE ember_trusted_envs (
    hash        text PRIMARY KEY REFERENCES ember_environments (hash) ON DELETE CASCADE,
    modules     text[] NOT NULL DEFAULT '{}',  -- what to import; empty: its dists' top-level packages
    trusted_at  timestamptz NOT NULL DEFAULT now()
);
