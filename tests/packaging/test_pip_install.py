"""`pip install .` into a fresh venv, as a developer tries first: the installed
`whonix-open` console script opens a file for real against the simulated Qubes
(its runtime dependencies come with it; nothing from the test venv is used)."""

from __future__ import annotations

import shutil
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
    # From a copy without build products: setuptools builds in the tree and
    # would reuse a stale build/lib (e.g. package data an older setup.py had).
    source = tmp_path_factory.mktemp("source") / "whonix-open"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "artifacts",
        ".hypothesis", ".pytest_cache", ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=DEADLINE)
    r = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", str(source)],
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


def test_the_installed_simulation_has_its_scenarios(fresh_venv: Path, tmp_path: Path):
    """`python -m whonix_open.sim` works from a plain (non-editable) install:
    the scenario files are package data (issue 19)."""
    python = str(fresh_venv / "bin/python")
    listed = subprocess.run([python, "-m", "whonix_open.sim", "scenarios"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=DEADLINE, check=False)
    shipped = sorted(p.stem for p in (REPO / "sim/scenarios").glob("*.toml"))
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.split() == shipped and "default" in shipped
    made = subprocess.run([python, "-m", "whonix_open.sim", "init", "--dir",
                           str(tmp_path / "qubes"), "--scenario", "preload"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"simulated Qubes in {tmp_path / 'qubes'}")


def test_scenarios_without_any_is_an_error(fresh_venv: Path, tmp_path: Path):
    """An install that lost its package data says so instead of listing nothing."""
    python = str(fresh_venv / "bin/python")
    where = subprocess.run([python, "-c", "import whonix_open.sim.scenario as s; "
                            "print(s.SCENARIO_DIR)"], cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout.strip()
    broken = tmp_path / "broken"  # the installed package, first on the path, minus its data
    shutil.copytree(Path(where).parents[1], broken / "whonix_open")
    for toml in (broken / "whonix_open/sim/scenarios").glob("*.toml"):
        toml.unlink()
    got = subprocess.run([python, "-m", "whonix_open.sim", "scenarios"], cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(broken)},
                         capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert (got.returncode, got.stdout) == (2, "")
    assert got.stderr == (f"error: no shipped scenarios in {broken}/whonix_open/sim/scenarios: "
                          "the simulation is not completely installed\n")


def test_whonix_open_app_without_qubesadmin_says_so_in_one_line(fresh_venv: Path):
    """A dom0 without python3-qubesadmin (the fresh venv has none): one line,
    no traceback, and no notifier noise on a terminal without a display."""
    env = {"PATH": f"{fresh_venv / 'bin'}:/usr/bin:/bin", "HOME": str(fresh_venv)}
    got = subprocess.run([str(fresh_venv / "bin/whonix-open-app"), "torbrowser"], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=DEADLINE, check=False)
    assert (got.returncode, got.stdout) == (73, "")
    assert got.stderr == ("whonix-open-app: cannot start torbrowser: the Python module "
                          "'qubesadmin' is missing (dom0 package python3-qubesadmin).\n")
