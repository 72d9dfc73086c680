"""What the platform asks the invoker to build around an instance (the sandbox's messages).

The zygote gets a `GenericSpec` for each new generic instance, the specialize message carries a
`SpecializeSpec`, and `python -m invoker --confine` a `ConfineSpec`; `invoker.sandbox` and
`invoker.mounts` build what they say.
"""

from __future__ import annotations

from typing import TypedDict


class GenericSpec(TypedDict, total=False):
    """What the platform asks the zygote to build around a new generic instance."""

    cgroup_procs: list[str]
    """`cgroup.procs` files to join (one per cgroup v1 hierarchy, or one v2 leaf)."""
    namespaces: bool
    """Mount, PID, IPC and UTS namespaces, private /proc, /tmp and /dev/shm."""
    userns: bool
    """Not root: a user namespace first (no uid of its own, no cgroups)."""
    tmp_bytes: int
    """Size of the private /tmp and of /dev/shm (tmpfs; counted in the memory cgroup)."""
    hide: list[str]
    """Directories (and files) covered with empty read-only ones: the platform's state and
    sockets, home directories, /run..."""
    reveal: list[str]
    """Paths below covered directories bound back in, read-only (where Python lives)."""
    hide_last: list[str]
    """The platform's own directories (state, sockets): covered after everything is bound
    back, so that they stay hidden even below a path bound back in."""
    expose: list[str]
    """Host directories bound in read-write at the same path (FN_EXPOSE: the operator's
    choice to share them with every function)."""
    reveal_later: list[str]
    """Directories below covered ones from which a function's environment is bound back in,
    read-only, at specialization (the environments cache)."""
    nofile: int
    """RLIMIT_NOFILE of the instance."""


class SpecializeSpec(TypedDict, total=False):
    """What the platform adds to the specialize message for a sandboxed instance."""

    uid: int
    gid: int
    network: str
    """"egress" (host network, loopback and private addresses blocked by the platform's
    firewall rules) or "none" (a network namespace with only loopback)."""
    seccomp: bool


class ConfineSpec(GenericSpec, total=False):
    """What `confine` builds around a command (a requirements build)."""

    uid: int
    gid: int
    cwd: str
