"""The one exception type the broker's steps raise to refuse a request."""

from __future__ import annotations

from whonix_open.contract import Exit


class Refusal(Exception):
    """Stop the request with this exit code. *reason* goes to the dom0 log; it
    must hold only validated names, never caller-supplied free text."""

    def __init__(self, code: Exit, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
