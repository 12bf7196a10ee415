"""Whether a request is served at all: every check made before a disposable
exists (DESIGN.md, "Enforcement" 1 and "No new network").

    accept()  the request, the profile and what to relay to - no Admin API call
              (64, 66, 76, 77)
    admit()   the caller, once the broker has connected to qubesd: it exists
              (64), is not a disposable of this service (72), and gets no
              network path it does not already have (79)

`service.serve` calls both, with the wait for the caller's first byte in
between. `would_refuse()` runs accept() and admit()'s check_caller() on a
described caller: `whonix-open-admin check` / `policy explain` and the
README's policy table ask it what the broker would refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from whonix_open.contract import Exit
from whonix_open.dom0.audit import AuditRecord
from whonix_open.dom0.backend import Backend, NoSuchQube, QubeInfo
from whonix_open.dom0.config import Config, ConfigError, Profile, load_config
from whonix_open.dom0.disposable import CONTAINED_TAG
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.relay_target import RelayTarget, relay_target
from whonix_open.dom0.request import Request, parse_request
from whonix_open.dom0.resolve import feature_true

# A dom0 feature on the calling qube (its own, or copied from its DVM template
# when qubesd creates a disposable): the administrator lets this qube, which
# has no netvm, use profiles with a network anyway.
#     qvm-features vault whonix-open-allow-network 1
OPT_IN_FEATURE = "whonix-open-allow-network"


class Accepted(NamedTuple):
    request: Request
    config: Config
    profile: Profile
    target: RelayTarget


def accept(service: str, argv: Sequence[str], env: Mapping[str, str],
           audit: AuditRecord) -> Accepted:
    """The validated request and what it asks for; a Refusal otherwise. Reads
    the configuration, makes no Admin API call."""
    request = parse_request(service, argv, env)
    audit.caller = request.caller
    try:
        config = load_config(env)
    except ConfigError as e:
        raise Refusal(Exit.MISCONFIGURED, f"configuration: {e}") from None
    profile = config.profile(request.profile)
    if profile is None:
        raise Refusal(Exit.BAD_REQUEST, f"unknown profile {request.profile}")
    audit.profile = profile.name
    target = relay_target(service, request, config, profile)
    audit.relay = target.service
    return Accepted(request, config, profile, target)


def would_add_network(klass: str, netvm: str | None, profile: Profile) -> bool:
    """Serving *profile* would give a caller of this class and netvm a network
    path it lacks: it has no netvm and the profile has one. dom0 (the
    AdminVM) is the administrator's own request (whonix-open-app), never a
    qube's: qrexec lets no qube call as dom0."""
    return not profile.offline and netvm is None and klass != "AdminVM"


def check_caller(name: str, klass: str, netvm: str | None, tags: frozenset[str],
                 profile: Profile, opt_in: Callable[[], str | None]) -> None:
    """Refuse a disposable of this service (72) and a caller that would get a
    network path it lacks (79). *opt_in* reads the caller's OPT_IN_FEATURE;
    it is called only for a caller without a netvm asking for a network.
    Also what `whonix-open-admin` and the README's policy table ask."""
    if CONTAINED_TAG in tags:
        raise Refusal(Exit.LOOP, f"{name} is itself a disposable of this service")
    if would_add_network(klass, netvm, profile) and not feature_true(opt_in()):
        raise Refusal(Exit.NO_NEW_NETWORK,
                      f"{name} has no netvm and profile {profile.name} has a network "
                      f"(feature {OPT_IN_FEATURE} is not set on {name})")


def admit(backend: Backend, request: Request, profile: Profile) -> tuple[QubeInfo, frozenset[str]]:
    """The caller's properties and (for a disposable) tags, if it may be
    served. Admin API calls: one GetAll; a tag.List for a disposable; a
    feature.Get only for a caller without a netvm asking for a network."""
    try:
        caller = backend.info(request.caller)
    except NoSuchQube:
        raise Refusal(Exit.BAD_REQUEST, f"caller {request.caller} does not exist") from None
    tags = backend.tags(caller.name) if caller.klass == "DispVM" else frozenset()
    check_caller(caller.name, caller.klass, caller.netvm, tags, profile,
                 lambda: backend.feature(caller.name, OPT_IN_FEATURE))
    return caller, tags


class Caller(NamedTuple):
    """A calling qube as described by someone who already read it (the admin
    tool's inventory) instead of admit() asking qubesd."""

    name: str
    klass: str
    netvm: str | None
    tags: frozenset[str] = frozenset()
    opt_in: str | None = None  # its OPT_IN_FEATURE


def would_refuse(service: str, argument: str, caller: Caller,
                 env: Mapping[str, str]) -> Exit | None:
    """The broker's answer to SERVICE+ARGUMENT from *caller* up to the point
    where it creates a disposable: the code it refuses with, or None. The
    same accept() and check_caller() that serve() runs, on a described
    caller instead of qubesd's answers; *env* may name the configuration."""
    call = {**{k: v for k, v in env.items() if not k.startswith("QREXEC_")},
            "QREXEC_REMOTE_DOMAIN": caller.name, "QREXEC_SERVICE_ARGUMENT": argument,
            "QREXEC_SERVICE_FULL_NAME": f"{service}+{argument}"}
    try:
        accepted = accept(service, [argument] if argument else [], call, AuditRecord(service))
        tags = caller.tags if caller.klass == "DispVM" else frozenset()  # as admit() reads
        check_caller(caller.name, caller.klass, caller.netvm, tags, accepted.profile,
                     lambda: caller.opt_in)
    except Refusal as e:
        return e.code
    return None
