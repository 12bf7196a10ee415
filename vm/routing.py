"""Is this qube behind a Whonix-Gateway? Asked of dom0 (whonix.RoutingStatus),
which knows; when dom0 does not answer, read the local facts (Whonix marker
files, QubesDB) and say that the answer is unverified.

The answer only decides warnings (or a refusal with require_whonix_gateway):
the disposable's own network path is enforced by dom0 either way.

Test seams: WHONIX_OPEN_ROOT moves the filesystem root under which the Whonix
marker files are looked for; `qubesdb-read` is found on PATH (QUBESDB_READ).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

from whonix_open.contract import SERVICE_STATUS, Exit
from whonix_open.vm import transport
from whonix_open.vm.messages import describe

ROOT_ENV = "WHONIX_OPEN_ROOT"
QUBESDB_READ = "qubesdb-read"
WS_MARKER = "usr/share/anon-ws-base-files/workstation"
GW_MARKER = "usr/share/anon-gw-base-files/gateway"
WHONIX_MARKER = "usr/share/whonix/marker"
STATUS_LIMIT = 64 * 1024
STATUS_TIMEOUT = 120.0  # seconds; the policy may "ask" the user in dom0


@dataclass
class Routing:
    """What we know about this qube's network path. None = not known."""

    verified: bool
    qube: str | None = None
    netvm: str | None = None
    has_network: bool | None = None
    behind_whonix_gateway: bool | None = None
    is_whonix_workstation: bool | None = None
    is_disposable_template: bool | None = None
    is_disposable: bool | None = None
    profiles: list[str] = field(default_factory=list)
    default_profile: str | None = None
    why_unverified: str | None = None

    def behind_gateway_for_sure(self) -> bool:
        """Only then is nothing to warn about. No network at all is fine too:
        nothing this qube does leaves it."""
        return self.behind_whonix_gateway is True or self.has_network is False

    def why_not_required_path(self) -> str | None:
        """For require_whonix_gateway: None only when dom0's verified answer
        says this qube is behind a Whonix-Gateway (or has no network);
        otherwise why not, in words. Local facts never satisfy it: a
        Whonix-Workstation's marker files say nothing about its netvm."""
        if not self.verified:
            return (
                "dom0 did not confirm that this qube is behind a Whonix-Gateway "
                f"({self.why_unverified or 'no answer'}), and this qube's own facts "
                "cannot prove it"
            )
        if not self.behind_gateway_for_sure():
            via = f" (its netvm is {self.netvm})" if self.netvm else ""
            return f"dom0 reports that this qube is not behind a Whonix-Gateway{via}"
        return None

    def warnings(self, files: int = 0) -> list[str]:
        """What to warn about, said of the *files* about to be opened (0:
        of this qube alone, as `--status` shows it)."""
        out = []
        if self.why_unverified:
            out.append(
                f"could not ask dom0 about this qube's network ({self.why_unverified}); "
                "the facts below are this qube's own and UNVERIFIED."
            )
        if not self.behind_gateway_for_sure():
            such = {0: "", 1: ", such as the download that brought this file,"}.get(
                files, ", such as the downloads that brought these files,")
            if self.behind_whonix_gateway is None and self.has_network is None:
                what = ("could not determine whether this qube is behind a Whonix-Gateway: "
                        f"its own traffic{such} may not be Tor-routed.")
            else:
                via = f" (its netvm is {self.netvm})" if self.netvm else ""
                what = (f"this qube is NOT behind a Whonix-Gateway{via}: its own "
                        f"traffic{such} is not Tor-routed.")
            if files == 0:
                disposable = ("whonix-open opens files and links only in a disposable whose "
                              "network dom0 enforces (Tor, or offline).")
            elif files == 1:
                disposable = ("The disposable the file opens in is still Tor-routed (or "
                              "offline), because dom0 enforces that.")
            else:
                disposable = ("The disposables the files open in are still Tor-routed (or "
                              "offline), because dom0 enforces that.")
            out.append(f"{what} {disposable}")
        if self.is_disposable_template:
            hedge = "" if self.verified else " (judged by its name, unverified)"
            out.append(
                f"this qube is a disposable template{hedge}: files opened from here "
                "stay in it and are present in every disposable based on it."
            )
        return out

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["source"] = "dom0" if self.verified else "local"
        data["warnings"] = self.warnings()
        return data


