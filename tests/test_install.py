"""The install targets: what lands where, and that it runs with the system
Python from there - without the simulation, which dom0 never gets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYS_PYTHON = "/usr/bin/python3"


def install(target: str, dest: Path) -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO), target, f"DESTDIR={dest}"], check=True,
                   capture_output=True)
    (site,) = {p.parent.parent for p in dest.rglob("whonix_open/__init__.py")}
    return site


def run_installed(dest: Path, site: Path, argv: list[str], env: dict[str, str],
                  stdin: bytes = b"") -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), **env}
    return subprocess.run([SYS_PYTHON, *argv], input=stdin, env=base, capture_output=True,
                          check=False)


@pytest.fixture(scope="module")
def dom0(tmp_path_factory):
    dest = tmp_path_factory.mktemp("dom0")
    return dest, install("install-dom0", dest)


def test_dom0_gets_the_broker_and_not_the_rest(dom0):
    dest, site = dom0
    pkgs = sorted(p.name for p in (site / "whonix_open").iterdir() if p.is_dir()
                  and p.name != "__pycache__")
    assert pkgs == ["dom0"]
    for service in ("whonix.OpenInDisposable", "whonix.ViewInDisposable",
                    "whonix.RoutingStatus"):
        f = dest / "etc/qubes-rpc" / service
        assert os.access(f, os.X_OK)
    assert (dest / "etc/qubes/policy.d/70-whonix-open.policy").exists()
    assert (dest / "etc/qubes/policy.d/30-user-whonix-open.policy").exists()


def test_user_policy_is_never_overwritten(tmp_path):
    user = tmp_path / "etc/qubes/policy.d/30-user-whonix-open.policy"
    user.parent.mkdir(parents=True)
    user.write_text("# mine\n")
    install("install-dom0", tmp_path)
    assert user.read_text() == "# mine\n"


QREXEC_ENV = {"QREXEC_REMOTE_DOMAIN": "work", "QREXEC_SERVICE_ARGUMENT": "tor",
              "QREXEC_SERVICE_FULL_NAME": "whonix.OpenInDisposable+tor"}


@pytest.mark.parametrize("backend", [None, "sim"])
def test_installed_service_fails_closed_without_qubesd(dom0, tmp_path, backend):
    """No qubesadmin here, and no simulation in a dom0 install: 73, never a fallback."""
    dest, site = dom0
    env = {**QREXEC_ENV, "WHONIX_OPEN_RUN_DIR": str(tmp_path / "run"),
           "WHONIX_OPEN_CONFIG": str(tmp_path / "none.toml")}
    if backend:
        env["WHONIX_OPEN_BACKEND"] = backend
    r = run_installed(dest, site, [str(dest / "etc/qubes-rpc/whonix.OpenInDisposable"), "tor"],
                      env, stdin=b"x" * 300)
    assert r.returncode == 73, r.stderr
    assert b"exit=73" in r.stderr


def test_installed_service_refuses_bad_argument_first(dom0, tmp_path):
    dest, site = dom0
    env = {**QREXEC_ENV, "QREXEC_SERVICE_ARGUMENT": "Bad",
           "QREXEC_SERVICE_FULL_NAME": "whonix.OpenInDisposable+Bad"}
    r = run_installed(dest, site, [str(dest / "etc/qubes-rpc/whonix.OpenInDisposable"), "Bad"],
                      env)
    assert r.returncode == 64, r.stderr


def test_vm_install_runs_with_the_system_python(tmp_path):
    site = install("install-vm", tmp_path)
    assert sorted(p.name for p in (site / "whonix_open").iterdir()
                  if p.is_dir() and p.name != "__pycache__") == ["vm"]
    r = run_installed(tmp_path, site, [str(tmp_path / "usr/bin/whonix-open"), "--version"], {})
    assert r.returncode == 0, r.stderr
    assert b"0.1.0" in r.stdout + r.stderr
