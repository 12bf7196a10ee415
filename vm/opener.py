"""Opening one file in a disposable and deciding what happens to the reply.

The rule that matters: the original is replaced only after dom0 exit 0, a
completely sent file, a non-empty reply and no interruption; every other
non-empty reply is kept (editback.keep) and the user told where.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from whonix_open.vm import editback, transport
from whonix_open.vm.exitcodes import CliExit, from_transport
from whonix_open.vm.header import build_header
from whonix_open.vm.messages import describe
from whonix_open.vm.targets import Target


@dataclass
class Outcome:
    arg: str
    code: int  # the CLI's exit code for this file
    message: str
    kept: str | None = None  # where an unapplied reply was kept

    @property
    def ok(self) -> bool:
        return self.code == CliExit.OK


class Session:
    """What all concurrent opens of one run share: the live transfers (so a
    signal can stop them) and the interruption flag."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.signum: int | None = None
        # Taken once, never released: only the first signal acts. A signal
        # handler can interrupt another one in the main thread, so cancel()
        # never blocks on a lock (it used to, and a burst of signals hung it).
        self._first = threading.Lock()
        self._lock = threading.Lock()
        self._transfers: list[transport.Transfer] = []

    def register(self, transfer: transport.Transfer) -> None:
        with self._lock:
            self._transfers.append(transfer)
        if self.cancelled.is_set():
            transfer.terminate()

    def transfers(self) -> list[transport.Transfer]:
        with self._lock:
            return list(self._transfers)

    def cancel(self, signum: int) -> None:
        """Stop every transfer; safe to re-enter from a signal handler (only
        the first call acts, later ones return at once)."""
        if not self._first.acquire(blocking=False):
            return
        self.signum = signum
        self.cancelled.set()
        # No lock: the main thread may hold self._lock when the signal comes.
        # list() of a list is atomic; register() checks `cancelled` after
        # appending, so a transfer is either seen here or terminates itself.
        transfers = list(self._transfers)
        for transfer in transfers:
            transfer.terminate()

    @property
    def interrupted_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


def _kept_note(path: str) -> str:
    return f"what the disposable sent back (possibly incomplete) was kept at {path}"


def open_file(
    target: Target, service: str, profile: str | None, view_only: bool, session: Session
) -> Outcome:
    """Open *target* through *service*; never raises for a per-file failure."""
    arg = target.arg
    try:
        reply = None if view_only else editback.create_reply_file(target)
    except OSError as exc:
        target.close()
        return Outcome(arg, CliExit.FILE_FAILED, f"{arg}: nowhere to receive edits: {exc}")
    transfer = None
    try:
        transfer = transport.open_in_disposable(
            service,
            build_header(arg, view_only),
            target.fd,
            target.size,
            None if reply is None else reply.fd,
            on_start=session.register,
            label=os.path.basename(arg),
            stop=session.cancelled,
        )
    except transport.TransportError as exc:
        if reply is not None:
            reply.discard()
        return Outcome(arg, CliExit.TRANSPORT, f"{arg}: {exc}")
    except OSError as exc:  # e.g. the disk filled up while receiving
        kept = editback.keep(target, reply) if reply and reply.size() else None
        if reply is not None and kept is None:
            reply.discard()
        note = f"; {_kept_note(kept)}" if kept else ""
        return Outcome(arg, CliExit.FILE_FAILED, f"{arg}: receiving failed: {exc}{note}", kept)
    finally:
        # A writer left blocked after an interruption still reads this fd:
        # closing it could hand its number to another file. Exit closes it.
        if transfer is None or not transfer.sender_running:
            target.close()
    if view_only:
        return _view_outcome(arg, transfer, profile, session)
    if reply is None:
        raise RuntimeError("edit mode without a reply file")
    return _edit_outcome(target, transfer, reply, profile, session)


def _view_outcome(
    arg: str, transfer: transport.Transfer, profile: str | None, session: Session
) -> Outcome:
    code = transfer.returncode or 0
    if session.cancelled.is_set():
        return Outcome(arg, session.interrupted_code, f"{arg}: interrupted")
    if code != 0:
        return Outcome(arg, from_transport(code), f"{arg}: {describe(code, profile)}")
    if not transfer.send_complete:
        return Outcome(arg, CliExit.FILE_FAILED, f"{arg}: {transfer.send_error}")
    return Outcome(arg, CliExit.OK, f"{arg}: viewed in a disposable (view-only) and closed")


def _edit_outcome(
    target: Target,
    transfer: transport.Transfer,
    reply: editback.ReplyFile,
    profile: str | None,
    session: Session,
) -> Outcome:
    arg = target.arg
    code = transfer.returncode or 0
    size = reply.size()
    if size == 0:
        reply.discard()
    if session.cancelled.is_set():
        kept = editback.keep(target, reply) if size else None
        note = f"; the original is unchanged; {_kept_note(kept)}" if kept else ""
        return Outcome(arg, session.interrupted_code, f"{arg}: interrupted{note}", kept)
    if code != 0:
        kept = editback.keep(target, reply) if size else None
        note = f" The original is unchanged; {_kept_note(kept)}." if kept else ""
        return Outcome(arg, from_transport(code), f"{arg}: {describe(code, profile)}{note}", kept)
    if not transfer.send_complete:
        kept = editback.keep(target, reply) if size else None
        note = f"; {_kept_note(kept)}" if kept else ""
        return Outcome(
            arg,
            CliExit.FILE_FAILED,
            f"{arg}: {transfer.send_error}; the original is unchanged{note}",
            kept,
        )
    if size == 0:
        return Outcome(arg, CliExit.OK, f"{arg}: closed in the disposable, unchanged")
    if session.cancelled.is_set():
        kept = editback.keep(target, reply)
        return Outcome(
            arg,
            session.interrupted_code,
            f"{arg}: interrupted; the original is unchanged; the edited file is at {kept}",
            kept,
        )
    try:
        editback.apply(target, reply)
    except (editback.ApplyError, OSError) as exc:
        kept = editback.keep(target, reply)
        return Outcome(
            arg,
            CliExit.FILE_FAILED,
            f"{arg}: the edits could not be saved ({exc}); the original is "
            f"unchanged and the edited file is at {kept}",
            kept,
        )
    return Outcome(arg, CliExit.OK, f"{arg}: edited in a disposable; changes saved")