def _from_dom0(data: object) -> Routing:
    """Validate dom0's JSON object (schema version 1)."""
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError("not a version-1 status object")
    netvm = data.get("netvm")
    profiles = data.get("profiles", [])
    checks = [
        isinstance(data.get("qube"), str),
        netvm is None or isinstance(netvm, str),
        isinstance(profiles, list) and all(isinstance(p, str) for p in profiles),
        data.get("default_profile") is None or isinstance(data.get("default_profile"), str),
    ] + [
        isinstance(data.get(key), bool)
        for key in (
            "netvm_is_whonix_gateway",
            "is_whonix_workstation",
            "is_disposable_template",
            "is_disposable",
        )
    ]
    if not all(checks):
        raise ValueError("a field has the wrong type")
    return Routing(
        verified=True,
        qube=data["qube"],
        netvm=netvm,
        has_network=netvm is not None,
        behind_whonix_gateway=netvm is not None and data["netvm_is_whonix_gateway"],
        is_whonix_workstation=data["is_whonix_workstation"],
        is_disposable_template=data["is_disposable_template"],
        is_disposable=data["is_disposable"],
        profiles=list(profiles),
        default_profile=data.get("default_profile"),
    )


def ask_dom0() -> Routing:
    """dom0's answer; raises LookupError(reason) when there is none."""
    try:
        code, out = transport.query(SERVICE_STATUS, STATUS_LIMIT, STATUS_TIMEOUT)
    except transport.TransportError as exc:
        raise LookupError(str(exc)) from None
    if code == -9:
        raise LookupError(f"no answer within {int(STATUS_TIMEOUT)} s")
    if code != Exit.OK:
        if code == Exit.POLICY_DENIED:
            raise LookupError("the qrexec policy denied whonix.RoutingStatus")
        raise LookupError(describe(code, None).rstrip("."))
    if len(out) > STATUS_LIMIT:
        raise LookupError("dom0's answer was too long")
    try:
        return _from_dom0(json.loads(out))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LookupError(f"dom0's answer was malformed: {exc}") from None


def _qubesdb(key: str) -> str | None:
    """A QubesDB value, None if absent; raises OSError without qubesdb-read."""
    program = shutil.which(QUBESDB_READ)
    if program is None:
        raise FileNotFoundError(QUBESDB_READ)
    result = subprocess.run(
        [program, key],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
        check=False,
    )
    if result.returncode != 0:
        return None
    return result.stdout.decode("utf-8", "replace").strip()


def local_facts(why: str) -> Routing:
    """What this qube can tell about itself (unverified: a compromised qube
    could lie to itself, and a name proves nothing)."""
    root = os.environ.get(ROOT_ENV, "/")
    is_ws = os.path.exists(os.path.join(root, WS_MARKER))
    is_gw = os.path.exists(os.path.join(root, GW_MARKER))
    facts = Routing(verified=False, why_unverified=why, is_whonix_workstation=is_ws)
    try:
        gateway = _qubesdb("/qubes-gateway")
        facts.qube = _qubesdb("/name")
        vm_type = _qubesdb("/type")
    except (OSError, subprocess.TimeoutExpired):
        return facts  # not on Qubes, or QubesDB broken: network unknown
    facts.has_network = bool(gateway)
    # A Whonix-Workstation (marker files) with a gateway is meant to sit
    # behind a Whonix-Gateway; nothing here can prove it is.
    facts.behind_whonix_gateway = bool(gateway) and is_ws and not is_gw
    facts.is_disposable = vm_type == "DispVM"
    # No flag marks a disposable template inside it; Whonix itself goes by name.
    facts.is_disposable_template = vm_type == "AppVM" and "-dvm" in (facts.qube or "")
    return facts


def routing_status() -> Routing:
    try:
        return ask_dom0()
    except LookupError as exc:
        return local_facts(str(exc))


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def format_text(status: Routing) -> str:
    if status.has_network is False:
        netvm = "none (no network)"
    elif status.netvm:
        netvm = status.netvm
    else:
        netvm = "unknown" if status.has_network is None else "(some netvm)"
    lines = [
        f"qube:                     {status.qube or 'unknown'}",
        f"netvm:                    {netvm}",
        f"behind a Whonix-Gateway:  {_yes_no(status.behind_whonix_gateway)}",
        f"Whonix-Workstation:       {_yes_no(status.is_whonix_workstation)}",
        f"disposable template:      {_yes_no(status.is_disposable_template)}",
        f"disposable:               {_yes_no(status.is_disposable)}",
    ]
    if status.verified:
        default = f" (default: {status.default_profile})" if status.default_profile else ""
        lines.append(f"profiles:                 {', '.join(status.profiles) or 'none'}{default}")
        lines.append("source:                   dom0 (verified)")
    else:
        lines.append("source:                   this qube (UNVERIFIED)")
    lines += [f"warning: {text}" for text in status.warnings()]
    return "\n".join(lines)
