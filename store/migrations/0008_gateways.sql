-- Gateways that run delivery workers, each process run under an id of its own, with a heartbeat;
-- a claim names the run that made it, so the claims of a run that died are released at once
-- (by its successor on the same state dir, or by a peer that sees its heartbeat stop) instead
-- of waiting for their leases.

CREATE TABLE ember_gateways (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,          -- EMBER_GATEWAY_ID: the host or pod name
    home          text NOT NULL,          -- host and state dir: one live run per home
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE ember_deliveries ADD COLUMN claimed_by uuid;
CREATE INDEX ember_deliveries_running_by_gateway ON ember_deliveries (claimed_by)
    WHERE status = 'running';
