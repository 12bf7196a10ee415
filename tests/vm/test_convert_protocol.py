"""The client side of qubes.PdfConvert (vm/convert.py) against bytes a hostile
disposable may send, and the CLI's --convert usage rules. The end-to-end path
with the real server is tests/vm/test_convert_e2e.py."""

from __future__ import annotations

import io
import os
import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whonix_open.vm.convert import ConvertFailed, _NoAnswer, _receive, _Stream
from whonix_open.vm.pdfwriter import PdfWriter

PAGE = b"4 2\n" + bytes(range(24))


def receive(data: bytes, timeout: float = 5) -> tuple[int, bytes]:
    r, w = os.pipe()
    threading.Thread(target=lambda: (os.write(w, data) if data else None, os.close(w)),
                     daemon=True).start()
    out = io.BytesIO()
    try:
        writer = PdfWriter(out, 300)
        pages = _receive(_Stream(r, timeout, threading.Event()), writer, lambda a, b: None)
        writer.close()
        return pages, out.getvalue()
    finally:
        os.close(r)


def test_well_formed_pages_are_accepted():
    pages, pdf = receive(b"2\n" + PAGE + PAGE)
    assert pages == 2 and pdf.startswith(b"%PDF-1.4") and pdf.endswith(b"%%EOF\n")


@pytest.mark.parametrize(("data", "why"), [
    (b"1\n" + PAGE + b"x", "more data after the last page"),
    (b"2\n" + PAGE, "announced 2 pages but sent 1"),
    (b"1\n" + PAGE[:-1], "page 1 was cut off"),
    (b"1\n10001 1\n", "more than 10000 on a side"),
    (b"1\n1 10001\n", "more than 10000 on a side"),
    (b"10001\n", "announced 10001 pages (at most 10000)"),
    (b"0\n", "invalid page count"),
    (b"01\n" + PAGE, "invalid page count"),
    (b" 1\n" + PAGE, "invalid page count"),
    (b"+1\n" + PAGE, "invalid page count"),
    (b"1\r\n" + PAGE, "invalid page count"),
    (b"100000\n", "invalid page count (too long)"),
    (b"1\n4  2\n", "invalid size of page 1"),
    (b"1\n4 2 \n", "invalid size of page 1"),
    (b"1\n0 2\n", "invalid size of page 1"),
    (b"1\n-4 2\n", "invalid size of page 1"),
    (b"1\n4x2\n", "invalid size of page 1"),
    (b"1\n" + b"9" * 100, "invalid size of page 1 (too long)"),
])
def test_anything_else_is_refused_with_a_reason(data, why):
    with pytest.raises(ConvertFailed, match=re.escape(why)):
        receive(data)


def test_nothing_at_all_is_left_to_dom0s_exit_code():
    with pytest.raises(_NoAnswer):
        receive(b"")


def test_silence_ends_it():
    r, w = os.pipe()
    os.write(w, b"1\n")
    try:
        with pytest.raises(ConvertFailed, match=r"sent nothing for 0\.3 seconds"):
            _receive(_Stream(r, 0.3, threading.Event()), PdfWriter(io.BytesIO(), 300),
                     lambda a, b: None)
    finally:
        os.close(r)
        os.close(w)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.builds(lambda a, b: a + PAGE + b, st.binary(max_size=8),
                                           st.binary(max_size=8)))
def test_random_bytes_give_pages_or_a_clear_refusal(data):
    try:
        pages, _ = receive(data)
    except (ConvertFailed, _NoAnswer):
        return
    # accepted: then it was exactly a well-formed answer
    assert data.startswith(b"%d\n" % pages)


@pytest.mark.parametrize(("args", "why"), [
    (["--open", "f"], "--open goes only with --convert"),
    (["--resolution", "300", "f"], "--resolution goes only with --convert"),
    (["--convert"], "--convert needs at least one FILE"),
    (["--convert", "--resolution", "74", "f"], "--resolution must be from 75 to 4800"),
    (["--convert", "--resolution", "4801", "f"], "--resolution must be from 75 to 4800"),
    (["--convert", "--offline", "f"], "choose how --open opens"),
    (["--convert", "--view-only", "f"], "choose how --open opens"),
    (["--convert", "--convert-profile", "Bad!", "f"], "is not a profile name"),
    (["--convert", "--timeout", "0", "f"], "--timeout must be more than 0"),
    (["--convert", "--status"], "does not go with --status"),
    (["--convert", "--keep-original", "--archive", "d", "f"], "not allowed with argument"),
])
def test_usage_errors(world, args, why):
    r = world.run(*args)
    assert r.returncode == 2, r.stderr
    assert why in r.stderr
    assert world.calls() == []


def test_without_hard_links_the_output_is_placed_by_rename_never_over_a_file(tmp_path,
                                                                           monkeypatch):
    """FAT (a USB stick) has no hard links: link() fails with EPERM there."""
    import errno

    from whonix_open.vm import convert, editback
    from whonix_open.vm.targets import prepare

    def no_links(*_args, **_kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(convert.os, "link", no_links)
    original = tmp_path / "a.pdf"
    original.write_bytes(b"%PDF-1.4 untrusted")
    target = prepare(str(original))  # its directory held open, as the CLI holds it
    try:
        part = editback.create_part_file(target, "a.trusted.pdf")
        os.write(part.fd, b"%PDF-1.4 pixels")
        convert._place(part, "a.trusted.pdf")
        part.discard()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.trusted.pdf"]
        assert (tmp_path / "a.trusted.pdf").read_bytes() == b"%PDF-1.4 pixels"

        part = editback.create_part_file(target, "a.trusted.pdf")
        with pytest.raises(FileExistsError):
            convert._place(part, "a.trusted.pdf")
        part.discard()
    finally:
        target.close()
    assert (tmp_path / "a.trusted.pdf").read_bytes() == b"%PDF-1.4 pixels"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.trusted.pdf"]


def test_the_progress_notification_is_replaced_in_place(tmp_path, monkeypatch):
    """The real notify-send call (a recording stand-in on PATH that prints an
    id, as notify-send --print-id does): the first update asks for an id, the
    later ones replace that notification; a one-page document gets none."""
    import json
    import sys

    from whonix_open.vm import convert_run
    from whonix_open.vm.report import Reporter

    log = tmp_path / "argv.jsonl"
    fake = tmp_path / "notify-send"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + chr(10))\n"
                    "print(41)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(convert_run, "PROGRESS_PERIOD", 0)
    reporter = Reporter(use_notifications=True, stream=io.StringIO())
    progress = convert_run._Progress(reporter, "a<b>.pdf", notifications=True)
    for done in (0, 1, 2, 3):
        progress(done, 3)
    convert_run._Progress(reporter, "one.pdf", notifications=True)(0, 1)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3  # pages 0, 1, 2; the end is the result's own message
    assert "--print-id" in calls[0] and not any(a.startswith("--replace-id") for a in calls[0])
    assert all("--replace-id=41" in c for c in calls[1:])
    assert calls[2][-1] == "a&lt;b&gt;.pdf: page 2 of 3, in an offline disposable"
