"""The scheduler: the warm pool of invoker instances, its policies, and the backends."""
