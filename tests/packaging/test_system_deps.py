""".ci/install-system-deps: waits for another apt/dpkg instead of failing, and
asks for the packaging tools the tests need. Run with recording stand-ins for
apt-get and dpkg-query first on PATH (nothing is installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.packaging.lists import REPO

SCRIPT = REPO / ".ci/install-system-deps"


def run(tmp_path: Path, **env: str) -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + chr(10))\n")
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")  # nothing installed
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    r = subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin",
                                                    **env},
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_apt_call_waits_for_the_lock(tmp_path: Path):
    calls = run(tmp_path)
    assert [c[2] for c in calls] == ["update", "install"]
    for call in calls:
        assert call[:2] == ["-o", "DPkg::Lock::Timeout=600"]


def test_lock_timeout_can_be_set(tmp_path: Path):
    calls = run(tmp_path, APT_LOCK_TIMEOUT="42")
    assert {tuple(c[:2]) for c in calls} == {("-o", "DPkg::Lock::Timeout=42")}


def test_packaging_tools_are_asked_for(tmp_path: Path):
    (install,) = [c for c in run(tmp_path) if "install" in c]
    for pkg in ("rpm", "dpkg-dev", "debhelper", "dh-python", "lintian", "fakeroot",
                "python3-xdg", "xvfb", "thunar", "nautilus", "dolphin", "pcmanfm-qt"):
        assert pkg in install
