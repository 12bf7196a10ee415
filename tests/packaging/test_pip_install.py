"""`pip install .` into a fresh venv, as a developer tries first: the installed
`whonix-open` console script opens a file for real against the simulated Qubes
(its runtime dependencies come with it; nothing from the test venv is used)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, wait_for
from tests.packaging.lists import REPO
from tests.vm.test_e2e_sim import CONTENT, Chain
from whonix_open.sim.disposable import EDIT_SUFFIX

PIP_TIMEOUT = 600  # a busy machine and a package index


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=DEADLINE)
    r = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", str(REPO)],
                       capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    assert r.returncode == 0, r.stderr
    return venv


def test_pip_install_gets_the_runtime_dependencies(fresh_venv: Path):
    r = subprocess.run([str(fresh_venv / "bin/python"), "-c", "import xdg.BaseDirectory"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_installed_console_script_opens_a_file(fresh_venv: Path, tmp_path: Path):
    chain = Chain(tmp_path)
    try:
        python = str(fresh_venv / "bin/python")
        # the dom0 side runs from the fresh venv too; its services are the tree's
        # qubes-rpc/ files (a pip install has no /etc/qubes-rpc)
        chain.env.update(WHONIX_OPEN_PYTHON=python, WHONIX_OPEN_RPC_DIR=str(REPO / "qubes-rpc"))
        doc = tmp_path / "notes.txt"
        doc.write_bytes(CONTENT)
        r = subprocess.run([str(fresh_venv / "bin/whonix-open"), "--no-notify", "--", str(doc)],
                           env=chain.env, capture_output=True, text=True, timeout=DEADLINE,
                           check=False)
        assert r.returncode == 0, r.stderr
        assert doc.read_bytes() == CONTENT + EDIT_SUFFIX
        [got] = chain.sim.received()
        assert got["name"] == "notes.txt"
        wait_for(chain.no_disposables_left, "dom0 to destroy the disposable")
        # and it really was the fresh install that ran, not the repository
        where = subprocess.run([python, "-c", "import whonix_open.vm.cli as m; print(m.__file__)"],
                               capture_output=True, text=True, check=True, cwd=tmp_path).stdout
        assert where.startswith(str(fresh_venv))
    finally:
        chain.sim.kill_leftovers()
