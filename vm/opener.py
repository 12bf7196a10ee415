"""Opening one file in a disposable and deciding what happens to the reply.

The rule that matters: the original is replaced only after dom0 exit 0, a
completely sent file, a non-empty reply and no interruption; every other
non-empty reply is kept (editback.keep) and the user told where. Every message
is whole sentences in words: no exception repr reaches the user.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from whonix_open.contract import Exit
from whonix_open.vm import editback, oserrors, replycap, transport
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


class Unexpected(Exception):
    """A bug while deciding about a reply; *kept* is where the reply was
    rescued to (None: there was none, or it could not be kept)."""

    def __init__(self, kept: str | None) -> None:
        super().__init__("unexpected error")
        self.kept = kept


def _rescue(target: Target, reply: editback.ReplyFile | None) -> str | None:
    """After a bug: keep a reply that is still ours (never delete it)."""
    try:
        if reply is None or reply.fd < 0 or reply.size() == 0:
            return None
        return editback.keep(reply, os.path.basename(target.path))
    except Exception:  # noqa: BLE001 - already failing; the caller reports it
        return None


def open_file(
    target: Target,
    service: str,
    profile: str | None,
    view_only: bool,
    session: Session,
    max_reply: int | None = None,
) -> Outcome:
    """Open *target* through *service*; never raises for a per-file failure.
    *max_reply*: the explicit reply cap in bytes (None: the default)."""
    arg = target.arg
    try:
        reply = None if view_only else editback.create_reply_file(target)
    except OSError as exc:
        target.close()
        return Outcome(
            arg,
            CliExit.FILE_FAILED,
            f"{arg}: not opened: there is nowhere to receive the edits "
            f"({oserrors.why(exc, target.directory)}).",
        )
    cap = None
    if reply is not None:
        limit = replycap.default_limit(target.size) if max_reply is None else max_reply
        cap = replycap.ReplyCap(reply.fd, limit, explicit=max_reply is not None)
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
            cap=cap,
        )
    except transport.TransportError as exc:
        target.close()
        if reply is not None:
            reply.discard()
        return Outcome(arg, CliExit.TRANSPORT, f"{arg}: {exc}.")
    except OSError as exc:  # e.g. the disk filled up while receiving
        target.close()
        why = oserrors.why(exc, None if reply is None else reply.directory)
        text = f"{arg}: receiving the edited file failed: {why}. The original is unchanged."
        return _kept_outcome(target, reply, CliExit.FILE_FAILED, text, partial=True)
    try:
        if transfer.too_large is not None and reply is not None:
            return _too_large(arg, transfer, reply)
        if view_only:
            return _view_outcome(arg, transfer, profile, session)
        if reply is None:
            raise RuntimeError("edit mode without a reply file")
        return _edit_outcome(target, transfer, reply, profile, session)
    except Exception as exc:
        raise Unexpected(_rescue(target, reply)) from exc
    finally:
        # A writer left blocked after an interruption still reads this fd:
        # closing it could hand its number to another file. Exit closes it.
        # Otherwise it stays open until here: apply() locks the original by it.
        if not transfer.sender_running:
            target.close()
        target.close_dir()


def _too_large(arg: str, transfer: transport.Transfer, reply: editback.ReplyFile) -> Outcome:
    """Cut off at the cap: all of it goes (it may be the very file that would
    fill the disk); the session was ended, so dom0 kills the disposable."""
    reply.discard()
    return Outcome(
        arg,
        CliExit.REPLY_TOO_LARGE,
        f"{arg}: NOT saved: the disposable sent back {transfer.too_large}. "
        "whonix-open stopped reading, removed everything it had received and "
        "ended the session (dom0 destroys the disposable); the original is unchanged.",
    )


def _view_outcome(
    arg: str, transfer: transport.Transfer, profile: str | None, session: Session
) -> Outcome:
    code = transfer.returncode or 0
    if session.cancelled.is_set():
        return Outcome(arg, session.interrupted_code, f"{arg}: interrupted.")
    if code != 0:
        return Outcome(arg, from_transport(code), f"{arg}: {describe(code, profile)}")
    if not transfer.send_complete:
        return Outcome(arg, CliExit.FILE_FAILED, f"{arg}: {transfer.send_error}.")
    return Outcome(arg, CliExit.OK, f"{arg}: viewed in a disposable (view-only) and closed.")


def _kept_outcome(
    target: Target,
    reply: editback.ReplyFile | None,
    code: int,
    text: str,
    *,
    partial: bool,
    note: str | None = None,
) -> Outcome:
    """*text* (whole sentences), plus where the reply that came back is now:
    kept under its documented name, or why it could not be. *note* replaces
    the standard sentence about the kept copy ({path} in it)."""
    if reply is None:
        return Outcome(target.arg, code, text)
    if reply.size() == 0:
        reply.discard()
        return Outcome(target.arg, code, text)
    try:
        kept = editback.keep(reply, os.path.basename(target.path))
    except editback.KeepError as exc:
        return Outcome(target.arg, code, f"{text} What the disposable sent back is lost: {exc}.")
    if note is None:
        what = "What the disposable sent back" + (" (possibly incomplete)" if partial else "")
        note = f" {what} is kept at {{path}}."
    return Outcome(target.arg, code, text + note.format(path=kept), kept)


# What a dom0 failure code means for a reply that came with it (the reply is
# never applied then). Each is a sentence that follows dom0's message.
_REPLY_WITH_CODE = {
    Exit.NETVM_CHANGED: (
        " The original is unchanged: the network changed, so the edited version the "
        "disposable had sent back is kept at {path} and NOT applied (it is cut short "
        "if the change came before the file was closed in the disposable)."
    ),
    Exit.SESSION_EXPIRED: (
        " The original is unchanged: the session lifetime was reached, so the edited "
        "version the disposable had sent back is kept at {path} and NOT applied (it is "
        "cut short if dom0 closed the disposable while it was sending)."
    ),
    Exit.CALLER_SILENT: (
        " The original is unchanged. dom0 created no disposable, yet something came "
        "back: it is kept at {path} and NOT applied."
    ),
}

_REPLY_WITH_OTHER_CODE = (
    " The original is unchanged; what the disposable sent back (possibly incomplete) "
    "is kept at {path}."
)


def _edit_outcome(
    target: Target,
    transfer: transport.Transfer,
    reply: editback.ReplyFile,
    profile: str | None,
    session: Session,
) -> Outcome:
    arg = target.arg
    code = transfer.returncode or 0
    if session.cancelled.is_set():
        return _kept_outcome(
            target, reply, session.interrupted_code,
            f"{arg}: interrupted; the original is unchanged.", partial=True,
        )
    if code != 0:
        return _kept_outcome(
            target, reply, from_transport(code), f"{arg}: {describe(code, profile)}",
            partial=True, note=_REPLY_WITH_CODE.get(code, _REPLY_WITH_OTHER_CODE),
        )
    if not transfer.send_complete:
        return _kept_outcome(
            target, reply, CliExit.FILE_FAILED,
            f"{arg}: {transfer.send_error}; the original is unchanged.", partial=True,
        )
    if reply.size() == 0:
        reply.discard()
        return Outcome(arg, CliExit.OK, f"{arg}: closed in the disposable, unchanged.")
    try:
        editback.mark_complete(reply)
        editback.apply(target, reply, stop=session.cancelled)
    except (editback.ApplyError, OSError) as exc:
        why = str(exc) if isinstance(exc, editback.ApplyError) else oserrors.why(exc)
        return _kept_outcome(
            target, reply, CliExit.FILE_FAILED,
            f"{arg}: the edits could not be saved: {why}.", partial=False,
            note=" Nothing was replaced; the edited file is kept at {path}.",
        )
    text = f"{arg}: edited in a disposable; changes saved."
    now = os.path.join(target.directory, target.name)
    if now != target.path:
        text += (f" They are in {now}: its folder was moved or replaced while the file "
                 f"was open, and {target.path} is no longer that file.")
    return Outcome(arg, CliExit.OK, text)
