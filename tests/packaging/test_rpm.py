"""The dom0 RPM: built with rpmbuild from the `make dist` tarball; its files,
modes, owners, config markings and requirements are the dom0 list, and nothing
of the VM side or of PyPI gets in."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.packaging.conftest import make, site_of
from tests.packaging.lists import (
    DOM0_CONFIG,
    DOM0_GROUP_QUBES,
    REPO,
    bytecode_matches,
    expected,
    split_bytecode,
)
from whonix_open import __version__

QF = "[%{FILENAMES}\t%{FILEMODES}\t%{FILEFLAGS:fflags}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\n]"


@pytest.fixture(scope="module")
def rpm(tmp_path_factory) -> Path:
    assert shutil.which("rpmbuild"), "rpmbuild missing: run .ci/install-system-deps"
    tmp = tmp_path_factory.mktemp("rpm")
    make("rpm", f"DISTDIR={tmp}/dist", f"RPM_TOPDIR={tmp}/top")
    (built,) = (tmp / "top/RPMS/noarch").glob("*.rpm")
    return built


def query(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True,
                          check=True).stdout


def entries(rpm: Path) -> dict[str, tuple[int, str, str, str]]:
    """{path: (mode bits, flags, user, group)} of the regular files."""
    found = {}
    for line in query(rpm, "--qf", QF).splitlines():
        path, mode, flags, user, group = line.split("\t")
        if stat.S_ISREG(int(mode)):
            found[path] = (stat.S_IMODE(int(mode)), flags, user, group)
    return found


def test_name_version_arch(rpm: Path):
    assert query(rpm, "--qf", "%{NAME} %{VERSION} %{ARCH}") == \
        f"whonix-open-dom0 {__version__} noarch"


def test_files_and_modes_are_the_dom0_list(rpm: Path):
    files = {p: e for p, e in entries(rpm).items() if "d" not in e[1]}  # without %doc
    modes = {p: e[0] for p, e in files.items()}
    plain, pyc = split_bytecode(modes)
    want = expected(site_of(modes), "dom0")
    assert sorted(set(plain) ^ set(want)) == []
    assert {p: oct(m) for p, m in plain.items() if want[p] != m} == {}
    assert bytecode_matches(plain, pyc) == []
    assert {(e[2], e[3]) for p, e in files.items() if p not in DOM0_GROUP_QUBES} == \
        {("root", "root")}
    assert {files[p][2:] for p in DOM0_GROUP_QUBES} == {("root", "qubes")}


def test_config_markings(rpm: Path):
    marked = {p: e[1] for p, e in entries(rpm).items() if "c" in e[1]}
    assert marked == DOM0_CONFIG
    assert sorted(query(rpm, "--configfiles").split()) == sorted(DOM0_CONFIG)


def test_nothing_of_the_vm_side_or_the_simulation(rpm: Path):
    names = query(rpm, "--list")
    for part in ("/whonix_open/vm", "/whonix_open/sim", "/usr/bin/whonix-open\n",
                 "nautilus", "autostart", "file-manager", "servicemenus"):
        assert part not in names
    # dom0's own menu entries only (whonix-open-app), no VM-side handler
    apps = [n for n in names.splitlines() if n.startswith("/usr/share/applications/")]
    assert sorted(apps) == ["/usr/share/applications/whonix-open-terminal.desktop",
                            "/usr/share/applications/whonix-open-torbrowser.desktop"]


def test_requirements_are_qubes_packages_never_pypi_names(rpm: Path):
    requires = {re.split(r"\s", r, maxsplit=1)[0]: r for r in query(rpm, "--requires")
                .splitlines()}
    for qubes_pkg in ("python3-qubesadmin", "qubes-core-qrexec", "qubes-core-qrexec-dom0"):
        assert qubes_pkg in requires
    assert requires["python3"] == "python3 >= 3.11"
    generated = [r for r in requires if "dist(" in r or r.startswith(("python3.", "pyxdg"))]
    assert generated == []
    # the Python whose site-packages the files are in (an RPM built for another
    # Python refuses to install instead of landing where dom0's Python never looks)
    abi = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % "
                          "sys.version_info[:2])"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert requires["python(abi)"] == f"python(abi) = {abi}"


def test_tmpfiles_entry_is_applied_at_install(rpm: Path):
    assert "systemd-tmpfiles --create" in query(rpm, "--scripts")


def test_spec_version_follows_the_package(rpm: Path):
    spec = (REPO / "rpm_spec/whonix-open-dom0.spec").read_text()
    assert f"%global version_ {__version__}\n" in spec


def test_reap_timer_is_enabled_at_install_and_disabled_at_removal(rpm: Path):
    scripts = query(rpm, "--scripts")
    assert "systemctl --no-reload preset whonix-open-reap.timer" in scripts
    assert "systemctl --no-reload disable --now whonix-open-reap.timer" in scripts


def _run_scriptlet(rpm: Path, tmp_path: Path, which: str, arg: int) -> list[str]:
    """Run the RPM's %post/%preun/%postun with rpm's argument ($1: 1 = first
    install, 2 = upgrade, 0 = removal) against a recording systemctl and
    systemd-tmpfiles; the commands they ran."""
    body = query(rpm, "--qf", f"%{{{which}}}")
    prog = query(rpm, "--qf", f"%{{{which}PROG}}")
    assert prog in ("/bin/sh", "(none)"), prog
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / f"{which}-{arg}.log"
    for name in ("systemctl", "systemd-tmpfiles"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(["/bin/sh", "-s", str(arg)], input=body, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                          check=False)
    assert (done.returncode, done.stderr) == (0, ""), which
    return log.read_text().splitlines() if log.exists() else []


def test_reap_units_on_install_upgrade_and_removal(rpm: Path, tmp_path: Path):
    """As %systemd_post / %systemd_preun / %systemd_postun_with_restart do:
    an upgrade reloads the units and restarts a running timer (issue 19)."""
    tmpfiles = "systemd-tmpfiles --create /usr/lib/tmpfiles.d/whonix-open.conf"
    assert _run_scriptlet(rpm, tmp_path, "POSTIN", 1) == [
        tmpfiles, "systemctl --no-reload preset whonix-open-reap.timer",
        "systemctl start whonix-open-reap.timer"]
    assert _run_scriptlet(rpm, tmp_path, "POSTIN", 2) == [tmpfiles]
    # upgrade: the old package's %preun and %postun run with 1
    assert _run_scriptlet(rpm, tmp_path, "PREUN", 1) == []
    assert _run_scriptlet(rpm, tmp_path, "POSTUN", 1) == [
        "systemctl daemon-reload", "systemctl try-restart whonix-open-reap.timer"]
    # removal
    assert _run_scriptlet(rpm, tmp_path, "PREUN", 0) == [
        "systemctl --no-reload disable --now whonix-open-reap.timer whonix-open-reap.service",
        "systemd-tmpfiles --remove /usr/lib/tmpfiles.d/whonix-open.conf"]
    assert _run_scriptlet(rpm, tmp_path, "POSTUN", 0) == ["systemctl daemon-reload"]
