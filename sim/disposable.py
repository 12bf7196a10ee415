"""The disposable side of qubes.OpenInVM, as the real vm-file-editor does it
(and of qubes.OpenURL and qubes.StartApp, see `run_url` and `run_app`; and
qubes.PdfConvert: the real upstream server, or a hostile one, `run_convert`).

    python -m whonix_open.sim.disposable --sim-dir D --qube NAME --caller dom0

stdin/stdout are the qrexec stream. Steps (qubes-core-agent-linux
vm-file-editor.c; QUBES-FACTS.md "The qubes.OpenInVM byte protocol"):

1. read the fixed 256-byte header (short read: exit 1); the name ends at the
   first NUL (byte 255 is forced to NUL); a leading `view-only-` means
   view-only and is not part of the name;
2. refuse a name with `/`, replace every byte outside [0-9A-Za-z._+@-] by `_`;
3. store the rest of the stream in <D>/disposables/<qube>/<caller>-XXXXXXXX/NAME
   (0400 when view-only) and record name, view_only, size, sha256 in the state;
4. "open" it as the fault knob disposable_behaviour says (edit, noop, hang,
   cat, partial_reply, fail); netvm_change_to switches this qube's netvm first
   and then hangs;
5. if the whole-second mtime changed, send the whole file back (view-only
   too: discarding it is dom0's job), then exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from whonix_open.dom0.backend import BackendError
from whonix_open.openinvm import HEADER_SIZE, VIEW_ONLY_PREFIX
from whonix_open.sim import qubesd
from whonix_open.sim.state import SimState, StateError

CHUNK = 1 << 16
# What an "edit" appends: tests compare the reply with original + EDIT_SUFFIX.
EDIT_SUFFIX = b"\n[edited in the simulated disposable]\n"
SAFE_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._+@-")
_SANITISE = bytes(c if c in SAFE_BYTES else ord("_") for c in range(256))


class BadHeader(ValueError):
    pass


def parse_header(header: bytes) -> tuple[str, bool]:
    """(file name, view_only) from the 256-byte header, sanitised."""
    if len(header) != HEADER_SIZE:
        raise BadHeader("short header")
    raw = header[:HEADER_SIZE - 1].split(b"\0", 1)[0]
    view_only = raw.startswith(VIEW_ONLY_PREFIX)
    if view_only:
        raw = raw[len(VIEW_ONLY_PREFIX):]
    if b"/" in raw:
        raise BadHeader("file name contains /")
    name = raw.translate(_SANITISE).decode("ascii")
    if name in ("", ".", ".."):
        raise BadHeader("empty file name")
    return name, view_only


def _read_exact(fd: int, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = os.read(fd, size - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _receive(path: Path) -> tuple[int, str]:
    """Copy the rest of stdin into a new file; (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        while chunk := os.read(0, CHUNK):
            os.write(fd, chunk)  # a local file: short writes do not happen here
            digest.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def _edit(path: Path, view_only: bool) -> None:
    """What a user saving in the viewer does; the mtime moves by whole seconds,
    since vm-file-editor compares whole-second mtimes."""
    before = os.stat(path).st_mtime_ns
    if view_only:
        os.chmod(path, 0o600)  # the viewer's owner can always do this
    with open(path, "ab") as f:
        f.write(EDIT_SUFFIX)
    if view_only:
        os.chmod(path, 0o400)
    later = (before // 1_000_000_000 + 2) * 1_000_000_000
    os.utime(path, ns=(later, later))


def _send_back(path: Path, limit: int | None = None) -> int:
    """Write the file (or its first *limit* bytes) to stdout; bytes sent."""
    sent = 0
    with open(path, "rb") as f:
        while limit is None or sent < limit:
            chunk = f.read(CHUNK if limit is None else min(CHUNK, limit - sent))
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                n = os.write(1, view)
                view = view[n:]
            sent += len(chunk)
    return sent


def _hang() -> None:
    while True:  # until killed, like a viewer nobody closes
        signal.pause()


def _record(state: SimState, entry: dict[str, Any]) -> None:
    with state.transaction() as st:
        st["received"].append(entry)


def _note_reply(state: SimState, pid: int, sent: int) -> None:
    with state.transaction() as st:
        for entry in st["received"]:
            if entry["pid"] == pid:
                entry["replied"] = sent


def _change_netvm(state: SimState, qube: str, netvm: str) -> None:
    """What an administrator's qvm-prefs in dom0 would do mid-session: an
    admin.vm.property.Set through the qubesd model (refusals are ignored)."""
    from whonix_open.sim.backend import call_logged

    with contextlib.suppress(BackendError):
        call_logged(state, qubesd.Call("admin.vm.property.Set", "dom0", qube, "netvm",
                                       netvm.encode("ascii")))


def _valid_caller(caller: str) -> bool:
    # vm-file-editor's get_directory() rules for QREXEC_REMOTE_DOMAIN.
    return caller not in ("", ".", "..") and "/" not in caller


# What qubes.OpenURL accepts (qubes-core-agent-linux qubes-rpc/qubes.OpenURL:
# a shell `case` on the line read, case-sensitive).
URL_PREFIXES = ("http://", "https://", "ftp://")
URL_READ_LIMIT = 1 << 20  # the real `read` has none; the simulation stops here
# Desktop files a Whonix-Workstation disposable has (Tor Browser, the Qubes
# agent's "Run Terminal", a file manager, systemcheck).
WHONIX_WS_APPS = frozenset({"janondisttorbrowser", "qubes-run-terminal", "thunar",
                            "systemcheck", "anondist-torbrowser_update"})


def _shell_read_line(fd: int) -> str:
    """What `read url` (POSIX sh, no -r) leaves in $url: one line; a backslash
    escapes the next character (backslash-newline continues the line); leading
    and trailing blanks go."""
    out = bytearray()
    escaped = False
    while len(out) < URL_READ_LIMIT:
        byte = os.read(fd, 1)
        if not byte:
            break
        if escaped:
            escaped = False
            if byte != b"\n":
                out += byte
            continue
        if byte == b"\\":
            escaped = True
            continue
        if byte == b"\n":
            break
        out += byte
    return out.decode("utf-8", errors="surrogateescape").strip(" \t")


def _launched(state: SimState, entry: dict[str, Any], behaviour: str) -> None:
    # The user may close the app as soon as the launch is recorded: the
    # SIGUSR1 handler must be there first (else SIGUSR1 kills it: exit 246).
    if behaviour == "hang":
        signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0))
    with state.transaction() as st:
        st.setdefault("launched", []).append(entry)


