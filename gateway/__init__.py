"""The gateway: Ember's HTTP face (admin API, invocations, metrics), and the process that runs
the platform on one machine."""
