"""The installed-dom0 test's system: the built RPM installed (`rpm --root`)
into a fresh root, its users as dom0 has them, and a qubesd on a socket that
the services reach through the real, unmodified `qubesadmin` (importable by
dom0's `/usr/bin/python3` from a directory of this test, nowhere else).

The dom0 user is the first member of group `qubes` - as qubesd picks it to
run qrexec-daemon, and so the qrexec services (qubes-core-admin
qubes/vm/qubesvm.py `start_daemon`). `.ci/install-system-deps` makes that
group and a member (`qubes-dom0`) on the test machine; the installed root's
/etc/passwd and /etc/group name the same ids, so that the RPM's `root:qubes`
files and the tmpfiles entry resolve as in dom0.

Everything lives in one directory outside /tmp, /home and /root, which the
reap unit's sandbox hides.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.conftest import REPO
from tests.installed import unit
from whonix_open.sim.harness import SimQubes
from whonix_open.sim.qubesd_server import QubesdServer

UPSTREAM = REPO.parent / "shared" / "upstream"
SYSTEM_PYTHON = "/usr/bin/python3"  # the shebang of every installed dom0 executable
PLACE = Path("/srv") if Path("/srv").is_dir() else Path("/opt")


def _require(condition: bool, what: str) -> None:
    if not condition:
        pytest.fail(f"the installed-dom0 test needs {what}", pytrace=False)


class Dom0User:
    def __init__(self) -> None:
        try:
            qubes = grp.getgrnam("qubes")
        except KeyError:
            qubes = None
        _require(qubes is not None and qubes.gr_mem,
                 "group qubes with a member (dom0's user): run .ci/install-system-deps")
        self.name = qubes.gr_mem[0]
        user = pwd.getpwnam(self.name)
        self.uid, self.gid, self.qubes_gid = user.pw_uid, user.pw_gid, qubes.gr_gid

    def argv(self, *argv: str) -> list[str]:
        """*argv* run as this user with its groups, as qrexec-daemon runs services."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                f"--groups={self.qubes_gid}", *argv]


def _copy_modules(target: Path, extra: dict[str, Path] | None = None) -> Path:
    """whonix_open (common, dom0, sim) copied for a stand-in that runs as the
    dom0 user with dom0's Python (the checkout and its venvs may be out of
    that user's reach); never the installed tree's modules."""
    tree = target / "whonix_open"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "common", tree, ignore=ignore)
    for part in ("dom0", "sim"):
        shutil.copytree(REPO / part, tree / part, ignore=ignore)
    for name, source in (extra or {}).items():
        shutil.copy(source, target / name)
    return target


def _stand_in(path: Path, pythonpath: Path, command: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexport PYTHONPATH={pythonpath} "
                    f"WHONIX_OPEN_PYTHON={SYSTEM_PYTHON} WHONIX_OPEN_REALQUBESD_PYTHON="
                    f"{SYSTEM_PYTHON}\nexec {SYSTEM_PYTHON} {command} \"$@\"\n")
    path.chmod(0o755)
    return path


def _give(directory: Path, user: Dom0User) -> None:
    """A state directory the dom0 user's stand-ins record into."""
    (directory / "state.lock").touch()
    for p in [directory, *directory.rglob("*")]:
        os.chown(p, user.uid, user.gid)


class ModelQubesd:
    """This project's qubesd model (sim/qubesd_server.py) on a socket as
    qubesd makes it: `root:qubes`, umask 0007 (qubes/api/__init__.py
    create_servers). The broker's qrexec-client is the simulation's stand-in."""

    def __init__(self, directory: Path, user: Dom0User) -> None:
        self.sim = SimQubes.create(directory / "sim")
        self.socket_path = str(directory / "qubesd.sock")
        self.server = QubesdServer(self.sim.dir, self.socket_path).start()
        os.chown(self.socket_path, 0, user.qubes_gid)
        os.chmod(self.socket_path, 0o770)  # noqa: S103 - qubesd: umask 0007, group qubes
        _give(self.sim.dir, user)
        self.standin = _stand_in(
            directory / "bin" / "qrexec-client", _copy_modules(directory / "standin"),
            "-c 'import sys; from whonix_open.sim.dom0_qrexec_client import main; "
            "sys.exit(main())'")

    def broker_env(self) -> dict[str, str]:
        # the simulation's variables are the qrexec-client stand-in's
        return {**self.sim.env(), "WHONIX_OPEN_BACKEND": "qubesadmin",
                "WHONIX_OPEN_QUBESD_SOCKET": self.socket_path,
                "WHONIX_OPEN_QREXEC_CLIENT": str(self.standin)}

    def disposables(self) -> list[str]:
        return self.sim.disposables()

    def hang_disposables(self, hang: bool) -> None:
        self.sim.set_fault("disposable_behaviour", "hang" if hang else "edit")

    def stop(self) -> None:
        self.server.stop()
        self.sim.kill_leftovers()