def _like_an_app(behaviour: str) -> int:
    """An opened browser or app: runs until closed. With "hang" it stays open
    until killed, or until SIGUSR1 (the user closes it: exit 0)."""
    if behaviour == "hang":
        _hang()
    return 1 if behaviour == "fail" else 0


def run_url(state: SimState, qube: str, behaviour: str) -> int:
    """qubes.OpenURL: read one line; only http/https/ftp URLs are passed to
    qubes-open (mimeopen -n, i.e. the browser, which runs until closed)."""
    url = _shell_read_line(0)
    if not url.startswith(URL_PREFIXES):
        print("Invalid URL", file=sys.stderr)
        return 1
    _launched(state, {"qube": qube, "kind": "url", "url": url, "pid": os.getpid()}, behaviour)
    return _like_an_app(behaviour)


def run_app(state: SimState, qube: str, argument: str, behaviour: str) -> int:
    """qubes.StartApp+ID: ID (".desktop" added once) must be an installed
    desktop file; qubes-desktop-run starts it and waits for it (qubesagent
    xdg.launch, wait=True). stdin is not read."""
    if not argument:
        print("This service requires an argument", file=sys.stderr)
        return 1
    basename = argument.removesuffix(".desktop") + ".desktop"
    if basename.removesuffix(".desktop") not in WHONIX_WS_APPS:
        print(f"applications/{basename} not found", file=sys.stderr)
        return 1
    st = os.fstat(0)
    devnull = os.stat(os.devnull)
    _launched(state, {"qube": qube, "kind": "app", "app": basename, "pid": os.getpid(),
                      "stdin_is_devnull": (st.st_rdev, st.st_ino) == (devnull.st_rdev,
                                                                     devnull.st_ino)},
              behaviour)
    return _like_an_app(behaviour)


# A hostile qubes.PdfConvert: what a disposable whose renderer was exploited
# could send instead of "PAGES\n" and per page "W H\n" + W*H*3 bytes.
_PAGE = b"4 2\n" + bytes(range(24))  # one well-formed 4x2 page
HOSTILE_CONVERTERS: dict[str, tuple[bytes, int, bool]] = {
    # name: (what is sent, exit code, hang after sending)
    "oversize": (b"1\n10001 2\n" + b"\0" * 60006, 0, False),
    "short": (b"1\n" + _PAGE[:-1], 0, False),
    "extra": (b"1\n" + _PAGE + b"%PDF-1.4 more", 0, False),
    "lying_count": (b"3\n" + _PAGE + _PAGE, 0, False),
    "hang": (b"2\n" + _PAGE, 0, True),
    "exit_mid_page": (b"2\n" + _PAGE + _PAGE[:10], 1, False),
    "bad_count": (b"0x1\n" + _PAGE, 0, False),
    "bad_dimensions": (b"1\n4 +2\n" + bytes(24), 0, False),
    "endless_line": (b"7" * (1 << 20), 0, False),
}


