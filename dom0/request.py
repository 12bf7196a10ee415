"""Validate what qrexec hands a dom0 service, before anything else is done.

Everything here comes from the caller's side of qrexec and is treated as
hostile: the argument and the caller's name must match a strict grammar, and
the copies of the argument that qrexec provides (argv[1], QREXEC_SERVICE_ARGUMENT,
QREXEC_SERVICE_FULL_NAME) must agree with each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from whonix_open.contract import (
    APP_SEPARATOR,
    SERVICE_APP,
    SERVICE_CONVERT,
    Exit,
    is_app_name,
    is_profile_name,
    is_resolution,
)
from whonix_open.dom0.errors import Refusal

# Qubes' own rule for qube names (qubes.vm.validate_name), plus "dom0".
QUBE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,30}")


class Request(NamedTuple):
    caller: str
    profile: str | None  # None only for a service that takes no argument
    app: str | None = None  # whonix.StartAppInDisposable only: the allowlist key
    resolution: int | None = None  # whonix.ConvertInDisposable only: ppi


def is_qube_name(text: str | None) -> bool:
    return (isinstance(text, str) and QUBE_NAME_RE.fullmatch(text) is not None
            and text not in (".", ".."))


def parse_request(service: str, argv: Sequence[str], env: Mapping[str, str], *,
                  allow_profile: bool = True) -> Request:
    """The validated request, or Refusal(BAD_REQUEST). *argv* excludes argv[0].

    With *allow_profile* the argument must name the profile: an empty one is
    refused rather than read as the default profile, so that a policy rule
    about `+tor` cannot be passed by with `+` (a rule can only match the
    spelling it names). Without it the argument must be empty."""
    caller = env.get("QREXEC_REMOTE_DOMAIN")
    if not is_qube_name(caller):
        raise Refusal(Exit.BAD_REQUEST, "QREXEC_REMOTE_DOMAIN missing or malformed")

    copies = []
    if "QREXEC_SERVICE_ARGUMENT" in env:
        copies.append(env["QREXEC_SERVICE_ARGUMENT"])
    full = env.get("QREXEC_SERVICE_FULL_NAME")
    if full is not None:
        name, plus, arg = full.partition("+")
        if name != service:
            raise Refusal(Exit.BAD_REQUEST, "QREXEC_SERVICE_FULL_NAME names another service")
        copies.append(arg if plus else "")
    if len(argv) > 1:
        raise Refusal(Exit.BAD_REQUEST, "more than one command-line argument")
    if argv:
        copies.append(argv[0])
    if not copies:
        raise Refusal(Exit.BAD_REQUEST, "no service argument in the qrexec environment")
    if any(c != copies[0] for c in copies):
        raise Refusal(Exit.BAD_REQUEST, "the copies of the service argument disagree")

    argument = copies[0]
    if not allow_profile:
        if argument:
            raise Refusal(Exit.BAD_REQUEST, "this service takes no argument")
        return Request(caller=caller, profile=None)
    if argument == "":
        raise Refusal(Exit.BAD_REQUEST, "no profile named (the argument must be the profile)")
    if service == SERVICE_APP:
        # "APP+PROFILE": both parts named, so a policy rule sees the exact pair.
        app, sep, profile = argument.partition(APP_SEPARATOR)
        if not sep or not is_app_name(app) or not is_profile_name(profile):
            raise Refusal(Exit.BAD_REQUEST, "malformed service argument (APP+PROFILE)")
        return Request(caller=caller, profile=profile, app=app)
    if service == SERVICE_CONVERT:
        # "RESOLUTION+PROFILE": the stock client's argument (qubes.PdfConvert+300)
        # with the profile after it; one spelling per pair, as for apps.
        resolution, sep, profile = argument.partition(APP_SEPARATOR)
        if not sep or not is_resolution(resolution) or not is_profile_name(profile):
            raise Refusal(Exit.BAD_REQUEST, "malformed service argument (RESOLUTION+PROFILE)")
        return Request(caller=caller, profile=profile, resolution=int(resolution))
    if not is_profile_name(argument):
        # Not echoed: the log must not carry caller-chosen text.
        raise Refusal(Exit.BAD_REQUEST, "malformed service argument")
    return Request(caller=caller, profile=argument)
