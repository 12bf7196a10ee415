"""The fixed parts of the contract (DESIGN.md): service names, the profile-name
grammar and the exit codes. dom0 and the VM helper both import this module, so
the two halves can never disagree about what a code means."""

from __future__ import annotations

import enum
import re

SERVICE_OPEN = "whonix.OpenInDisposable"
SERVICE_VIEW = "whonix.ViewInDisposable"
SERVICE_STATUS = "whonix.RoutingStatus"
# Links and apps go through the same broker (DESIGN.md "Links and apps").
# URL: argument "+PROFILE", the stream is one line for the disposable's qubes.OpenURL.
# App: argument "+APP+PROFILE" (both names in the profile-name grammar), so a
# policy rule can name the exact pair; dom0 maps APP to qubes.StartApp+<desktop id>.
SERVICE_URL = "whonix.OpenURLInDisposable"
SERVICE_APP = "whonix.StartAppInDisposable"
APP_SEPARATOR = "+"
# Convert: argument "+RESOLUTION+PROFILE" (offline profiles only); the stream is
# the document for the disposable's stock qubes.PdfConvert+RESOLUTION, whose
# answer (page count, then per page "W H" and W*H*3 RGB bytes) goes back to the
# caller untouched. RESOLUTION is what qvm-convert-pdf sends: 75..4800 ppi
# (click.IntRange(75, 4800) in qubespdfconverter/client.py), written in decimal.
SERVICE_CONVERT = "whonix.ConvertInDisposable"
RESOLUTION_MIN, RESOLUTION_MAX, RESOLUTION_DEFAULT = 75, 4800, 300
RESOLUTION_RE = re.compile(r"[1-9][0-9]{1,3}")

BUILTIN_PROFILES = ("tor", "offline")
DEFAULT_PROFILE = "tor"

# A profile name: what may follow "+" in the service argument. Checked with
# fullmatch, so no newline or anything else can trail it.
PROFILE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


def is_profile_name(text: str) -> bool:
    """True if *text* is a syntactically valid profile name."""
    return isinstance(text, str) and PROFILE_NAME_RE.fullmatch(text) is not None


def is_resolution(text: str) -> bool:
    """A resolution as the service argument spells it: decimal, no sign, no
    leading zero, within qvm-convert-pdf's range."""
    return (isinstance(text, str) and RESOLUTION_RE.fullmatch(text) is not None
            and RESOLUTION_MIN <= int(text) <= RESOLUTION_MAX)


def is_app_name(text: str) -> bool:
    """App names (dom0's allowlist keys) follow the profile-name grammar."""
    return is_profile_name(text)


class Exit(enum.IntEnum):
    """Exit codes of the dom0 services (125-127 belong to qrexec itself)."""

    OK = 0
    BAD_REQUEST = 64
    MISCONFIGURED = 66
    NETWORK_REFUSED = 67
    TOO_MANY = 68
    DISPOSABLE_FAILED = 69
    VERIFICATION_FAILED = 70
    NETVM_CHANGED = 71
    LOOP = 72
    INTERNAL = 73
    SESSION_EXPIRED = 74
    CALLER_SILENT = 75
    LINK_NEEDS_NETWORK = 76  # a link was asked for in an offline profile
    APP_NOT_ALLOWED = 77  # the app is not in dom0's allowlist (profiles.toml [apps])
    CONVERT_NEEDS_OFFLINE = 78  # a conversion was asked for in a profile with a network
    # The caller has no netvm and the profile has a network: serving it would
    # give the caller a network path it does not have (dom0/admission.py).
    NO_NEW_NETWORK = 79

    # qrexec's own codes, as seen by the caller of qrexec-client-vm
    QREXEC_FAILED = 125
    POLICY_DENIED = 126
    SERVICE_NOT_FOUND = 127


# A few words per code, for short reports (the VM helper's --help, dom0's
# whonix-open-app); the VM helper's full advice is vm/messages.py.
SUMMARY: dict[Exit, str] = {
    Exit.OK: "done; the disposable was closed",
    Exit.BAD_REQUEST: "bad request: malformed, or an unknown profile or caller",
    Exit.MISCONFIGURED: "misconfigured (profiles.toml, DVM template or gateway)",
    Exit.NETWORK_REFUSED: "the network could not be guaranteed",
    Exit.TOO_MANY: "too many disposables are open",
    Exit.DISPOSABLE_FAILED: "the disposable could not be created or started, or what it ran failed",
    Exit.VERIFICATION_FAILED: "the disposable failed verification",
    Exit.NETVM_CHANGED: "the disposable's network was changed, so it was killed",
    Exit.LOOP: "the caller is itself a disposable of this service",
    Exit.INTERNAL: "internal error in dom0 (qubesd unreachable?)",
    Exit.SESSION_EXPIRED: "the session reached its maximum lifetime",
    Exit.CALLER_SILENT: "the caller sent nothing in time",
    Exit.LINK_NEEDS_NETWORK: "a link in a profile without a network",
    Exit.APP_NOT_ALLOWED: "the app is not in the allowlist ([apps] in profiles.toml)",
    Exit.CONVERT_NEEDS_OFFLINE: "a conversion in a profile with a network",
    Exit.NO_NEW_NETWORK: "this qube has no network and the profile has one",
    Exit.QREXEC_FAILED: "qrexec failed",
    Exit.POLICY_DENIED: "the qrexec policy denied the call",
    Exit.SERVICE_NOT_FOUND: "the service is not installed in dom0",
}
