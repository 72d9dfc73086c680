"""Broker sources: messages from NATS JetStream, RabbitMQ, Redis Streams, MQTT and Kafka become
durable deliveries of the triggered function, each acknowledged to its broker only after
Ember's commit (docs/events.md).

    kinds.py          the kinds of source: request options, defaults, prepare at `trigger add`
    base.py           a received message, the consumer protocol, the errors, message -> delivery
    runner.py         one source's loop: fetch, commit, ack; back-pressure; reconnect, back-off
    manager.py        the sources one gateway runs: one consumer per source (advisory locks)
    metrics.py        lag, messages, connection state per source for /metrics
    secrets.py        the broker URL: sealed for storage, masked when shown
    nats.py, rabbitmq.py, redis_streams.py, mqtt.py, kafka.py: one consumer per broker
"""
