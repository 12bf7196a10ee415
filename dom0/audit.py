"""One audit line per request, to the system log (journal) and to stderr
(which qrexec writes to /var/log/qubes/qrexec.<caller>.log). Never file names
or contents: dom0 never sees them."""

from __future__ import annotations

import sys
import syslog
import time

IDENT = "whonix-open"


def log_line(message: str, priority: int = syslog.LOG_INFO) -> None:
    """*message* must hold only validated names and numbers."""
    syslog.openlog(IDENT, syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(priority, message)
    print(f"{IDENT}: {message}", file=sys.stderr, flush=True)


class AuditRecord:
    """What one request did, filled in as it goes; `emit` writes the line."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.caller = self.profile = self.dvm = self.disposable = self.network = "-"
        self.relay = "-"  # the service called in the disposable (validated names only)
        self.started = time.monotonic()

    def emit(self, code: int) -> str:
        line = (f"caller={self.caller} service={self.service} profile={self.profile} "
                f"relay={self.relay} dvm={self.dvm} disposable={self.disposable} "
                f"network={self.network} "
                f"exit={code} duration={time.monotonic() - self.started:.2f}s")
        log_line(line, syslog.LOG_INFO if code == 0 else syslog.LOG_WARNING)
        return line
