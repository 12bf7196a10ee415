"""Shared by the packaging tests: a throwaway install and its listing."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.packaging.lists import REPO


def make(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a Makefile target of the source tree; raise with its output on failure."""
    r = subprocess.run(["make", "-s", "-C", str(REPO), *args], capture_output=True, text=True,
                       timeout=timeout, check=False)
    assert r.returncode == 0, f"make {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


def listing(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    """({file path: mode}, {directory path: mode}) under *root*, paths as installed."""
    files, dirs = {}, {}
    for top, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(top, name)
            dirs["/" + str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
        for name in filenames:
            path = Path(top, name)
            files["/" + str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return files, dirs


def site_of(files: dict[str, int]) -> str:
    """The site-packages directory the install used."""
    (site,) = {p.rsplit("/whonix_open/", 1)[0] for p in files
               if p.endswith("/whonix_open/__init__.py")}
    return site
