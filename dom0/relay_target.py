"""What a request is relayed to in the disposable (DESIGN.md "Links and apps").

Files, links and apps share one broker (service.serve): the same checks,
disposable, enforcement, watchdog, limits and cleanup. Only the qrexec
service called in the disposable differs, and whether anything it writes may
reach the caller:

    whonix.OpenInDisposable+P       -> qubes.OpenInVM          (reply to caller)
    whonix.ViewInDisposable+P       -> qubes.OpenInVM          (reply discarded)
    whonix.OpenURLInDisposable+P    -> qubes.OpenURL           (network profiles only)
    whonix.StartAppInDisposable+A+P -> qubes.StartApp+<id of A in dom0's allowlist>
    whonix.ConvertInDisposable+R+P  -> qubes.PdfConvert+R       (offline profiles only;
                                       the pages go back to the caller)

dom0 never reads the stream in any case: a link is one line that only the
disposable's qubes.OpenURL reads and checks.
"""

from __future__ import annotations

from typing import NamedTuple

from whonix_open.contract import (
    SERVICE_APP,
    SERVICE_CONVERT,
    SERVICE_OPEN,
    SERVICE_URL,
    SERVICE_VIEW,
    Exit,
)
from whonix_open.dom0.config import Config, Profile
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import Request

OPEN_IN_VM = "qubes.OpenInVM"
OPEN_URL = "qubes.OpenURL"
START_APP = "qubes.StartApp"
PDF_CONVERT = "qubes.PdfConvert"  # the stock server (qubes-app-linux-pdf-converter)


class RelayTarget(NamedTuple):
    service: str  # the qrexec call into the disposable, argument included
    discard_output: bool  # True: the disposable's stdout goes to /dev/null
    pass_input: bool = True  # False: its stdin is /dev/null (an app gets nothing)
    what: str = "the file"  # what is relayed, in the dom0 log's words ("the link", ...)


def relay_target(service: str, request: Request, config: Config,
                 profile: Profile) -> RelayTarget:
    """The target for a validated request; a Refusal before any disposable."""
    if service == SERVICE_OPEN:
        return RelayTarget(OPEN_IN_VM, discard_output=False)
    if service == SERVICE_VIEW:
        return RelayTarget(OPEN_IN_VM, discard_output=True)
    if service == SERVICE_URL:
        if profile.offline:
            raise Refusal(Exit.LINK_NEEDS_NETWORK,
                          f"a link cannot be opened in the offline profile {profile.name}")
        return RelayTarget(OPEN_URL, discard_output=True, what="the link")
    if service == SERVICE_APP and request.app is not None:
        desktop_id = config.apps.get(request.app)
        if desktop_id is None:
            raise Refusal(Exit.APP_NOT_ALLOWED,
                          f"app {request.app} is not allowed (profiles.toml [apps])")
        # The caller's byte only says "start"; the app must not read the stream.
        return RelayTarget(f"{START_APP}+{desktop_id}", discard_output=True, pass_input=False,
                           what=f"the app {request.app}")
    if service == SERVICE_CONVERT and request.resolution is not None:
        if not profile.offline:
            # The document is untrusted and its renderer may be exploited: the
            # disposable that renders it must have no network at all.
            raise Refusal(Exit.CONVERT_NEEDS_OFFLINE,
                          f"a conversion cannot run in the profile {profile.name}, "
                          "which has a network")
        return RelayTarget(f"{PDF_CONVERT}+{request.resolution}", discard_output=False,
                           what="the document")
    raise Refusal(Exit.BAD_REQUEST, "unknown service")