def run_convert(argument: str, converter: str, sim_dir: str = ".") -> int:
    """qubes.PdfConvert+RESOLUTION. "real": the unmodified upstream server,
    as the template's /etc/qubes-rpc/qubes.PdfConvert runs it (argument:
    the resolution); else a hostile server, which reads the document first,
    as the real one does."""
    if converter == "real":
        argv = [sys.executable, "-m", "qubespdfconverter.server"]
        os.execv(sys.executable, argv + ([argument] if argument else []))  # noqa: S606
    while os.read(0, CHUNK):
        pass
    if converter == "held":  # a slow, well-behaved server: tests act meanwhile
        release = Path(sim_dir) / "release"
        for _ in range(6000):
            if release.exists():
                break
            time.sleep(0.01)
        data, code, hang = b"1\n" + _PAGE, 0, False
    else:
        data, code, hang = HOSTILE_CONVERTERS[converter]
    with contextlib.suppress(BrokenPipeError):
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
    if hang:
        _hang()
    return code


def run(sim_dir: str, qube: str, caller: str, service: str) -> int:
    name, _, argument = service.partition("+")
    if name == "qubes.PdfConvert":
        try:
            converter = SimState(sim_dir).read()["faults"].get("converter", "real")
        except StateError as e:
            print(f"sim: {e}", file=sys.stderr)
            return 1
        return run_convert(argument, converter, sim_dir)
    if name in ("qubes.OpenURL", "qubes.StartApp"):
        state = SimState(sim_dir)
        try:
            behaviour = state.read()["faults"].get("disposable_behaviour", "edit")
        except StateError as e:
            print(f"sim: {e}", file=sys.stderr)
            return 1
        if name == "qubes.OpenURL":
            return run_url(state, qube, behaviour)
        return run_app(state, qube, argument, behaviour)
    if service != "qubes.OpenInVM":
        print(f"sim: service {service} does not exist in {qube}", file=sys.stderr)
        return 127
    if not _valid_caller(caller):
        print("invalid remote domain name", file=sys.stderr)
        return 1
    state = SimState(sim_dir)
    try:
        faults = state.read()["faults"]
    except StateError as e:
        print(f"sim: {e}", file=sys.stderr)
        return 1
    behaviour = faults.get("disposable_behaviour", "edit")
    if behaviour == "cat":
        # Throughput benchmarks: echo the stream. A fixed program, no caller data.
        os.execvp("cat", ["cat"])  # noqa: S606

    try:
        name, view_only = parse_header(_read_exact(0, HEADER_SIZE))
    except BadHeader as e:
        print(f"sim: {e}", file=sys.stderr)
        return 1
    base = Path(sim_dir) / "disposables" / qube
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{caller}-", dir=base)) / name
    size, sha = _receive(path)
    if view_only:
        os.chmod(path, 0o400)
    before = int(os.stat(path).st_mtime)
    _record(state, {"qube": qube, "caller": caller, "name": name, "view_only": view_only,
                    "size": size, "sha256": sha, "pid": os.getpid(), "path": str(path),
                    "replied": None})

    if faults.get("netvm_change_to") is not None:
        _change_netvm(state, qube, faults["netvm_change_to"])
        _hang()
    if behaviour == "hang":
        _hang()
    if behaviour == "fail":
        return 1
    if behaviour in ("edit", "partial_reply"):
        _edit(path, view_only)
    if behaviour == "partial_reply":
        sent = _send_back(path, os.stat(path).st_size // 2)
        _note_reply(state, os.getpid(), sent)
        return 1

    if int(os.stat(path).st_mtime) != before:
        sent = _send_back(path)
        _note_reply(state, os.getpid(), sent)
    os.close(1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whonix_open.sim.disposable")
    parser.add_argument("--sim-dir", required=True)
    parser.add_argument("--qube", required=True)
    parser.add_argument("--caller", default="dom0")
    parser.add_argument("--service", default="qubes.OpenInVM")
    args = parser.parse_args(argv)
    try:
        return run(args.sim_dir, args.qube, args.caller, args.service)
    except BrokenPipeError:
        # The other end went away mid-reply; stop quietly, as the C one does.
        with contextlib.suppress(OSError):
            os.close(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
