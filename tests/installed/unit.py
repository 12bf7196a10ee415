"""Run a oneshot systemd service the way systemd would, without systemd: its
[Service] section read from the installed unit file, each directive either
emulated or named below as checked by `systemd-analyze verify` only. A
directive this module does not know fails the test - a new line in the unit
is never silently left out of what the test runs.

Emulated (as root, then dropping to the unit's credentials):
- User=/Group=/DynamicUser=/SupplementaryGroups= and UMask= (setpriv, a
  shell umask), NoNewPrivileges= and CapabilityBoundingSet= (setpriv);
- PrivateNetwork= (a network namespace of its own: only loopback);
- ProtectSystem=strict with ReadWritePaths= (a mount namespace in which every
  mount is read-only but those paths, rebased onto the installed root),
  PrivateTmp= and ProtectHome= (empty tmpfs over /tmp, /var/tmp, /home,
  /root, /run/user).
Checked by systemd-analyze only: PrivateDevices= and RestrictAddressFamilies=
(the reap uses nothing but a Unix socket and its files; emulating a minimal
/dev or a seccomp filter here would test the emulation, not the unit).
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

EMULATED = {"Type", "ExecStart", "User", "Group", "DynamicUser", "SupplementaryGroups",
            "UMask", "NoNewPrivileges", "CapabilityBoundingSet", "PrivateNetwork",
            "ProtectSystem", "ReadWritePaths", "PrivateTmp", "ProtectHome"}
VERIFIED_ONLY = {"PrivateDevices", "RestrictAddressFamilies"}
DYNAMIC_UID = 61999  # DynamicUser=: a uid no passwd entry has (systemd: 61184-65519)
HIDDEN_BY_PRIVATE_TMP = ("/tmp", "/var/tmp")
HIDDEN_BY_PROTECT_HOME = ("/home", "/root", "/run/user")


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def _yes(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "1", "on")


@dataclass
class Credentials:
    uid: int
    gid: int
    groups: list[int]
    umask: int


def credentials(service: Mapping[str, str], root: Path) -> Credentials:
    """uid, gid, supplementary gids, umask - names resolved in the installed
    root's /etc/passwd and /etc/group, as systemd resolves them in dom0."""
    users = {f[0]: f for f in (line.split(":") for line in
                               (root / "etc/passwd").read_text().splitlines())}
    groups = {f[0]: int(f[2]) for f in (line.split(":") for line in
                                        (root / "etc/group").read_text().splitlines())}
    if _yes(service.get("DynamicUser", "no")):
        uid = gid = DYNAMIC_UID
    else:
        user = users[service.get("User", "root")]
        uid, gid = int(user[2]), int(user[3])
    if "Group" in service:
        gid = groups[service["Group"]]
    extra = [groups[g] for g in service.get("SupplementaryGroups", "").split()]
    return Credentials(uid, gid, extra, int(service.get("UMask", "0022"), 8))


def _sandbox_script(service: Mapping[str, str], root: Path) -> str:
    """Shell run as root in new mount (and network) namespaces before the
    credentials are dropped."""
    lines = ["set -e", "mount --make-rprivate /"]
    if service.get("ProtectSystem", "no") == "strict":
        lines.append("for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do "
                     "case $m in /proc*|/sys*|/dev*) ;; "
                     "*) mount -o remount,bind,ro \"$m\" 2>/dev/null || true;; esac; done")
    elif service.get("ProtectSystem", "no") not in ("no", "false"):
        raise AssertionError(f"ProtectSystem={service['ProtectSystem']}: not emulated")
    for path in service.get("ReadWritePaths", "").split():
        target = root / path.lstrip("-").lstrip("/")
        if path.startswith("-") and not target.exists():
            continue
        lines.append(f"mount --bind {shlex.quote(str(target))} {shlex.quote(str(target))}")
        lines.append(f"mount -o remount,bind,rw {shlex.quote(str(target))}")
    hidden = []
    if _yes(service.get("PrivateTmp", "no")):
        hidden += HIDDEN_BY_PRIVATE_TMP
    if _yes(service.get("ProtectHome", "no")):
        hidden += HIDDEN_BY_PROTECT_HOME
    for path in hidden:
        if str(root).startswith(path + "/"):
            raise AssertionError(f"the installed root {root} is under {path}, which the unit "
                                 "hides: put it elsewhere")
        lines.append(f"if [ -d {path} ]; then mount -t tmpfs -o mode=0755 tmpfs {path}; fi")
    return "\n".join(lines)


def run_service(unit: Path, root: Path, env: Mapping[str, str],
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the unit's ExecStart= (an installed path, taken from *root*) with
    its credentials and sandbox and the given environment."""
    service = read_unit(unit)["Service"]
    unknown = set(service) - EMULATED - VERIFIED_ONLY
    assert not unknown, f"{unit.name}: the installed-dom0 test does not know {sorted(unknown)}"
    assert service.get("Type") == "oneshot", "only oneshot services are emulated"
    argv = shlex.split(service["ExecStart"])
    argv[0] = str(root / argv[0].lstrip("/"))
    creds = credentials(service, root)
    drop = ["setpriv", f"--reuid={creds.uid}", f"--regid={creds.gid}",
            "--groups=" + ",".join(map(str, creds.groups)) if creds.groups
            else "--clear-groups"]
    if _yes(service.get("NoNewPrivileges", "no")):
        drop.append("--no-new-privs")
    if "CapabilityBoundingSet" in service:
        assert service["CapabilityBoundingSet"] == "", "only an empty bounding set is emulated"
        drop += ["--inh-caps=-all", "--bounding-set=-all"]
    inner = (f"umask {creds.umask:04o}; exec " + shlex.join(argv))
    script = _sandbox_script(service, root) + "\nexec " + shlex.join([*drop, "sh", "-c", inner])
    unshare = ["unshare", "--mount"] + (["--net"] if _yes(service.get("PrivateNetwork", "no"))
                                        else [])
    return subprocess.run([*unshare, "sh", "-c", script], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, cwd="/")


def sandbox_works() -> str | None:
    """None if this machine lets root make mount and network namespaces."""
    r = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True, text=True)
    return None if r.returncode == 0 else r.stderr.strip() or "unshare failed"


def owner_of_lock(path: Path) -> tuple[int, int, int]:
    st = os.stat(path, follow_symlinks=False)
    return st.st_uid, st.st_gid, st.st_mode & 0o7777
