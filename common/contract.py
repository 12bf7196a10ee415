"""The fixed parts of the contract (DESIGN.md): service names, the profile-name
grammar and the exit codes. dom0 and the VM helper both import this module, so
the two halves can never disagree about what a code means."""

from __future__ import annotations

import enum
import re

SERVICE_OPEN = "whonix.OpenInDisposable"
SERVICE_VIEW = "whonix.ViewInDisposable"
SERVICE_STATUS = "whonix.RoutingStatus"

BUILTIN_PROFILES = ("tor", "offline")
DEFAULT_PROFILE = "tor"

# A profile name: what may follow "+" in the service argument. Checked with
# fullmatch, so no newline or anything else can trail it.
PROFILE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


def is_profile_name(text: str) -> bool:
    """True if *text* is a syntactically valid profile name."""
    return isinstance(text, str) and PROFILE_NAME_RE.fullmatch(text) is not None


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

    # qrexec's own codes, as seen by the caller of qrexec-client-vm
    QREXEC_FAILED = 125
    POLICY_DENIED = 126
    SERVICE_NOT_FOUND = 127
