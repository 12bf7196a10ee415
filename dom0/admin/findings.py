"""A finding of `whonix-open-admin check` and its stable JSON form.

    {"check": "dvm-netvm", "level": "FAIL", "qubes": ["whonix-workstation-18-dvm"],
     "message": "...", "fix": ["qvm-prefs whonix-workstation-18-dvm netvm sys-whonix"]}

`check` names the kind of finding (CHECKS below, documented in docs/ADMIN.md);
`fix` holds shell commands an administrator can run as they are (qube names
are restricted to [A-Za-z0-9_.-], so they need no quoting) or, where no
command can do it, an instruction starting with "edit ".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
LEVELS = (PASS, WARN, FAIL)
SCHEMA_VERSION = 1

CHECKS = {
    "config": "profiles.toml parses",
    "profile": "a profile resolves to a Whonix-Workstation DVM template and a "
               "Whonix-Gateway (or offline), with the broker's own code",
    "dvm-netvm": "a Whonix-Workstation DVM template's own netvm is a Whonix-Gateway or none",
    "anon-netvm": "a Whonix qube's netvm is a Whonix-Gateway or none",
    "anon-default-dispvm": "a Whonix qube's default_dispvm (and that one's, in turn) is none "
                           "or a Whonix-Workstation DVM template with a fitting netvm",
    "dvm-running": "a DVM template is running",
    "named-disposable": "a named disposable (no auto-shutdown)",
    "no-auto-cleanup": "a disposable without auto_cleanup",
    "orphan": "a disposable of this service whose session is gone",
    "unproven": "a disposable that may be one a dead session left but cannot be proven "
                "so: reap leaves it alone (DESIGN.md, \"The SIGKILL window\")",
    "containment": "an opened disposable reaches nothing outside itself (DESIGN.md, "
                   "Enforcement 8): its tag, and the policy denying it the whonix services "
                   "and every service that carries data to another qube, and other qubes "
                   "(the gateway) their calls into it",
    "network-opt-in": "a qube without a netvm that may use profiles with a network "
                      "(dom0 feature whonix-open-allow-network): its files and links can "
                      "leave through a disposable",
    "fast-path": "a profile takes an R4.3 preloaded disposable (its DVM template has the "
                 "profile's network and keeps preloads), or which setup command gives it one",
    "policy": "qrexec policy: loads, who may call each service and profile, shadowing",
}


class Finding(NamedTuple):
    check: str
    level: str
    message: str
    qubes: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"check": self.check, "level": self.level, "qubes": list(self.qubes),
                "message": self.message, "fix": list(self.fix)}


def finding(check: str, level: str, message: str, qubes: Iterable[str] = (),
            fix: Iterable[str] = ()) -> Finding:
    if check not in CHECKS or level not in LEVELS:  # a programming error, not input
        raise ValueError(f"unknown check {check!r} or level {level!r}")
    return Finding(check, level, message, tuple(qubes), tuple(fix))


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    return {level: sum(1 for f in findings if f.level == level) for level in LEVELS}