class RealQubesdInstalled:
    """The REAL qubesd of a Qubes release (tests/realqubesd/harness.py: unmodified,
    only the hypervisor stood in for) on a socket it makes itself,
    `root:qubes`; the harness's qrexec-client stand-in, run as the dom0 user
    with dom0's Python."""

    def __init__(self, directory: Path, user: Dom0User, release: str) -> None:
        from tests.realqubesd.harness import RealQubesd

        self.release = release
        python = REPO / f".venv-{release}" / "bin" / "python"
        _require(python.exists(), f"the release venv {python.parent.parent} "
                 f"(make .venv-{release}/.installed)")
        directory.mkdir()
        directory.chmod(0o755)
        self.qubesd = RealQubesd(directory, python=str(python)).start()
        _give(self.qubesd.side, user)
        harness = REPO / "tests" / "realqubesd"
        modules = _copy_modules(directory / "standin",
                                {"qrexec_client.py": harness / "qrexec_client.py"})
        self.standin = _stand_in(directory / "bin" / "qrexec-client", modules,
                                 str(modules / "qrexec_client.py"))
        self.socket_path = self.qubesd.socket_path

    def broker_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.qubesd.broker_env().items()
               if k.startswith("WHONIX_OPEN_")}
        return {**env, "WHONIX_OPEN_QREXEC_CLIENT": str(self.standin),
                "WHONIX_OPEN_REALQUBESD_PYTHON": SYSTEM_PYTHON}

    def disposables(self) -> list[str]:
        return self.qubesd.disposables()

    def hang_disposables(self, hang: bool) -> None:
        self.qubesd.set_behaviour("hang" if hang else "edit")

    def stop(self) -> None:
        self.qubesd.kill_leftovers()
        self.qubesd.stop()


@pytest.fixture
def place() -> Iterator[Path]:
    problem = unit.sandbox_works()
    _require(problem is None, f"mount and network namespaces (unshare): {problem}")
    _require(shutil.which("rpmbuild") and shutil.which("rpm") and shutil.which("setpriv")
             and shutil.which("systemd-tmpfiles") and shutil.which("systemd-analyze"),
             "rpm, rpmbuild, setpriv (util-linux) and systemd: run .ci/install-system-deps")
    _require(Path(SYSTEM_PYTHON).exists(), f"{SYSTEM_PYTHON}, dom0's interpreter")
    d = Path(tempfile.mkdtemp(prefix="whonix-open-installed-", dir=PLACE))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dom0_user() -> Dom0User:
    return Dom0User()


# Every release the README claims: dom0's qubesd and its qubesadmin/qrexec.
RELEASES = ("r4.2", "r4.3")


@pytest.fixture(params=RELEASES)
def qubesd(request, place: Path, dom0_user: Dom0User) -> Iterator[ModelQubesd]:
    """The one place that says which qubesd the installed broker talks to:
    the real one of each release (the model, ModelQubesd, stays for debugging
    the test)."""
    server = RealQubesdInstalled(place / "qubesd", dom0_user, request.param)
    yield server
    server.stop()


@pytest.fixture
def qubesadmin_dir(place: Path, qubesd: RealQubesdInstalled) -> Path:
    """The real qubesadmin (and qrexec) wheels unpacked where only this test's
    PYTHONPATH leads: dom0's /usr/bin/python3 imports them, the machine keeps
    no trace."""
    target = place / "pylib"
    for pattern in ("qubesadmin-*.whl", "qrexec-*.whl"):  # of qubesd's release
        wheels = sorted((UPSTREAM / qubesd.release).glob(pattern))
        _require(bool(wheels), f"{UPSTREAM}/{pattern} (the unmodified upstream wheels)")
        with zipfile.ZipFile(wheels[-1]) as z:
            z.extractall(target)
    subprocess.run([SYSTEM_PYTHON, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                    "import qubesadmin.app, qubesadmin.events", str(target)], check=True)
    return target


@pytest.fixture
def built_rpm(place: Path) -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO), "rpm", f"DISTDIR={place}/dist",
                    f"RPM_TOPDIR={place}/rpmbuild"], check=True, capture_output=True,
                   env={**os.environ, "PYTHON": sys.executable})
    (rpm,) = (place / "rpmbuild" / "RPMS" / "noarch").glob("*.rpm")
    return rpm
