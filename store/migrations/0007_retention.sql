-- Retention (store/retention.py): the oldest rows of each table that grows with use, found by an
-- index, so that pruning reads only the rows it deletes. Succeeded deliveries already have one
-- (ember_deliveries_finished).

CREATE INDEX ember_activations_by_start ON ember_activations (started_at);
CREATE INDEX ember_events_by_creation ON ember_events (created_at);
CREATE INDEX ember_builds_by_creation ON ember_builds (created_at);
