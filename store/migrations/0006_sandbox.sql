-- Per-version sandbox settings: the network an instance gets and its CPU quota.
ALTER TABLE ember_versions
    ADD COLUMN network text NOT NULL DEFAULT 'egress' CHECK (network IN ('egress', 'none')),
    ADD COLUMN cpus double precision NOT NULL DEFAULT 1 CHECK (cpus > 0 AND cpus <= 64);
