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

    # qrexec's own codes, as seen by the caller of qrexec-client-vm
    QREXEC_FAILED = 125
    POLICY_DENIED = 126
    SERVICE_NOT_FOUND = 127
