"""What a call to the scheduler can fail with.

SchedulerError
 ├── QueueFull       too many calls wait for the version already (429)
 ├── QueueTimeout    no slot became free in time (503)
 ├── AtCapacity      the node is full and nothing idle can be evicted (503)
 ├── StartFailed     no instance could be started or specialized (502)
 └── InstanceLost    the instance handed out could not be reached (502)
"""

from __future__ import annotations

from invoker.protocol import ErrorInfo


class SchedulerError(Exception):
    """Base of the scheduler's errors."""


class QueueFull(SchedulerError):
    def __init__(self, function: str, limit: int, retry_after_s: float) -> None:
        super().__init__(
            f'function "{function}" has {limit} calls waiting already; retry later or raise '
            "its instance limit"
        )
        self.retry_after_s = retry_after_s


class QueueTimeout(SchedulerError):
    pass


class AtCapacity(SchedulerError):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StartFailed(SchedulerError):
    """No instance could be started or specialized for the function."""

    def __init__(self, message: str, error: ErrorInfo | None = None, logs: str = "") -> None:
        super().__init__(message)
        self.error: ErrorInfo = error or {"type": "StartFailed", "message": message}
        self.logs = logs


class InstanceLost(SchedulerError):
    pass
