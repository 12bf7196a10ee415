"""The exit codes of the `whonix-open` command itself.

dom0's and qrexec's codes (64-79, 125-127; whonix_open.contract.Exit) are passed
through unchanged, so a script sees exactly what dom0 decided. The CLI adds its
own codes below them for what happens in this qube.
"""

from __future__ import annotations

import enum

from whonix_open.contract import SUMMARY, Exit


class CliExit(enum.IntEnum):
    OK = 0
    FILE_FAILED = 1  # refused locally, I/O error, or the edit could not be applied
    USAGE = 2  # bad arguments or a bad config file
    REFUSED_LOCALLY = 3  # loop guard or require_whonix_gateway said no
    TRANSPORT = 4  # qrexec-client-vm missing, killed, or an unknown exit code
    REPLY_TOO_LARGE = 5  # the disposable sent back more than the reply cap
    CONVERT_FAILED = 6  # --convert: the disposable's answer was refused, or its converter failed
    INTERRUPTED_HUP = 129  # SIGHUP (128 + 1)
    INTERRUPTED_INT = 130  # SIGINT (128 + 2)
    INTERRUPTED_TERM = 143  # SIGTERM (128 + 15)


DOM0_CODES = frozenset(int(code) for code in Exit if code != Exit.OK)

def _dom0_lines() -> str:
    """One line per dom0 and qrexec code, from the contract's own words."""
    return "\n".join(f"  {int(code):<8} {SUMMARY.get(code, 'see the message')}"
                     for code in Exit if code != Exit.OK)


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
  5        the disposable sent back more than the reply cap (--max-reply,
           max_reply_size, or the free space): nothing of it was kept and
           the original is unchanged
  6        --convert: the conversion failed (the converter in the disposable
           failed, or what it sent back was refused); no output is left and
           the original is untouched
  129/130/143  interrupted (SIGHUP/SIGINT/SIGTERM); the original files are
           untouched (an edit saved just before is reported as saved)
dom0's codes (64 and up) and qrexec's (125-127) are passed through unchanged;
whonix-open says in words what each one means when it happens:
""" + _dom0_lines() + """
With several files, the status is that of the first file (in argument order)
that failed."""


def from_transport(code: int) -> int:
    """The CLI's code for what qrexec-client-vm returned."""
    if code == 0 or code in DOM0_CODES:
        return code
    return int(CliExit.TRANSPORT)
