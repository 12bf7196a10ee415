"""dom0 as installed (issue 15): the built RPM in a root of its own, its
scriptlets and tmpfiles entry applied, and everything run the way dom0 runs
it - the qrexec services as the dom0 user (group `qubes`) by their own
`#!/usr/bin/python3 -sP` with qrexec's environment, the reap service with the
credentials and sandbox its unit declares (unit.py), `status` as the dom0
user, `sudo whonix-open-admin reap` as root - against a qubesd socket through
the real qubesadmin. Then uninstalled.

What this found (issue 15, 1): the reap timer, running as root with systemd's
umask 0022, made `/run/whonix-open/.lock` root:root 0640; from then on every
request of the dom0 user ended in 73 and `status` in a PermissionError
traceback.

Test-only pointers, unset on dom0: WHONIX_OPEN_RUN_DIR and WHONIX_OPEN_CONFIG
(the installed root's /run/whonix-open and /etc/whonix-open/profiles.toml),
WHONIX_OPEN_QUBESD_SOCKET and WHONIX_OPEN_QREXEC_CLIENT (the qubesd and
qrexec-client stand-ins), PYTHONPATH (the root's site-packages and the
unpacked qubesadmin: dom0's Python finds them in its own).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
from pathlib import Path

from tests.dom0.conftest import header
from tests.helpers import DEADLINE, wait_for
from tests.installed import unit
from tests.installed.conftest import Dom0User, ModelQubesd

SERVICES = ("whonix.OpenInDisposable", "whonix.ViewInDisposable",
            "whonix.OpenURLInDisposable", "whonix.StartAppInDisposable", "whonix.RoutingStatus")
UNITS = "usr/lib/systemd/system"


class Installed:
    def __init__(self, place: Path, rpm: Path, user: Dom0User, qubesd: ModelQubesd,
                 pylib: Path) -> None:
        self.place, self.rpm, self.user, self.qubesd = place, rpm, user, qubesd
        self.root = place / "root"
        (self.root / "etc").mkdir(parents=True)
        # dom0's users, as the installed system names them (names -> ids here)
        (self.root / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/bin/bash\n"
            f"{user.name}:x:{user.uid}:{user.gid}::/home/{user.name}:/bin/bash\n")
        (self.root / "etc/group").write_text(
            f"root:x:0:\n{user.name}:x:{user.gid}:\nqubes:x:{user.qubes_gid}:{user.name}\n")
        self.pylib = pylib
        self.stubs = place / "stubs"
        self.calls = place / "systemctl.log"

    # --- rpm and its scriptlets --------------------------------------------
    def rpm_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rpm", f"--root={self.root}", "--dbpath=/var/lib/rpm", *args],
                              capture_output=True, text=True)

    def scriptlet(self, name: str) -> str:
        text = subprocess.run(["rpm", "-qp", "--scripts", str(self.rpm)], capture_output=True,
                              text=True, check=True).stdout
        parts = re.split(r"^(\w+) scriptlet \(using /bin/sh\):\n", text, flags=re.M)
        return dict(zip(parts[1::2], parts[2::2], strict=True))[name]

    def run_scriptlet(self, name: str, arg: int) -> None:
        """The scriptlet's own text with `systemd-tmpfiles` applied to the
        root and `systemctl` recorded (no systemd runs here)."""
        self.stubs.mkdir(exist_ok=True)
        tmpfiles = self.stubs / "systemd-tmpfiles"
        tmpfiles.write_text(
            "#!/bin/sh\nargs=\nfor a in \"$@\"; do case $a in /*) a=" + str(self.root) +
            "$a;; esac; args=\"$args $a\"; done\nexec /usr/bin/systemd-tmpfiles "
            f"--root={self.root} $args\n")
        systemctl = self.stubs / "systemctl"
        systemctl.write_text(f"#!/bin/sh\necho \"$*\" >> {self.calls}\n")
        for stub in (tmpfiles, systemctl):
            stub.chmod(0o755)
        r = subprocess.run(["sh", "-ec", self.scriptlet(name), name, str(arg)],
                           env={"PATH": f"{self.stubs}:/usr/bin:/bin"}, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr

    def systemctl_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    # --- what runs -----------------------------------------------------------
    @property
    def site(self) -> Path:
        (site,) = (self.root / "usr/lib").glob("python3*/site-packages")
        return site

    @property
    def run_dir(self) -> Path:
        return self.root / "run/whonix-open"

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                "PYTHONPATH": f"{self.site}:{self.pylib}",
                "WHONIX_OPEN_RUN_DIR": str(self.run_dir),
                "WHONIX_OPEN_CONFIG": str(self.root / "etc/whonix-open/profiles.toml"),
                **self.qubesd.broker_env(), **extra}

    def service(self, name: str, arg: str, caller: str) -> subprocess.Popen:
        """As qrexec-daemon starts a dom0 service for *caller*."""
        env = self.env(HOME=f"/home/{self.user.name}", USER=self.user.name,
                       QREXEC_REMOTE_DOMAIN=caller, QREXEC_SERVICE_FULL_NAME=f"{name}+{arg}",
                       QREXEC_SERVICE_ARGUMENT=arg, QREXEC_REQUESTED_TARGET_TYPE="name",
                       QREXEC_REQUESTED_TARGET="dom0")
        argv = [str(self.root / "etc/qubes-rpc" / name)] + ([arg] if arg else [])
        return subprocess.Popen(self.user.argv(*argv), env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")

    def request(self, name: str, arg: str, caller: str, data: bytes) -> tuple[int, str]:
        proc = self.service(name, arg, caller)
        _, err = proc.communicate(data, timeout=DEADLINE)
        return proc.returncode, err.decode(errors="replace")

    def admin(self, *args: str, as_root: bool = False) -> subprocess.CompletedProcess[str]:
        """whonix-open-admin as the dom0 user, or as root the way sudo runs it."""
        argv = [str(self.root / "usr/bin/whonix-open-admin"), *args]
        if as_root:
            return subprocess.run(["sh", "-c", 'umask 0022; exec "$@"', "sudo", *argv],
                                  env=self.env(HOME="/root", SUDO_USER=self.user.name),
                                  capture_output=True, text=True, timeout=DEADLINE, cwd="/")
        return subprocess.run(self.user.argv(*argv), env=self.env(HOME=f"/home/{self.user.name}"),
                              capture_output=True, text=True, timeout=DEADLINE, cwd="/")

    def reap_unit(self) -> subprocess.CompletedProcess[str]:
        """What whonix-open-reap.timer starts."""
        return unit.run_service(self.root / UNITS / "whonix-open-reap.service", self.root,
                                self.env(HOME="/"))

    def processes(self) -> list[int]:
        """The dom0 user's processes that run something of this install."""
        found = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and p.stat().st_uid == self.user.uid and \
                        str(self.place).encode() in (p / "cmdline").read_bytes():
                    found.append(int(p.name))
            except OSError:
                continue
        return found


