"""The invoker: the process that runs user code, and its wire protocol.

Only `invoker.protocol` may be imported by the rest of Ember; the runtime runs in its own process.
"""
