"""The sandbox's parts that `tests/security` (hostile functions against `fn up` as root) does not
reach: the unprivileged path (a user namespace), the choice of protections and `strict`, the
cgroup v2 driver on a tree laid out as the kernel does, and the firewall rules' text."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest

import invoker.sandbox as sandbox
from invoker import seccomp
from invoker.specs import GenericSpec
from scheduler.backends.cgroups import CgroupDriver, _v2_driver, node_pids_max
from scheduler.backends.firewall import firewall_rules
from scheduler.backends.isolation import IsolationError, IsolationSettings, cover_plan
from scheduler.backends.local import LocalBackend

NOBODY = 65534


def _in_child_as_nobody(body: str) -> dict[str, object]:
    """Run `body` (a function of no arguments returning a JSON-able dict) in a forked child
    that has dropped to uid `nobody`; its result comes back through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            result = globals()[body]()
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_fd, json.dumps(result).encode() + b"\n")
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    answers = [json.loads(line) for line in data.splitlines() if line.strip()]
    # One answer; more mean an exception escaped in a process of the instance as well.
    return dict(answers[0]) if len(answers) == 1 else {"error": answers or "no answer"}


def _unprivileged_instance() -> dict[str, object]:
    capabilities = sandbox.probe()
    if not capabilities["namespaces"]:
        return {"skip": capabilities["why"].get("namespaces", "no user namespaces")}
    spec: GenericSpec = {
        "namespaces": True,
        "userns": True,
        "tmp_bytes": 1 << 20,
        "hide": ["/var/log"],
        "nofile": 256,
    }
    read_fd, write_fd = os.pipe()
    instance = sandbox.fork_instance(spec)
    if instance == 0:  # the instance's supervisor, then (in enter) its init and its invoker
        os.close(read_fd)
        walls = sandbox.enter(spec)
        walls.private_tmp(65536)
        code_dir = Path(tempfile.mkdtemp())
        (code_dir / "handler.py").write_text("x = 1\n")
        walls.specialize({"network": "none", "seccomp": True}, code_dir, [], 65536)
        status = dict(
            line.split(":\t", 1)
            for line in Path("/proc/self/status").read_text().splitlines()
            if ":\t" in line
        )
        network = []
        for address in (("127.0.0.1", 5432), ("10.0.0.1", 80)):
            try:
                socket.create_connection(address, timeout=2)
                network.append("connected")
            except OSError as exc:
                network.append(f"{type(exc).__name__}: {exc}")
        try:
            os.listdir("/var/log")
            log_dir = "listed"
        except OSError:
            log_dir = "hidden"
        threads = [
            Path(f"/proc/self/task/{t}/status").read_text() for t in os.listdir("/proc/self/task")
        ]
        cap_eff = {
            line.split()[1]
            for text in threads
            for line in text.splitlines()
            if line.startswith("CapEff:")
        }
        seen = {
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "cap_eff": status["CapEff"].strip(),
            "threads": len(threads),
            "cap_eff_threads": sorted(cap_eff),
            "seccomp": status["Seccomp"].strip(),
            "no_new_privs": status["NoNewPrivs"].strip(),
            "network": network,
            "var_log": os.listdir("/var/log") if log_dir == "listed" else log_dir,
            "code_writable": os.access(code_dir / "handler.py", os.W_OK),
        }
        os.write(write_fd, json.dumps(seen).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(instance, 0)
    return dict(json.loads(data)) if data else {"error": "the instance said nothing"}


def test_without_root_a_user_namespace_still_walls_the_instance() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to become an unprivileged user in a child")
    # What the zygote does first; and what the child will need: nobody may not read Python's
    # own files here (they can live under /root).
    seccomp.precompile()
    import encodings.idna  # noqa: F401

    seen = _in_child_as_nobody("_unprivileged_instance")
    if "skip" in seen:
        pytest.skip(f"this kernel allows no user namespace to nobody: {seen['skip']}")
    assert "error" not in seen, seen
    assert seen["pids"] == [1, 2], seen
    assert int(str(seen["cap_eff"]), 16) == 0, seen
    assert seen["threads"] == 2, seen  # the output capture's thread too, and without any
    assert seen["cap_eff_threads"] == ["0000000000000000"], seen
    assert (seen["seccomp"], seen["no_new_privs"]) == ("2", "1"), seen
    # --network none: its own loopback (nothing listens there), and no way out
    assert seen["network"] == [
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "OSError: [Errno 101] Network is unreachable",
    ], seen
    assert seen["var_log"] in ([], "hidden"), seen
    assert seen["code_writable"] is False


def test_without_root_the_report_names_what_is_off() -> None:
    backend = LocalBackend(isolation=IsolationSettings())
    backend._root = False
    report = backend._decide({"namespaces": True, "userns": True, "seccomp": True, "why": {}})
    assert set(report.on) == {"namespaces", "seccomp"}
    assert set(report.off) == {"uid", "cgroups", "network"}
    assert "not root" in report.off["uid"]
    assert "isolation: OFF for cgroups: not root" in report.summary()


async def test_strict_refuses_to_start_without_every_protection() -> None:
    backend = LocalBackend(zygote=False, isolation=IsolationSettings(mode="strict"))
    with pytest.raises(IsolationError, match="FN_ISOLATION=strict, but isolation: OFF"):
        await backend.start()
    await backend.close()


def test_off_builds_no_walls() -> None:
    backend = LocalBackend(isolation=IsolationSettings(mode="off"))
    report = backend._decide({"namespaces": True, "seccomp": True})
    assert not report.on
    assert set(report.off.values()) == {"FN_ISOLATION=off"}


def test_cgroup_v2_driver_on_a_tree_laid_out_as_the_kernel_does(tmp_path: Path) -> None:
    own = next(
        line[3:]
        for line in Path("/proc/self/cgroup").read_text().splitlines()
        if line.startswith("0::")
    ).strip("/")
    base = tmp_path / own
    base.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.subtree_control").write_text("")
    driver = _v2_driver(tmp_path, "4242")
    assert isinstance(driver, CgroupDriver)
    assert driver.version == "v2"
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    # every instance of the platform together: half the host's tasks
    assert (base / "ember-4242" / "pids.max").read_text() == str(node_pids_max())
    cgroup = driver.create("i1")
    leaf = base / "ember-4242" / "i1"
    assert cgroup.procs_files == [str(leaf / "cgroup.procs")]
    for name in (
        "memory.max",
        "memory.swap.max",
        "pids.max",
        "cpu.max",
        "cgroup.kill",
        "memory.events",
    ):
        (leaf / name).write_text("")
    cgroup.set_limits(memory_bytes=192 << 20, pids_max=64, cpus=0.5)
    assert (leaf / "memory.max").read_text() == str(192 << 20)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "pids.max").read_text() == "64"
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroup.oom_killed()
    cgroup.kill()
    assert (leaf / "cgroup.kill").read_text() == "1"


