"""The walls around one instance on one machine (Linux): namespaces, identity, seccomp, output.

Built in two steps so that a cold start stays a specialization (SOCK, ATC'18):

- `fork_instance(spec)` and `enter(spec)`, while the instance is still generic and runs only
  our code: the zygote forks the instance as the PID 1 of a PID namespace of its own (as root),
  which joins the instance's cgroups and forks the invoker at once; the invoker unshares mount,
  IPC and UTS namespaces, mounts a private `/proc`, a size-capped `/tmp` and `/dev/shm`, and
  covers the platform's directories (state, sockets, homes, `/run`...) with empty read-only
  filesystems:

      init (PID 1, the zygote's child)   reaps orphans; the PID the platform watches and
        │                                signals; when it ends, the kernel kills every
        └─ invoker (PID 2)               process left in the namespace

  Not root, a user namespace is needed first, and a supervisor outside it stands for the
  instance (the zygote cannot bring its children back from a namespace it does not own).

- `Walls.specialize(...)`, in the invoker when a function's code arrives, before its module is
  imported: a network namespace with only loopback for `--network none`, the function's
  environment bound in read-only, the code made read-only, then the function's own uid and gid
  (no groups, no capabilities, no new privileges), a seccomp filter, and stdout/stderr file
  descriptors that go into the activation's logs (capped) instead of the platform's log.

The invoker imports nothing else of Ember; the platform sends what to build (`GenericSpec`,
`SpecializeSpec`). The filesystem an instance sees is `invoker.mounts`, the seccomp filters
`invoker.seccomp`; `docs/security.md` says what each wall stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import signal
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from invoker import seccomp
from invoker.linux import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    IFF_UP,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    PR_CAPBSET_DROP,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    SIOCGIFFLAGS,
    SIOCSIFFLAGS,
    check,
    libc,
    mount,
    unshare,
)
from invoker.mounts import Covers, build_mounts
from invoker.output import OutputCapture
from invoker.specs import ConfineSpec, GenericSpec, SpecializeSpec


def _die_with_parent(parent: int) -> None:
    libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _exit_like(status: int) -> NoReturn:
    """Exit with a child's wait status: killed by a signal -> killed by the same signal."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        with contextlib.suppress(OSError):
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(128 - code)
    os._exit(code)


def _supervise(child: int, status_pipe: int) -> NoReturn:
    """The supervisor: wait for init, then end as the invoker ended (init writes the
    invoker's wait status on `status_pipe`: a PID 1 cannot die by its own signal). Signals
    reach the invoker by the process group; dying early would kill the namespace at once."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except ChildProcessError:
            os._exit(1)
        with contextlib.suppress(OSError, struct.error):
            data = os.read(status_pipe, 4)
            if len(data) == 4:
                status = struct.unpack("i", data)[0]
        _exit_like(status)


def _run_init(child: int, status_pipe: int) -> NoReturn:
    """PID 1 of the namespace: reap every orphan; when the invoker exits, exit too (the kernel
    then kills what is left). A PID 1 cannot die by its own signal: the invoker's wait status
    goes to the supervisor on `status_pipe` when there is one, else the exit code is 128 + the
    signal (the zygote reports it as the signal)."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            if status_pipe >= 0:
                with contextlib.suppress(OSError):
                    os.write(status_pipe, struct.pack("i", status))
                os._exit(0)
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else min(code, 128))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _enter_user_namespace() -> None:
    uid, gid = os.geteuid(), os.getegid()
    # A process that changed its uid is not dumpable: its /proc/self files are root's then.
    libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    unshare(CLONE_NEWUSER)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


_own_pid_namespace: int | None = None


def fork_instance(spec: GenericSpec) -> int:
    """Fork the process that stands for a new instance (returns 0 in it, its pid here).

    As root, it is the PID 1 of a PID namespace of its own: the caller (the zygote) moves its
    children into a new namespace for this one fork, then back. In a user namespace (not
    root) that way back is closed, so the child makes the namespace itself (`enter`)."""
    global _own_pid_namespace
    if not spec.get("namespaces") or spec.get("userns"):
        return os.fork()
    if _own_pid_namespace is None:
        _own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    unshare(CLONE_NEWPID)
    try:
        pid = os.fork()
    finally:
        if os.getpid() != 1:  # in the parent (and on failure): children in our namespace
            check(libc().setns(_own_pid_namespace, CLONE_NEWPID), "setns")
    return pid


def forget_pid_namespace() -> None:
    """In a fork that becomes a zygote itself: the descriptor of the PID namespace was its
    parent's (closed with the rest); it opens its own."""
    global _own_pid_namespace
    _own_pid_namespace = None


def enter(spec: GenericSpec) -> Walls:
    """Build the generic walls in the process `fork_instance` made; returns in the invoker
    process only (see the module doc)."""
    for procs in spec.get("cgroup_procs", []):
        _write(procs, "0")  # this process (its pid as the cgroup's namespace reads it)
    if not spec.get("namespaces"):
        _set_nofile(spec)
        return Walls(spec, Covers())
    if spec.get("userns"):
        _enter_user_namespace()
        unshare(CLONE_NEWPID)
        status_read, status_write = os.pipe()
        init = os.fork()
        if init != 0:
            os.close(status_write)
            _supervise(init, status_read)
        os.close(status_read)
        _die_with_parent(0)  # (the supervisor is outside the namespace: its pid reads as 0)
    else:
        status_write = -1  # PID 1 already, a direct child of the zygote
    # Init shares the invoker's mount namespace (/proc/1/root shows the walls, not the host)
    # and cannot be read through /proc; the invoker builds the mounts, so init stays small.
    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
    libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    invoker = os.fork()
    if invoker != 0:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _run_init(invoker, status_write)
    if status_write >= 0:
        os.close(status_write)
    _die_with_parent(1)
    covers = build_mounts(spec)
    socket.sethostname("ember")
    _set_nofile(spec)
    return Walls(spec, covers)


