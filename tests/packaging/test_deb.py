"""The template package: built with dpkg-buildpackage from the `make dist`
tarball, lintian-clean of errors, its files the documented VM list; then
installed on this machine with dpkg (tests run as root in CI), used from the
installed files, and purged - which must leave the machine as it was.

The only dependency that a CI machine cannot have, qubes-core-qrexec (the Qubes
agent that provides qrexec-client-vm), is an empty stand-in package here; the
open goes through the VM tests' stand-in qrexec-client-vm on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, DOM0_STATUS_WHONIX, isolated_env
from tests.packaging.conftest import make
from tests.packaging.lists import DEB_EXTRA, REPO, expected
from whonix_open import __version__

DEB_SITE = "/usr/lib/python3/dist-packages"
STANDIN = REPO / "tests/vm/standin_qrexec.py"
SUDO = [] if os.geteuid() == 0 else ["sudo", "-n"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    for tool in ("dpkg-buildpackage", "dh", "lintian", "fakeroot"):
        assert shutil.which(tool), f"{tool} missing: run .ci/install-system-deps"
    tmp = tmp_path_factory.mktemp("deb")
    make("deb", f"DISTDIR={tmp}/dist", f"DEB_BUILDDIR={tmp}/build")
    return tmp / "build"


def deb_of(built: Path) -> Path:
    return built / f"whonix-open_{__version__}_all.deb"


def deb_contents(deb: Path) -> dict[str, int]:
    """{path: mode} of the regular files in *deb*."""
    out = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    files = {}
    for line in out.splitlines():
        perms, _owner, _size, _date, _time, path = line.split(None, 5)
        if perms.startswith("-"):
            files[path[1:]] = _mode(perms)
    return files


def _mode(perms: str) -> int:
    bits = 0
    for char, bit in zip(perms[1:], (0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1),
                         strict=True):
        bits |= bit if char != "-" else 0
    return bits


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_lintian_reports_no_errors(built: Path):
    (changes,) = built.glob("*.changes")
    r = subprocess.run(["lintian", "--tag-display-limit", "0", str(changes)],
                       capture_output=True, text=True, timeout=600, check=False)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], r.stdout


def test_files_are_the_vm_list_without_bytecode(built: Path):
    files = deb_contents(deb_of(built))
    want = {**expected(DEB_SITE, "vm"), **DEB_EXTRA}
    assert sorted(set(files) ^ set(want)) == []
    assert {p: oct(m) for p, m in files.items() if want[p] != m} == {}


def test_dependencies_are_debian_names(built: Path):
    deb = deb_of(built)
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    assert "python3-xdg" in depends and "qubes-core-qrexec" in depends
    assert any(d.startswith("python3") and "3.11" in d for d in depends)
    assert field(deb, "Recommends") == "libnotify-bin, zenity | kdialog"
    assert field(deb, "Architecture") == "all"


# --- installed on this machine -------------------------------------------------


def dpkg(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*SUDO, "dpkg", *args], capture_output=True, text=True, timeout=600,
                       check=False, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert r.returncode == 0, f"dpkg {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                       text=True, check=False)
    return "installed" in r.stdout.split()


def version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                          text=True, check=False).stdout


STAND_IN_VERSION = "0~whonix-open-test"


def snapshot(paths: list[str]) -> dict[str, bytes | None]:
    """Content of every file under *paths* (None for a directory)."""
    found: dict[str, bytes | None] = {}
    for top in paths:
        for root, dirs, files in os.walk(top):
            for d in dirs:
                found[os.path.join(root, d)] = None
            for f in files:
                p = os.path.join(root, f)
                found[p] = Path(p).read_bytes() if os.path.isfile(p) else os.readlink(p).encode()
    return found


def qrexec_stand_in_package(tmp: Path) -> Path:
    """An empty package named like the Qubes agent that provides qrexec-client-vm."""
    root = tmp / "qubes-core-qrexec"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: qubes-core-qrexec\nVersion: {STAND_IN_VERSION}\nArchitecture: all\n"
        "Maintainer: whonix-open tests <tests@example.org>\n"
        "Description: empty stand-in for the whonix-open package tests\n")
    out = tmp / "qubes-core-qrexec.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
                   check=True, capture_output=True)
    return out


# Where the package puts files, plus what dpkg triggers regenerate from them.
WATCHED = [f"{DEB_SITE}/whonix_open", "/usr/share/applications", "/usr/share/file-manager",
           "/usr/share/nautilus-python", "/usr/share/kio/servicemenus",
           "/usr/share/kservices5/ServiceMenus", "/etc/xdg/autostart",
           "/usr/share/doc/whonix-open"]


@pytest.fixture(scope="module")
def on_this_machine(built: Path, tmp_path_factory):
    """The package installed with dpkg -i; purged afterwards, whatever happens."""
    if SUDO:
        assert subprocess.run(["sudo", "-n", "true"], check=False).returncode == 0, \
            "the install tests need root (CI runs as root) or passwordless sudo"
    assert not installed("whonix-open"), (
        "whonix-open is installed on this machine: not touching it (if a killed test run "
        "left it: dpkg --purge whonix-open qubes-core-qrexec)")
    for dep in ("python3-xdg",):
        assert installed(dep), f"{dep} missing: run .ci/install-system-deps"
    tmp = tmp_path_factory.mktemp("dpkg")
    before = snapshot(WATCHED)
    stand_in = not installed("qubes-core-qrexec") or \
        version("qubes-core-qrexec") == STAND_IN_VERSION
    try:
        if stand_in and not installed("qubes-core-qrexec"):
            dpkg("-i", str(qrexec_stand_in_package(tmp)))
        listed_before = set(Path("/var/lib/dpkg/info").iterdir())
        dpkg("-i", str(deb_of(built)))
        yield {"before": before, "dpkg_info": listed_before}
    finally:
        if installed("whonix-open") or Path("/var/lib/dpkg/info/whonix-open.list").exists():
            dpkg("--purge", "whonix-open")
        if stand_in and installed("qubes-core-qrexec"):
            dpkg("--purge", "qubes-core-qrexec")


def clean_env(root: Path, **extra: str) -> dict[str, str]:
    env = isolated_env(root, **{"PATH": "/usr/bin:/bin", **extra})
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return env


def test_installed_files_are_where_the_file_managers_look(on_this_machine):
    for path, mode in expected(DEB_SITE, "vm").items():
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path
    # dh_python3's py3compile made the bytecode at install
    assert list(Path(DEB_SITE, "whonix_open/vm/__pycache__").glob("cli.cpython-*.pyc"))
    # the desktop database knows the handler (desktop-file-utils' dpkg trigger)
    cache = Path("/usr/share/applications/mimeinfo.cache")
    if shutil.which("update-desktop-database"):
        assert "whonix-open.desktop" in cache.read_text()


def test_installed_cli_help(on_this_machine, tmp_path: Path):
    r = subprocess.run(["/usr/bin/whonix-open", "--help"], env=clean_env(tmp_path),
                       capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert r.returncode == 0, r.stderr
    assert "usage: whonix-open" in r.stdout


def test_installed_cli_opens_through_qrexec_client_vm(on_this_machine, tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    client = bin_dir / "qrexec-client-vm"
    client.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    client.chmod(0o755)
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"status_json": DOM0_STATUS_WHONIX, "mode": "edit"}))
    env = clean_env(tmp_path, PATH=f"{bin_dir}:/usr/bin:/bin", STANDIN_CONTROL=str(control),
                    STANDIN_LOG=str(tmp_path / "standin.log"))
    doc = tmp_path / "notes.txt"
    doc.write_bytes(b"notes")
    r = subprocess.run(["/usr/bin/whonix-open", "--no-notify", "--", str(doc)], env=env,
                       capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert r.returncode == 0, r.stderr
    assert doc.read_bytes() == b"notes [edited]"
    calls = [json.loads(line) for line in (tmp_path / "standin.log").read_text().splitlines()]
    opens = [c["argv"] for c in calls if c["argv"][1].startswith("whonix.OpenInDisposable+")]
    assert len(opens) == 1 and opens[0][0] == "dom0"


def test_installed_cli_converts_through_the_real_server(on_this_machine, tmp_path: Path):
    """The installed `whonix-open --convert` (Debian's python3, the package's
    modules) against the simulated Qubes: the sim's qrexec-client-vm, the repo's
    dom0 service and the unmodified upstream qubes.PdfConvert server."""
    from tests.convert_docs import make_pdf, page_count

    sim_dir = tmp_path / "qubes"
    subprocess.run([sys.executable, "-m", "whonix_open.sim", "init", "--dir", str(sim_dir)],
                   check=True, capture_output=True, timeout=DEADLINE)
    env = clean_env(tmp_path, PATH=f"{REPO / 'sim' / 'bin'}:/usr/bin:/bin",
                    HOME=str(tmp_path / "home"), WHONIX_OPEN_BACKEND="sim",
                    WHONIX_OPEN_SIM_DIR=str(sim_dir), WHONIX_OPEN_SIM_CALLER="anon-whonix",
                    WHONIX_OPEN_PYTHON=sys.executable, WHONIX_OPEN_RUN_DIR=str(tmp_path / "run"),
                    WHONIX_OPEN_CONFIG=str(tmp_path / "none.toml"))
    doc = make_pdf(tmp_path / "scan.pdf", pages=2)
    r = subprocess.run(["/usr/bin/whonix-open", "--no-notify", "--convert", "--resolution",
                        "75", "--", str(doc)], env=env, capture_output=True, text=True,
                       timeout=DEADLINE, check=False)
    assert r.returncode == 0, r.stderr
    assert page_count(tmp_path / "scan.trusted.pdf") == 2
    assert (tmp_path / "home/QubesUntrustedPDFs/scan.pdf").exists()


def test_thunar_actions_at_login_and_before_uninstall(on_this_machine, tmp_path: Path):
    """A package cannot edit home directories: the installed autostart entry merges
    the actions at login; the documented step before uninstalling removes them,
    leaving the user's own uca.xml as it was. (What stays in the home directory
    is the tool's opt-out marker, so a later login does not add them back.)"""
    env = clean_env(tmp_path, HOME=str(tmp_path / "home"))
    uca = Path(env["XDG_CONFIG_HOME"]) / "Thunar/uca.xml"
    uca.parent.mkdir(parents=True)
    mine = ('<?xml version="1.0" encoding="UTF-8"?>\n<actions>\n<action>\n\t<icon></icon>\n'
            '\t<name>Mine</name>\n\t<unique-id>1-1</unique-id>\n\t<command>true %f</command>\n'
            '\t<description></description>\n\t<patterns>*</patterns>\n'
            '\t<text-files/>\n</action>\n</actions>\n')
    uca.write_text(mine)
    autostart = Path("/etc/xdg/autostart/whonix-open-thunar-actions.desktop").read_text()
    (exec_line,) = [line[5:] for line in autostart.splitlines() if line.startswith("Exec=")]
    subprocess.run(exec_line.split(), env=env, check=True, timeout=DEADLINE)
    ids = [a.findtext("unique-id") for a in ET.parse(uca).getroot()]  # noqa: S314
    assert ids == ["1-1", "whonix-open-open", "whonix-open-view", "whonix-open-view-offline",
                   "whonix-open-convert", "whonix-open-choose"]
    subprocess.run(["whonix-open-thunar-actions", "--remove", "--quiet"], env=env, check=True,
                   timeout=DEADLINE)
    # the same XML (C14N: an empty <icon></icon> may come back as <icon />)
    assert ET.canonicalize(uca.read_text()) == ET.canonicalize(mine)


def test_purge_removes_exactly_what_install_added(on_this_machine):
    dpkg("--purge", "whonix-open")
    assert not installed("whonix-open")
    assert snapshot(WATCHED) == on_this_machine["before"]
    left = set(Path("/var/lib/dpkg/info").iterdir()) - on_this_machine["dpkg_info"]
    assert sorted(p.name for p in left) == []
    assert not Path("/usr/bin/whonix-open").exists()
    assert not Path("/usr/bin/whonix-open-thunar-actions").exists()
