"""Decide which DVM template and which gateway a request gets (DESIGN.md,
"Automatic choices"). Every candidate is judged by Qubes features walked along
its template chain - `whonix-ws` for a workstation, `whonix-gw` for a gateway -
never by its name."""

from __future__ import annotations

from typing import NamedTuple

from whonix_open.contract import Exit
from whonix_open.dom0.backend import Backend, NoSuchQube, QubeInfo
from whonix_open.dom0.config import Profile
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import is_qube_name

WS_FEATURE = "whonix-ws"
GW_FEATURE = "whonix-gw"
FALLBACK_GATEWAY = "sys-whonix"
# On a DVM template `whonix-open-admin setup` made for one profile (its
# value): the profile it is pinned to uses it; the automatic choice does not.
SETUP_MARKER = "whonix-open-setup"


class Plan(NamedTuple):
    profile: str
    dvm: str
    gateway: str | None  # None: offline
    # The DVM template's own netvm is the plan's network: its disposables,
    # preloaded ones too, may be used (DESIGN.md, "Preloaded disposables").
    fits_dvm: bool = False
    label: str = "red"  # for a DispVM created outside the preload queue

    @property
    def network(self) -> str:
        return self.gateway or "offline"


def feature_true(value: str | None) -> bool:
    """Qubes stores a false feature as ''; be strict about everything else too."""
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def _info(backend: Backend, name: str) -> QubeInfo | None:
    try:
        return backend.info(name)
    except NoSuchQube:
        return None


def _ws_dvm_problem(backend: Backend, name: str) -> tuple[QubeInfo | None, str | None]:
    """(info, None) if *name* is a Whonix-Workstation DVM template, else (None, why)."""
    info = _info(backend, name)
    if info is None:
        return None, f"DVM template {name} does not exist"
    if not info.template_for_dispvms:
        return None, f"{name} is not a disposable template (template_for_dispvms)"
    if not feature_true(backend.feature_with_template(name, WS_FEATURE)):
        return None, f"{name} is not a Whonix-Workstation (feature {WS_FEATURE})"
    return info, None


def is_gateway(backend: Backend, name: str) -> bool:
    try:
        return feature_true(backend.feature_with_template(name, GW_FEATURE))
    except NoSuchQube:
        return False


def _version_key(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return None


def _discover_dvm(backend: Backend) -> tuple[str, QubeInfo]:
    """The only Whonix-Workstation DVM template, or the one of highest os-version."""
    found: list[tuple[str, QubeInfo]] = []
    for name, klass in sorted(backend.qube_classes().items()):
        if klass != "AppVM":
            continue
        info, problem = _ws_dvm_problem(backend, name)
        if problem is None:
            found.append((name, info))
    if not found:
        raise Refusal(Exit.MISCONFIGURED, "no Whonix-Workstation disposable template found")
    if len(found) > 1:  # those setup made belong to their profiles
        found = [(n, i) for n, i in found if backend.feature(n, SETUP_MARKER) is None] or found
    if len(found) == 1:
        return found[0]
    versions = {name: _version_key(backend.feature_with_template(name, "os-version"))
                for name, _ in found}
    names = ", ".join(name for name, _ in found)
    if any(v is None for v in versions.values()):
        raise Refusal(Exit.MISCONFIGURED,
                      f"several Whonix-Workstation DVM templates and not all have an "
                      f"os-version: {names}; pin one in profiles.toml")
    best = max(versions.values())
    winners = [(n, i) for n, i in found if versions[n] == best]
    if len(winners) > 1:
        raise Refusal(Exit.MISCONFIGURED,
                      f"several Whonix-Workstation DVM templates of the same os-version: "
                      f"{names}; pin one in profiles.toml")
    return winners[0]


def choose_dvm(backend: Backend, caller: QubeInfo, profile: Profile) -> tuple[str, QubeInfo]:
    if profile.dvm is not None:
        info, problem = _ws_dvm_problem(backend, profile.dvm)
        if problem:
            raise Refusal(Exit.MISCONFIGURED, f"profile {profile.name}: {problem}")
        return profile.dvm, info
    if caller.default_dispvm:
        info, problem = _ws_dvm_problem(backend, caller.default_dispvm)
        if problem is None:
            return caller.default_dispvm, info
    preferred = backend.feature_with_template(caller.name, "whonix-default-dispvm")
    if preferred and is_qube_name(preferred):
        info, problem = _ws_dvm_problem(backend, preferred)
        if problem is None:
            return preferred, info
    return _discover_dvm(backend)


def choose_gateway(backend: Backend, dvm: QubeInfo, profile: Profile) -> str:
    if profile.gateway is not None:
        if not is_gateway(backend, profile.gateway):
            raise Refusal(Exit.MISCONFIGURED,
                          f"profile {profile.name}: gateway {profile.gateway} is not a "
                          f"Whonix-Gateway (feature {GW_FEATURE})")
        return profile.gateway
    if dvm.netvm and is_gateway(backend, dvm.netvm):
        return dvm.netvm
    preferred = backend.feature_with_template(dvm.name, "whonix-default-gw")
    if preferred and is_qube_name(preferred) and is_gateway(backend, preferred):
        return preferred
    if is_gateway(backend, FALLBACK_GATEWAY):
        return FALLBACK_GATEWAY
    raise Refusal(Exit.MISCONFIGURED, "no Whonix-Gateway found for the tor profile")


def make_plan(backend: Backend, caller: QubeInfo, profile: Profile) -> Plan:
    dvm, dvm_info = choose_dvm(backend, caller, profile)
    gateway = None if profile.offline else choose_gateway(backend, dvm_info, profile)
    return Plan(profile=profile.name, dvm=dvm, gateway=gateway,
                fits_dvm=dvm_info.netvm == gateway, label=dvm_info.label or "red")
