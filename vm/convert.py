"""`whonix-open --convert`: one document to a trusted PDF through an offline
disposable (dom0's whonix.ConvertInDisposable+RESOLUTION+PROFILE, which runs the
disposable's stock qubes.PdfConvert server).

The stock client (qubespdfconverter.client) cannot be pointed at another
qrexec target: its command is a module constant and its argument is appended
to that constant on every run. So this is the client side of the protocol
(QUBES-FACTS.md "The qubes.PdfConvert protocol"), with every byte from the
disposable treated as hostile:

    caller -> server: the document, then EOF
    server -> caller: "PAGES\\n", then per page "WIDTH HEIGHT\\n" and exactly
                      WIDTH*HEIGHT*3 bytes of 8-bit RGB; then EOF

Only the numbers are parsed, each line against a fixed pattern within a fixed
length (pages 1..10000, sides 1..10000, as the stock client allows); pixels are
counted and compressed, never interpreted. Anything else - a malformed or
overlong line, a short page, a byte after the last page, a page count that
the pages do not match, silence for longer than the idle timeout - ends the
conversion: the qrexec call is closed (dom0 then destroys the disposable), the
half-written output is removed and the original is left as it was.

The output is written to a hidden ``.NAME.trusted.pdf.whonix-open-XXXXXXXX.part``
beside the original (private, locked; a killed run's is removed by
`whonix-open --recover`), then linked to NAME.trusted.pdf, which is never
overwritten. Its mode is the original's without execute bits. Only then is the
original moved to the archive directory (default ~/QubesUntrustedPDFs, as
qvm-convert-pdf), never over an archived file of the same name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from whonix_open.contract import SERVICE_CONVERT, Exit
from whonix_open.vm import editback, oserrors, transport
from whonix_open.vm.exitcodes import CliExit, from_transport
from whonix_open.vm.pdfwriter import PdfWriter
from whonix_open.vm.targets import Target, change_since

MAX_PAGES = 10000  # qubespdfconverter/client.py MAX_PAGES
MAX_SIDE = 10000  # ... MAX_IMG_WIDTH, MAX_IMG_HEIGHT
_COUNT_RE = re.compile(rb"([1-9][0-9]{0,4})\n")
_DIM_RE = re.compile(rb"([1-9][0-9]{0,4}) ([1-9][0-9]{0,4})\n")
_COUNT_MAX = len(b"10000\n")
_DIM_MAX = len(b"10000 10000\n")
CHUNK = 1 << 20  # pixels are read and compressed in pieces of this size
DEFAULT_TIMEOUT = 300.0  # seconds of silence from the disposable before giving up
TRUSTED_SUFFIX = ".trusted.pdf"
ARCHIVE_DIR = "QubesUntrustedPDFs"  # in $HOME, as qvm-convert-pdf
_EXIT_WAIT = 30.0  # seconds for dom0's exit code once the stream ended


class ConvertFailed(Exception):
    """The conversion failed; the message says why in words."""

    def __init__(self, message: str, code: int = CliExit.CONVERT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Stopped(Exception):
    """A signal arrived: stop, clean up, report."""


@dataclass
class Converted:
    output: str
    pages: int
    archived: str | None  # where the original is now (None: left in place)
    warning: str | None = None


def trusted_name(path: str) -> str:
    """NAME.trusted.pdf as qvm-convert-pdf names it (pathlib with_suffix)."""
    return str(Path(path).with_suffix(TRUSTED_SUFFIX))


def service_name(resolution: int, profile: str) -> str:
    return f"{SERVICE_CONVERT}+{resolution}+{profile}"


class _Stream:
    """Bounded, timed reads of the disposable's answer on a pipe."""

    def __init__(self, fd: int, timeout: float, stop: threading.Event) -> None:
        self.fd = fd
        self.timeout = timeout
        self.stop = stop
        self.received = 0

    def _read(self, size: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            if self.stop.is_set():
                raise Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConvertFailed(
                    f"the disposable sent nothing for {self.timeout:g} seconds "
                    "(a hung or very slow converter)")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                data = os.read(self.fd, size)
                self.received += len(data)
                return data

    def line(self, pattern: re.Pattern[bytes], limit: int, what: str) -> re.Match[bytes]:
        """One line, read byte by byte so that nothing after it is taken."""
        buf = b""
        while not buf.endswith(b"\n"):
            if len(buf) >= limit:
                raise ConvertFailed(f"the disposable sent an invalid {what} (too long)")
            byte = self._read(1)
            if not byte:
                raise EOFError(what)
            buf += byte
        match = pattern.fullmatch(buf)
        if match is None:
            raise ConvertFailed(f"the disposable sent an invalid {what}")
        return match

    def exactly(self, size: int, sink: Callable[[bytes], None]) -> None:
        while size:
            data = self._read(min(size, CHUNK))
            if not data:
                raise EOFError("page")
            sink(data)
            size -= len(data)

    def at_end(self) -> bool:
        return self._read(1) == b""


def _send(fd: int, pipe: int, failure: list[str]) -> None:
    """The document to the disposable (sendfile: constant memory), then EOF."""
    offset = 0
    try:
        while True:
            try:
                sent = os.sendfile(pipe, fd, offset, transport.CHUNK)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):  # no sendfile here
                    raise
                data = os.pread(fd, 1 << 16, offset)
                sent = os.write(pipe, data) if data else 0
            if sent == 0:
                break
            offset += sent
    except BrokenPipeError:
        failure.append("the disposable stopped reading the document")
    except OSError as exc:
        failure.append(f"the document could not be sent ({exc.strerror})")
    finally:
        os.close(pipe)