def _set_nofile(spec: GenericSpec) -> None:
    nofile = int(spec.get("nofile", 0))
    if nofile > 0:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)
    os.chmod(root, 0o555)


def _drop_capabilities() -> None:
    """No capability left, in any set (for a user-namespace root that keeps its uid 0)."""
    lib = libc()
    for cap in range(64):
        if lib.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break
    header = struct.pack("II", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)
    check(lib.capset(ctypes.c_char_p(header), data), "capset")


class Walls:
    """One instance's sandbox, as seen from the invoker."""

    def __init__(self, spec: GenericSpec, covers: Covers) -> None:
        self.spec = spec
        self._covers = covers
        self.output: OutputCapture | None = None
        self._pending_output: OutputCapture | None = None

    @classmethod
    def none(cls) -> Walls:
        """No walls: a spawned instance, or isolation off."""
        return cls(GenericSpec(), Covers())

    @property
    def sandboxed(self) -> bool:
        return bool(self.spec.get("namespaces"))

    def private_tmp(self, max_output_bytes: int) -> None:
        """Code and temporary files go to the private /tmp, not the platform's directory;
        the output capture is made ready for the specialization."""
        if self.sandboxed:
            os.environ["TMPDIR"] = "/tmp"
            tempfile.tempdir = "/tmp"
            with contextlib.suppress(Exception):  # (no libseccomp: reported off already)
                seccomp.deny_io_uring()
            if not self.spec.get("userns"):
                # Started now, it costs the cold start nothing; the uid change at
                # specialization reaches every thread. (In a user namespace, capabilities
                # are dropped per thread: it is started after they are.)
                self._pending_output = OutputCapture(max_output_bytes)

    def specialize(
        self, spec: SpecializeSpec, code_dir: Path, paths: list[str], max_output_bytes: int
    ) -> None:
        """Close the walls around one function; called before its module is imported."""
        if not spec:
            return
        if spec.get("network") == "none":
            unshare(CLONE_NEWNET)
            _loopback_up()
        for path in paths:
            self._covers.bind_back(path)
        self._covers.close()
        _make_read_only(code_dir)
        if "uid" in spec:
            os.setgroups([])
            gid, uid = int(spec["gid"]), int(spec["uid"])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        else:
            _drop_capabilities()
        lib = libc()
        check(lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        check(lib.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
        if spec.get("seccomp"):
            seccomp.load(egress=spec.get("network") != "none")
        self.output = self._pending_output or OutputCapture(max_output_bytes)
        self.output.attach()


def probe() -> dict[str, Any]:
    """What this host lets us build, tried in a throw-away child: namespaces (as root, or in a
    user namespace), and whether the seccomp binding loads."""
    result: dict[str, Any] = {"root": os.geteuid() == 0, "why": {}}
    userns = os.geteuid() != 0
    pid = os.fork()
    if pid == 0:  # what `enter` does: namespaces, then (in the new PID namespace) the mounts
        code = 0
        try:
            if userns:
                _enter_user_namespace()
            unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET)
            inner = os.fork()
            if inner == 0:
                try:
                    mount(None, "/", None, MS_REC | MS_PRIVATE)
                    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=4k")
                    mount(
                        "devpts",
                        "/tmp",
                        "devpts",
                        MS_NOSUID | MS_NOEXEC,
                        "newinstance,ptmxmode=0666,max=1",
                    )
                except BaseException:
                    os._exit(1)
                os._exit(0)
            code = os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1])
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    result["namespaces"] = status == 0
    result["userns"] = userns
    if status != 0:
        result["why"]["namespaces"] = (
            "user namespaces are not allowed for this user "
            "(kernel.unprivileged_userns_clone or AppArmor)"
            if userns
            else "unshare or mount failed"
        )
    try:
        import pyseccomp

        pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        result["seccomp"] = os.uname().machine in seccomp.SYSCALL_NUMBERS
        if not result["seccomp"]:
            result["why"]["seccomp"] = f"not supported on {os.uname().machine} yet"
    except Exception as exc:
        result["seccomp"] = False
        result["why"]["seccomp"] = f"libseccomp could not be loaded: {exc}"
    return result


def confine(spec: ConfineSpec, argv: list[str]) -> NoReturn:
    """Run `argv` inside walls like an instance's (`python -m invoker --confine SPEC -- ...`):
    for a requirements build, whose packages' build code is as untrusted as a function.

    Its own uid, PID, mount, IPC and UTS namespaces with the platform's directories covered
    and only `expose` writable, its cgroups, no capabilities, no new privileges, the seccomp
    filter of an instance with egress; exits as the command exits."""
    for procs in spec.get("cgroup_procs", []):
        _write(procs, "0")
    unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)
    command = os.fork()
    if command != 0:
        _supervise(command, -1)
    _die_with_parent(0)
    covers = build_mounts(spec)
    covers.close()
    socket.sethostname("ember-build")
    _set_nofile(spec)
    os.chdir(spec.get("cwd", "/tmp"))
    os.setgroups([])
    gid, uid = int(spec["gid"]), int(spec["uid"])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    check(libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    seccomp.load(egress=True)
    os.execv(argv[0], argv)