def test_firewall_rules_keep_the_uids_off_local_and_private_addresses() -> None:
    rules = firewall_rules(100000, 165535)
    assert "table inet ember_100000 {" in rules
    assert "meta skuid 100000-165535 fib daddr type { local, broadcast, multicast } reject" in rules
    for net in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ):
        assert net in rules


def test_cover_plan_hides_homes_but_keeps_the_way_to_python(tmp_path: Path) -> None:
    home = tmp_path / "root"
    (home / ".pyenv" / "versions" / "3.11").mkdir(parents=True)
    (home / ".ssh").mkdir()
    hide, reveal = cover_plan(
        [str(home), str(tmp_path / "missing")], [str(home / ".pyenv" / "versions" / "3.11")]
    )
    assert hide == [str(home)]
    assert reveal == [str(home / ".pyenv" / "versions" / "3.11")]
    hide, reveal = cover_plan([str(home / ".pyenv")], [str(home)])
    assert (hide, reveal) == ([], [])  # inside what Python needs: never covered


def test_what_is_hidden_does_not_depend_on_where_the_platform_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m gateway` from / (systemd's default) would put / on sys.path: the paths bound
    back into instances come from Python's install only, and the state dir is covered last."""
    from scheduler.backends.isolation import hidden_paths

    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.chdir("/")
    monkeypatch.setattr("sys.path", ["/", "", *__import__("sys").path])
    hide, reveal, last = hidden_paths(IsolationSettings(), [str(state)])
    assert "/" not in reveal
    assert "/root" in hide or not Path("/root").exists()
    assert last == [str(state.resolve())]


def test_python_in_a_private_directory_is_bound_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A virtual environment under /tmp (a fresh clone there) stays importable: instances
    get a /tmp of their own, and Python's directories are bound back into it."""
    import scheduler.backends.isolation as isolation

    monkeypatch.setattr(isolation, "_needed_paths", lambda: ["/tmp/clone/.venv"])
    _, reveal, _ = isolation.hidden_paths(IsolationSettings(), [])
    assert "/tmp/clone/.venv" in reveal


def test_the_node_wide_task_limit_is_half_the_hosts(tmp_path: Path) -> None:
    (tmp_path / "pid_max").write_text("32768\n")
    (tmp_path / "threads-max").write_text("191744\n")
    assert node_pids_max(tmp_path) == 16384
    (tmp_path / "pid_max").write_text("4194304\n")
    assert node_pids_max(tmp_path) == 95872
    (tmp_path / "threads-max").write_text("6000\n")
    assert node_pids_max(tmp_path) == 4096  # (at least)
