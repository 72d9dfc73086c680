"""What an environment's zygote imports, and what it refuses to keep (`invoker.env_zygote`,
`scheduler.backends.env_packages.top_level_modules`). `prepare` changes the process it runs in
(sys.path, imports, a frozen collector), so it runs in a Python of its own here."""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from scheduler.backends.env_packages import top_level_modules


def _prepare(site: Path, modules: list[str]) -> dict[str, object]:
    """Run `prepare` in a new Python; its result, or {"refused": message}."""
    script = textwrap.dedent("""
        import sys, orjson
        from invoker.env_zygote import EnvironmentRefused, prepare
        try:
            out = prepare(sys.argv[1], orjson.loads(sys.argv[2]))
        except EnvironmentRefused as exc:
            out = {"refused": str(exc)}
        import os
        out["threads_variable"] = os.environ.get("OPENBLAS_NUM_THREADS")
        print(orjson.dumps(out).decode())
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, str(site), orjson.dumps(modules).decode()],
        capture_output=True,
        check=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )
    result: dict[str, object] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def test_the_packages_are_imported_and_a_failing_one_skipped(tmp_path: Path) -> None:
    (tmp_path / "fine.py").write_text("VALUE = 1\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('needs a display')\n")
    result = _prepare(tmp_path, ["fine", "broken"])
    assert result["imported"] == ["fine"]
    assert result["skipped"] == {"broken": "RuntimeError: needs a display"}
    assert result["threads_variable"] == "1"  # (OpenBLAS starts no pool at import)
    (tmp_path / "quits.py").write_text("raise SystemExit(3)\n")
    nothing = _prepare(tmp_path, ["broken", "quits"])
    assert "none of broken, quits could be imported" in str(nothing["refused"])


def test_an_import_that_starts_a_thread_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spinner.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True, name='pool').start()\n"
    )
    result = _prepare(tmp_path, ["spinner"])
    assert "started 1 thread(s) (pool)" in str(result["refused"])


def test_an_import_that_leaves_a_descriptor_open_is_refused(tmp_path: Path) -> None:
    (tmp_path / "holder.py").write_text(f"HANDLE = open({str(tmp_path / 'data')!r}, 'w')\n")
    result = _prepare(tmp_path, ["holder"])
    assert "left 1 file descriptor(s) open" in str(result["refused"])
    assert str(tmp_path / "data") in str(result["refused"])


def test_an_import_that_maps_shared_memory_is_refused(tmp_path: Path) -> None:
    """An anonymous shared mapping (mmap.mmap(-1, n)) or a multiprocessing lock leaves no
    descriptor, but every fork, of every function, would write the same memory."""
    (tmp_path / "board.py").write_text("import mmap\nBOARD = mmap.mmap(-1, 4096)\n")
    result = _prepare(tmp_path, ["board"])
    assert "mapped 1 writable shared memory region(s)" in str(result["refused"])
    (tmp_path / "locked.py").write_text("import multiprocessing\nLOCK = multiprocessing.Lock()\n")
    result = _prepare(tmp_path, ["locked"])
    assert "writable shared memory" in str(result["refused"])
    assert "/dev/shm/sem." in str(result["refused"])


def test_an_import_that_leaves_a_process_running_is_refused(tmp_path: Path) -> None:
    """A process started at import (a daemon that double-forked included) would run as root,
    outside every wall: refused, and killed."""
    pid_file = tmp_path / "daemon.pid"
    (tmp_path / "daemon.py").write_text(
        textwrap.dedent(f"""
            import os, time
            if os.fork() == 0:
                if os.fork() == 0:  # the grandchild: reparented once its parent exits
                    open({str(pid_file)!r}, "w").write(str(os.getpid()))
                    time.sleep(60)
                os._exit(0)
            while not os.path.exists({str(pid_file)!r}) or not open({str(pid_file)!r}).read():
                time.sleep(0.01)
        """)
    )
    result = _prepare(tmp_path, ["daemon"])
    assert "process(es): they would run as root outside every wall" in str(result["refused"])
    daemon = int(pid_file.read_text())
    assert not _alive(daemon)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by init, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_top_level_modules_come_from_the_dists_metadata(tmp_path: Path) -> None:
    for dist, top in {
        "requests-2.32.3.dist-info": "requests\n",
        "charset_normalizer-3.4.0.dist-info": "charset_normalizer\n",
        "cffi-1.17.dist-info": "_cffi_backend\ncffi\n",  # (private ones left out)
        "bad-1.0.dist-info": "tests\nnot-a-module\n",
    }.items():
        (tmp_path / dist).mkdir()
        (tmp_path / dist / "top_level.txt").write_text(top)
    (tmp_path / "six-1.16.0.dist-info").mkdir()  # no top_level.txt: its RECORD
    (tmp_path / "six-1.16.0.dist-info" / "RECORD").write_text(
        "six.py,sha256=x,1\nsix-1.16.0.dist-info/METADATA,,\n../../bin/x,,\n"
    )
    (tmp_path / "evil-1.0.dist-info").mkdir()  # a link is not followed
    (tmp_path / "evil-1.0.dist-info" / "top_level.txt").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_text("os\n")
    assert top_level_modules(tmp_path) == ["cffi", "charset_normalizer", "requests", "six"]


def test_the_zygote_reports_a_refused_environment(tmp_path: Path) -> None:
    """`zygote ID JSON` to the runtime's zygote: a refusal is its `failed` report (the
    platform logs it and the environment's instances import as before), and no process is
    left of it."""
    (tmp_path / "spinner.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True, name='pool').start()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-P", "-m", "invoker", "--zygote"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        env={"PATH": "/usr/bin:/bin"},
    ) as zygote:
        assert zygote.stdin is not None
        assert zygote.stdout is not None
        assert zygote.stdout.readline().startswith(b"ready ")
        request = {"address": f"unix:{tmp_path}/env.sock", "path": str(tmp_path)}
        zygote.stdin.write(b"zygote 7 " + orjson.dumps({**request, "modules": ["spinner"]}) + b"\n")
        zygote.stdin.flush()
        report = zygote.stdout.readline().decode()
        assert report.startswith("failed 7 importing spinner started 1 thread(s) (pool)")
        assert zygote.stdout.readline().decode().split()[0] == "exit"  # (it is gone)
        zygote.stdin.close()  # (the zygote exits when its stdin closes)
        assert zygote.wait(timeout=10) == 0


def test_a_package_that_blocks_at_import_is_killed_after_the_time_allowed(tmp_path: Path) -> None:
    """`timeout_s` in the zygote request: an import that never returns does not leave a root
    process importing forever (nor its environment waiting for a zygote forever)."""
    (tmp_path / "stuck.py").write_text("import time\ntime.sleep(3600)\n")
    with subprocess.Popen(
        [sys.executable, "-P", "-m", "invoker", "--zygote"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        env={"PATH": "/usr/bin:/bin"},
    ) as zygote:
        assert zygote.stdin is not None
        assert zygote.stdout is not None
        assert zygote.stdout.readline().startswith(b"ready ")
        request = {"address": f"unix:{tmp_path}/env.sock", "path": str(tmp_path), "timeout_s": 1}
        zygote.stdin.write(b"zygote 8 " + orjson.dumps({**request, "modules": ["stuck"]}) + b"\n")
        zygote.stdin.flush()
        readable, _, _ = select.select([zygote.stdout], [], [], 20)
        if not readable:
            zygote.kill()
        assert readable, "no report 20 s after a 1 s limit"
        report = zygote.stdout.readline().decode()
        assert report.startswith("failed 8 the environment's zygote exited while it imported")
        assert "took longer than the time allowed" in report
        assert zygote.stdout.readline().decode().split()[:1] == ["exit"]
        zygote.stdin.close()
        assert zygote.wait(timeout=10) == 0
