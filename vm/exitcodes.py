"""The exit codes of the `whonix-open` command itself.

dom0's and qrexec's codes (64-78, 125-127; whonix_open.contract.Exit) are passed
through unchanged, so a script sees exactly what dom0 decided. The CLI adds its
own codes below them for what happens in this qube.
"""

from __future__ import annotations

import enum

from whonix_open.contract import Exit


class CliExit(enum.IntEnum):
    OK = 0
    FILE_FAILED = 1  # refused locally, I/O error, or the edit could not be applied
    USAGE = 2  # bad arguments or a bad config file
    REFUSED_LOCALLY = 3  # loop guard or require_whonix_gateway said no
    TRANSPORT = 4  # qrexec-client-vm missing, killed, or an unknown exit code
    CONVERT_FAILED = 6  # --convert: the disposable's answer was refused, or its converter failed
    INTERRUPTED_HUP = 129  # SIGHUP (128 + 1)
    INTERRUPTED_INT = 130  # SIGINT (128 + 2)
    INTERRUPTED_TERM = 143  # SIGTERM (128 + 15)


DOM0_CODES = frozenset(int(code) for code in Exit if code != Exit.OK)

EPILOG = """\
exit status:
  0        every file was opened and closed; edits (if any) were saved
  1        a file was refused here (missing, directory, special, unreadable),
           an I/O error happened, or an edit could not be applied (the edited
           copy is kept and its place is printed)
  2        bad arguments or a bad config file
  3        refused here: loop guard (inside a qubes.OpenInVM session) or
           require_whonix_gateway
  4        qrexec-client-vm is missing or ended abnormally
  6        --convert: the conversion failed (the converter in the disposable
           failed, or what it sent back was refused); no output is left and
           the original is untouched
  64-75    dom0 refused or failed (see DESIGN.md; passed through unchanged)
  76, 77   dom0 refused a link in an offline profile (76), an app it does
           not allow (77)
  78       dom0 refused a conversion in a profile with a network
  125-127  qrexec failed (125), the policy denied the call (126), the service
           is not installed in dom0 (127)
  129/130/143  interrupted (SIGHUP/SIGINT/SIGTERM); the original files are
           untouched (an edit saved just before is reported as saved)
With several files, the status is that of the first file (in argument order)
that failed."""


def from_transport(code: int) -> int:
    """The CLI's code for what qrexec-client-vm returned."""
    if code == 0 or code in DOM0_CODES:
        return code
    return int(CliExit.TRANSPORT)