def _receive(stream: _Stream, writer: PdfWriter,
             progress: Callable[[int, int], None]) -> int:
    try:
        pages = int(stream.line(_COUNT_RE, _COUNT_MAX, "page count").group(1))
    except EOFError:
        raise _NoAnswer from None
    if pages > MAX_PAGES:
        raise ConvertFailed(f"the disposable announced {pages} pages (at most {MAX_PAGES})")
    progress(0, pages)
    for page in range(1, pages + 1):
        try:
            dims = stream.line(_DIM_RE, _DIM_MAX, f"size of page {page}")
        except EOFError:
            raise ConvertFailed(f"the disposable announced {pages} page"
                                f"{'s' if pages != 1 else ''} but sent {page - 1}") from None
        width, height = int(dims.group(1)), int(dims.group(2))
        if width > MAX_SIDE or height > MAX_SIDE:
            raise ConvertFailed(f"page {page} is {width}x{height} pixels, more than "
                                f"{MAX_SIDE} on a side")
        writer.begin_page(width, height)
        try:
            stream.exactly(width * height * 3, writer.add_pixels)
        except EOFError:
            raise ConvertFailed(f"page {page} was cut off (the converter stopped in "
                                "the middle of it)") from None
        writer.end_page()
        progress(page, pages)
    if not stream.at_end():
        raise ConvertFailed(f"the disposable sent more data after the last page "
                            f"(page {pages} of {pages})")
    return pages


class _NoAnswer(Exception):
    """The stream ended before a page count: dom0's code says why."""


def _wait(proc: subprocess.Popen[bytes], stop: threading.Event) -> int:
    deadline = time.monotonic() + _EXIT_WAIT
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(0.2)
        if stop.is_set():
            raise Stopped
        if time.monotonic() > deadline:
            raise ConvertFailed("dom0 did not report a result after the last page")


