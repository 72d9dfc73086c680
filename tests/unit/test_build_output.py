"""What a (hostile) build leaves is checked before the platform, as root, follows it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builds.packing import check_output, read_report, tree_bytes
from builds.requirements import BuildFailed, RequirementsError, normalize_requirements


def test_a_link_where_packages_go_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    site = tmp_path / "site"
    site.symlink_to(victim)
    with pytest.raises(BuildFailed, match="a link"):
        check_output(site)
    site.unlink()
    site.mkdir()
    check_output(site)  # a plain directory is fine
    check_output(tmp_path / "missing")  # (empty requirements install nothing)


def test_the_report_is_read_without_following_links_or_waiting_on_a_pipe(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text('{"install": []}')
    report = tmp_path / "report.json"
    report.symlink_to(secret)
    assert read_report(report) == b""
    report.unlink()
    os.mkfifo(report)  # would block a plain read() forever
    assert read_report(report) == b""
    report.unlink()
    report.write_bytes(b'{"install": []}')
    assert read_report(report) == b'{"install": []}'


def test_sizes_count_no_link(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "big").symlink_to("/dev/zero")
    assert tree_bytes(tmp_path) == 10


def test_a_marker_cannot_carry_pip_options() -> None:
    with pytest.raises(RequirementsError):
        normalize_requirements('evilpkg==1.0 ; python_version>"0" -Cbuilddir=/x\n')
    assert (
        normalize_requirements('six==1.16.0 ; python_version>"3"\n')
        == 'six==1.16.0 ; python_version>"3"\n'
    )
