"""Ember's benchmarks: latency, cold starts, throughput and memory, side by side with a floor."""
