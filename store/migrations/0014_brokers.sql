-- Broker sources (events/sources/): a function triggered by the messages of a NATS JetStream
-- subject, a RabbitMQ queue, a Redis stream, an MQTT topic or a Kafka topic. Each message
-- becomes a delivery of its own (source = the broker's kind), committed before the broker is
-- told the message was taken.
ALTER TABLE ember_triggers DROP CONSTRAINT IF EXISTS ember_triggers_kind_check;
ALTER TABLE ember_triggers ADD CONSTRAINT ember_triggers_kind_check
    CHECK (kind IN ('topic', 'cron', 'table', 'nats', 'rabbitmq', 'redis', 'mqtt', 'kafka'));
-- What to consume (subject, stream, durable, queue, exchange, group, qos...), per kind.
ALTER TABLE ember_triggers ADD COLUMN source_options jsonb;
-- The broker's connection URL: a secret (it may carry credentials); never shown back, only
-- its masked form (events/sources/secrets.py seals and opens it).
ALTER TABLE ember_triggers ADD COLUMN source_url text;

ALTER TABLE ember_deliveries DROP CONSTRAINT IF EXISTS ember_deliveries_source_check;
ALTER TABLE ember_deliveries ADD CONSTRAINT ember_deliveries_source_check
    CHECK (source IN ('async', 'topic', 'cron', 'table',
                      'nats', 'rabbitmq', 'redis', 'mqtt', 'kafka'));
-- A source stops pulling while its function has this many deliveries waiting (back-pressure):
-- counted per function and source, so the count must be cheap.
CREATE INDEX ember_deliveries_waiting_by_source ON ember_deliveries (function, source)
    WHERE status IN ('pending', 'running');