def _end_call(proc: subprocess.Popen[bytes]) -> None:
    """Close the call; dom0 sees the caller gone and destroys the disposable."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _dom0_failure(code: int, profile: str) -> ConvertFailed:
    from whonix_open.vm.messages import describe

    cli = from_transport(code)
    if cli == Exit.DISPOSABLE_FAILED:
        # The server's own failure (an unsupported or damaged file, LibreOffice
        # missing) reaches dom0 as its exit code, which dom0 answers with 69.
        return ConvertFailed(
            "the converter in the disposable failed: the file type is not supported "
            "(PDF; DOCX, ODT, ODS, XLSX where the disposable's template has "
            "LibreOffice), the file is damaged or password-protected, or the "
            "disposable could not be started (dom0 code 69)")
    if cli == CliExit.TRANSPORT:
        return ConvertFailed(f"qrexec-client-vm ended abnormally (code {code})", code=cli)
    text = describe(code, profile).replace("The file was NOT opened", "Nothing was converted")
    return ConvertFailed(text.rstrip("."), code=cli)


def convert(target: Target, *, resolution: int, profile: str, archive: str | None,
            timeout: float = DEFAULT_TIMEOUT, stop: threading.Event | None = None,
            progress: Callable[[int, int], None] = lambda done, total: None) -> Converted:
    """Convert one checked file; raise ConvertFailed (or Stopped) with the
    original untouched and no output left behind."""
    stop = stop or threading.Event()
    # Every step is relative to the original's directory as held open since the
    # check (issue 20): a folder swapped meanwhile cannot redirect a byte.
    out_name = trusted_name(target.name)
    output = os.path.join(target.directory, out_name)  # for messages
    if _exists_at(target.dir_fd, out_name):
        raise ConvertFailed(f"{output} already exists; nothing was overwritten",
                            code=CliExit.FILE_FAILED)
    try:
        part = editback.create_part_file(target, out_name)
    except OSError as exc:
        raise ConvertFailed(f"no trusted PDF can be written beside it: "
                            f"{oserrors.why(exc, target.directory)}",
                            code=CliExit.FILE_FAILED) from None
    try:
        pages = _run_call(target, part.fd, resolution, profile, timeout, stop, progress)
        os.fchmod(part.fd, target.st.st_mode & 0o666)
        os.fsync(part.fd)
        try:
            _place(part, out_name)  # never over a file that appeared meanwhile
        except FileExistsError:
            raise ConvertFailed(f"{output} appeared meanwhile; nothing was overwritten",
                                code=CliExit.FILE_FAILED) from None
        except OSError as exc:
            raise ConvertFailed(f"the trusted PDF could not be saved: "
                                f"{oserrors.why(exc, target.directory)}",
                                code=CliExit.FILE_FAILED) from None
    finally:
        part.discard()
    result = Converted(output=output, pages=pages, archived=None)
    changed = change_since(target) if archive is not None else None
    if changed is not None:
        result.warning = f"not archived: {changed}; it was left where it is"
    elif archive is not None:
        try:
            result.archived = archive_original(target, archive)
        except OSError as exc:
            result.warning = (f"the original could not be moved to {archive} "
                              f"({oserrors.why(exc, archive)}); it stays where it was")
    return result


def _run_call(target: Target, out_fd: int, resolution: int, profile: str, timeout: float,
              stop: threading.Event, progress: Callable[[int, int], None]) -> int:
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        send_read, send_write = os.pipe2(os.O_CLOEXEC)
        try:
            proc = transport.spawn(service_name(resolution, profile), stdin=send_read,
                                   stdout=write_end)
        finally:
            os.close(write_end)
            os.close(send_read)
    except transport.TransportError as exc:
        raise ConvertFailed(str(exc), code=CliExit.TRANSPORT) from None
    failure: list[str] = []
    sender = threading.Thread(target=_send, args=(target.fd, send_write, failure),
                              daemon=True)
    sender.start()
    stream = _Stream(read_end, timeout, stop)
    ended = False
    try:
        with os.fdopen(os.dup(out_fd), "wb", buffering=CHUNK) as out:
            writer = PdfWriter(out, resolution)
            try:
                pages = _receive(stream, writer, progress)
            except _NoAnswer:
                code = _wait(proc, stop)
                ended = True
                if code == 0:
                    raise ConvertFailed("the disposable sent no pages") from None
                raise _dom0_failure(code, profile) from None
            writer.close()
        code = _wait(proc, stop)
        ended = True
        if code != 0:
            raise _dom0_failure(code, profile)
        if failure:
            raise ConvertFailed(failure[0])
        return pages
    finally:
        os.close(read_end)  # first: a dom0 service still writing sees us gone
        if not ended:
            _end_call(proc)
        sender.join(5)


# link() refused by the file system itself (FAT on a USB stick has no hard links)
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK)


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _place(part: editback.ReplyFile, name: str) -> None:
    """Give the finished .part file the *name* (in its directory), which must
    not exist: a hard link (then the .part name goes in `discard`); where the
    file system has none, the name is claimed with O_EXCL and the .part file
    renamed over that claim."""
    at = part.dir_fd
    try:
        os.link(part.name, name, src_dir_fd=at, dst_dir_fd=at, follow_symlinks=False)
        return
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(name, flags, 0o600, dir_fd=at))
    try:
        os.rename(part.name, name, src_dir_fd=at, dst_dir_fd=at)
    except OSError:
        os.unlink(name, dir_fd=at)
        raise
    # part.name now names nothing: discard() removes nothing but closes it


def archive_original(target: Target, archive: str) -> str:
    """Move the original into *archive* (created private if missing) under a
    name no archived file has; return where it is now."""
    os.makedirs(archive, mode=0o700, exist_ok=True)
    base = Path(target.name)
    for attempt in range(1000):
        name = base.name if attempt == 0 else f"{base.stem}.{attempt}{base.suffix}"
        dest = os.path.join(archive, name)
        try:
            os.link(target.name, dest, src_dir_fd=target.dir_fd, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno != errno.EXDEV and exc.errno not in _NO_LINKS:
                raise  # else another file system, or one without links: copy
            try:
                _copy_new(target, dest)
            except FileExistsError:
                continue
        os.unlink(target.name, dir_fd=target.dir_fd)
        return dest
    raise FileExistsError(errno.EEXIST, "no free name in the archive directory")


def _copy_new(target: Target, dest: str) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 target.st.st_mode & 0o777)
    try:
        src_fd = os.open(target.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=target.dir_fd)
        with os.fdopen(src_fd, "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        os.unlink(dest)
        raise
    finally:
        os.close(fd)


def default_archive() -> str:
    return os.path.join(os.path.expanduser("~"), ARCHIVE_DIR)
