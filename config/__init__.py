"""Configuration below every other part of Ember: units ("30s", "256Mi") and reading settings
from the environment. It imports nothing of Ember, so the gateway, the scheduler and the event
system all read their settings the same way."""
