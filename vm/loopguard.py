"""Refuse to open a disposable from inside a qubes.OpenInVM / qubes.OpenURL
session without the user's confirmation.

This is what stock qvm-open-in-vm does since QubesOS/qubes-core-agent-linux
PR #469 (qubes-issues #7406): a viewer started by those services (also in a
disposable whonix-open created: dom0 calls the disposable's qubes.OpenInVM)
inherits qrexec's QREXEC_SERVICE_FULL_NAME, and opening from there again can
chain disposables until memory runs out. When it is set to one of those
services, ask; when nobody can be asked, refuse.
"""

from __future__ import annotations

import os
import sys

SPAWNING_SERVICES = ("qubes.OpenInVM", "qubes.OpenURL")
QUESTION = (
    "whonix-open was started from inside a file or URL that was itself opened "
    "through qrexec ({service}). Opening from here creates another disposable "
    "and may loop. Open anyway?"
)


def spawning_service(environ: dict[str, str] | None = None) -> str | None:
    """The qrexec service this process runs under if it is one that opens
    files or URLs, else None."""
    env = os.environ if environ is None else environ
    full = env.get("QREXEC_SERVICE_FULL_NAME", "")
    name = full.split("+", 1)[0]
    return name if name in SPAWNING_SERVICES else None


def confirm(question: str) -> bool:
    """Ask the user (terminal, else a zenity/kdialog dialog); False if nobody
    can be asked. The seam tests replace."""
    if sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty():
        print(f"whonix-open: {question} [y/N] ", end="", file=sys.stderr, flush=True)
        try:
            answer = sys.stdin.readline()
        except (OSError, KeyboardInterrupt):
            return False
        return answer.strip().lower() in ("y", "yes")
    from whonix_open.vm import dialogs  # only when asking: `whonix-open URL` starts faster

    return dialogs.yes_no(question)