def _file(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _verify_units(system: Installed) -> None:
    """systemd-analyze verify, on the installed root, with the targets of this
    machine's systemd and a stand-in qubesd.service (removed afterwards)."""
    extra = system.root / "etc/systemd/system"
    extra.mkdir(parents=True)
    for target in Path("/lib/systemd/system").glob("*.target"):
        (extra / target.name).write_bytes(target.read_bytes())
    (extra / "qubesd.service").write_text("[Unit]\nDescription=qubesd (stand-in)\n"
                                          "[Service]\nExecStart=/bin/true\n")
    r = subprocess.run(["systemd-analyze", "verify", f"--root={system.root}",
                        f"/{UNITS}/whonix-open-reap.service", f"/{UNITS}/whonix-open-reap.timer"],
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout + r.stderr) == (0, ""), r.stdout + r.stderr
    subprocess.run(["rm", "-rf", str(system.root / "etc/systemd")], check=True)


def test_install_reap_requests_status_sudo_reap_uninstall(place, built_rpm, dom0_user, qubesd,
                                                          qubesadmin_dir):
    system = Installed(place, built_rpm, dom0_user, qubesd, qubesadmin_dir)
    user = dom0_user

    # install: the files, then %post - the tmpfiles entry, the timer enabled and started
    r = system.rpm_cmd("-i", "--nodeps", "--noscripts", str(built_rpm))
    assert r.returncode == 0, r.stderr
    for name in SERVICES:
        assert _file(system.root / "etc/qubes-rpc" / name) == (0, 0, 0o755)
    system.run_scriptlet("postinstall", 1)
    assert system.systemctl_calls() == ["--no-reload preset whonix-open-reap.timer",
                                        "start whonix-open-reap.timer"]
    _verify_units(system)

    # the timer's first run (a minute after boot; the RPM starts it at install)
    reap = system.reap_unit()
    assert (reap.returncode, reap.stdout, reap.stderr) == (0, "nothing to reap\n", "")

    # requests from several callers, each a service process of the dom0 user
    # (issue 15, 1: after the reap above, this was "refused (73): session
    # directory ...: Permission denied")
    code, err = system.request("whonix.OpenInDisposable", "tor", "anon-whonix",
                               header("report.pdf") + b"%PDF-1.7\n")
    assert code == 0, err
    assert _file(system.run_dir) == (0, user.qubes_gid, 0o2770)  # setgid: files get qubes
    assert _file(system.run_dir / ".lock") == (0, user.qubes_gid, 0o660)  # tmpfiles' own
    code, err = system.request("whonix.ViewInDisposable", "offline", "personal",
                               header("notes.txt", view_only=True) + b"notes\n")
    assert code == 0, err
    code, err = system.request("whonix.OpenURLInDisposable", "tor", "personal",
                               b"https://www.qubes-os.org/\n")
    assert code == 0, err
    code, err = system.request("whonix.RoutingStatus", "", "anon-whonix", b"")
    assert code == 0, err
    assert system.reap_unit().returncode == 0  # and the timer again, between requests
    assert qubesd.disposables() == []

    # a session left open: status as the dom0 user shows it from its record
    qubesd.hang_disposables(True)
    open_one = system.service("whonix.OpenInDisposable", "tor", "anon-whonix")
    open_one.stdin.write(header("slides.odp") + b"x")
    open_one.stdin.flush()
    wait_for(lambda: qubesd.disposables() or None, "the open session's disposable")
    status = wait_for(lambda: (lambda s: s if s.returncode == 0 and json.loads(s.stdout)[
        "sessions"] and json.loads(s.stdout)["sessions"][0]["disposables"] else None)(
        system.admin("status", "--json")), "status to show the session")
    assert status.stderr == ""
    [session] = json.loads(status.stdout)["sessions"]
    assert (session["state"], session["kind"], session["caller"], session["profile"]) == (
        "open", "file", "anon-whonix", "tor")

    # its service is killed (SIGKILL: no cleanup runs); the reap timer runs
    # again before the administrator does
    os.kill(open_one.pid, signal.SIGKILL)  # setpriv exec'd the service: same pid
    open_one.wait(timeout=DEADLINE)
    for pipe in (open_one.stdin, open_one.stdout, open_one.stderr):
        pipe.close()  # its qrexec-client may still hold them, as in dom0
    (left,) = qubesd.disposables()
    stale = json.loads(system.admin("status", "--all", "--json").stdout)["sessions"]
    assert [(s["state"], s["caller"], s["profile"]) for s in stale] == [
        ("stale", "anon-whonix", "tor")]
    dry = system.admin("reap", "--dry-run", as_root=True)
    assert dry.returncode == 0 and f"{left}: would remove" in dry.stdout, dry.stderr
    qubesd.hang_disposables(False)
    reaped = system.admin("reap", as_root=True)  # sudo whonix-open-admin reap
    assert (reaped.returncode, reaped.stderr) == (0, ""), reaped.stderr
    assert f"{left}: removed" in reaped.stdout
    assert qubesd.disposables() == []

    # after root's reap and the timer's, the dom0 user's requests still work
    assert system.reap_unit().returncode == 0
    code, err = system.request("whonix.OpenInDisposable", "tor", "anon-whonix",
                               header("again.pdf") + b"%PDF-1.7\n")
    assert code == 0, err
    for entry in system.run_dir.iterdir():  # whoever made them, all usable by all
        assert _file(entry)[1:] == (user.qubes_gid, 0o660), entry

    # uninstall: %preun, the files; nothing of the package, no disposable, no process
    system.run_scriptlet("preuninstall", 0)
    assert system.systemctl_calls()[-1] == ("--no-reload disable --now whonix-open-reap.timer "
                                            "whonix-open-reap.service")
    r = system.rpm_cmd("-e", "--nodeps", "--noscripts", "whonix-open-dom0")
    assert r.returncode == 0, r.stderr
    left_files = sorted(str(p.relative_to(system.root)) for p in system.root.rglob("*")
                        if not p.is_dir() and not str(p.relative_to(system.root)).startswith(
                            ("var/lib/rpm", "etc/passwd", "etc/group")))
    # %preun emptied the run dir (its `D` line, systemd-tmpfiles --remove); the
    # empty directory itself is on a tmpfs, gone at the next boot
    assert left_files == []
    assert qubesd.disposables() == []
    wait_for(lambda: system.processes() == [] or None, "the dom0 user's processes to end")
