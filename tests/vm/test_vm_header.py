"""The 256-byte qubes.OpenInVM header the CLI sends (vm/header.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whonix_open.openinvm import HEADER_SIZE, VIEW_ONLY_PREFIX
from whonix_open.vm.header import build_header, cut_front, header_name


def sent_name(header: bytes) -> bytes:
    assert len(header) == HEADER_SIZE
    assert header[-1] == 0, "must be NUL-terminated"
    name, _, padding = header.partition(b"\0")
    assert padding.strip(b"\0") == b"", "NUL padding only after the name"
    return name


def test_short_name_is_padded_with_nuls():
    header = build_header("/home/user/report.pdf", view_only=False)
    assert header == b"report.pdf" + b"\0" * (HEADER_SIZE - 10)


def test_long_name_is_cut_from_the_front_keeping_the_extension():
    name = "a" * 300 + ".tar.gz"
    got = sent_name(build_header(f"/tmp/{name}", view_only=False))
    assert len(got) == HEADER_SIZE - 1
    assert got == name.encode()[-255:]
    assert got.endswith(b"aaa.tar.gz")


def test_name_of_exactly_255_bytes_is_kept_whole():
    name = "b" * 251 + ".odt"
    assert sent_name(build_header(name, view_only=False)) == name.encode()


def test_non_ascii_name_is_sent_as_utf8_bytes():
    got = sent_name(build_header("/x/Zürich\u2013Bericht 報告.pdf", view_only=False))
    assert got == "Zürich\u2013Bericht 報告.pdf".encode()


def test_non_ascii_cut_never_splits_a_character():
    # 3-byte characters: 255 is a multiple of 3 only with the extension offset.
    name = "報" * 100 + ".pdf"  # 304 bytes
    got = sent_name(build_header(name, view_only=False))
    assert len(got) <= 255
    decoded = got.decode("utf-8")  # would raise on a split character
    assert name.endswith(decoded)
    assert len(got) == 3 * 83 + 4  # the most whole characters that fit (253 bytes)


def test_view_only_prefix_and_its_room():
    got = sent_name(build_header("/x/" + "c" * 300 + ".pdf", view_only=True))
    assert got.startswith(VIEW_ONLY_PREFIX)
    assert len(got) == 255
    assert got[len(VIEW_ONLY_PREFIX) :].endswith(b"c.pdf")
    assert len(got) - len(VIEW_ONLY_PREFIX) == 245


def test_view_only_short():
    assert sent_name(build_header("a.txt", view_only=True)) == b"view-only-a.txt"


def test_edit_mode_name_starting_with_view_only_is_escaped():
    got = sent_name(build_header("/x/view-only-notes.txt", view_only=False))
    assert got == b"_view-only-notes.txt"
    assert not got.startswith(VIEW_ONLY_PREFIX)


def test_long_edit_mode_name_still_starting_with_view_only_after_the_cut():
    # After cutting from the front the name begins with "view-only-".
    tricky = "q" * 10 + "view-only-" + "z" * 241 + ".txt"  # 265 bytes
    assert tricky.encode()[-255:].startswith(VIEW_ONLY_PREFIX)
    got = sent_name(build_header(tricky, view_only=False))
    assert got.startswith(b"_")
    assert len(got) == 255
    assert got.endswith(b"z.txt")


def test_view_mode_name_starting_with_view_only_keeps_it_after_the_prefix():
    got = sent_name(build_header("view-only-a.txt", view_only=True))
    assert got == b"view-only-view-only-a.txt"


def test_undecodable_bytes_name_is_passed_as_bytes():
    raw = b"\xff\xfe-data.bin"
    got = sent_name(build_header(os.fsdecode(raw), view_only=False))
    assert got == raw


def test_bad_names_are_rejected():
    for bad in (b"", b"a/b", b"a\0b"):
        with pytest.raises(ValueError):
            header_name(bad, view_only=False)


def test_cut_front_of_only_continuation_bytes_cuts_at_the_byte():
    assert cut_front(b"\x80" * 10, 4) == b"\x80" * 4


def test_cut_front_of_a_non_utf8_name_never_loses_more_than_a_character():
    # Not UTF-8: a run of "continuation" bytes followed by "..". Skipping the
    # whole run would send the name ".." (vm-file-editor cannot create it).
    name = b"\x80" * 300 + b".."
    assert cut_front(name, 245) == name[-245:]
    got = sent_name(build_header(os.fsdecode(name), view_only=True))
    assert got == VIEW_ONLY_PREFIX + name[-245:]


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1,
    max_size=200,
)


@given(name=names, view_only=st.booleans())
def test_header_properties(name, view_only):
    got = sent_name(build_header(name, view_only))
    raw = name.encode("utf-8")
    room = 255 - (len(VIEW_ONLY_PREFIX) if view_only else 0)
    if view_only:
        assert got.startswith(VIEW_ONLY_PREFIX)
        body = got[len(VIEW_ONLY_PREFIX) :]
    else:
        assert not got.startswith(VIEW_ONLY_PREFIX)
        escaped = not raw.endswith(got)
        assert not escaped or (got[:1] == b"_" and got[1:].startswith(VIEW_ONLY_PREFIX))
        body = got[1:] if escaped else got
        room -= 1 if escaped else 0
    assert raw.endswith(body), "only ever cut from the front"
    body.decode("utf-8")  # whole characters only
    if len(raw) <= room:
        assert body == raw
    else:
        assert room - 3 <= len(body) <= room  # at most one character's tail lost
