-- Where the scheduler leader listens (Kubernetes): written by the replica that holds the leader
-- lock, read by gateways, so that standby replicas can be ready without getting requests.

CREATE TABLE ember_scheduler_leader (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    address     text NOT NULL,
    elected_at  timestamptz NOT NULL DEFAULT now()
);
