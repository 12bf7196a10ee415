"""The caller's 256-byte header of the stock qubes.OpenInVM protocol.

The header is the file's basename, NUL-padded and NUL-terminated, so at most
HEADER_SIZE - 1 bytes of name fit. A longer name is cut from the FRONT so that
the extension (which picks the viewer in the disposable) survives. View-only is
signalled by the header starting with ``view-only-``, which takes 10 bytes of
that room.

Because the receiver treats ANY header that begins with ``view-only-`` as
view-only, a file whose own name begins with ``view-only-`` would lose its
edit-back in edit mode. We send such a name as ``_view-only-...`` instead: the
file opens under that name in the disposable, and edits still come back to the
original (whose name on disk is not changed).
"""

from __future__ import annotations

import os

from whonix_open.openinvm import HEADER_SIZE, VIEW_ONLY_PREFIX

NAME_ROOM = HEADER_SIZE - 1  # the last byte is always NUL
EDIT_MODE_ESCAPE = b"_"


def _is_utf8_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def cut_front(name: bytes, room: int) -> bytes:
    """The last *room* bytes of *name* at most, never starting inside a
    multi-byte UTF-8 character (a partial character would become ``_`` in
    the disposable and, worse, make the name undecodable)."""
    if room <= 0:
        raise ValueError("no room for a name")
    if len(name) <= room:
        return name
    start = len(name) - room
    cut = start
    # A UTF-8 character has at most 3 continuation bytes. More in a row are
    # not UTF-8: there is no boundary to respect, so cut at the byte rather
    # than drop up to the whole name.
    while cut < start + 3 and cut < len(name) and _is_utf8_continuation(name[cut]):
        cut += 1
    at_boundary = cut < len(name) and not _is_utf8_continuation(name[cut])
    return name[cut:] if at_boundary else name[start:]


def header_name(name: bytes, view_only: bool) -> bytes:
    """The name bytes as they go into the header (without padding)."""
    if not name or b"/" in name or b"\0" in name:
        raise ValueError("a header name is a non-empty basename without NUL")
    if view_only:
        return VIEW_ONLY_PREFIX + cut_front(name, NAME_ROOM - len(VIEW_ONLY_PREFIX))
    sent = cut_front(name, NAME_ROOM)
    if sent.startswith(VIEW_ONLY_PREFIX):
        # Would be read as view-only by the disposable: escape it.
        sent = EDIT_MODE_ESCAPE + cut_front(name, NAME_ROOM - len(EDIT_MODE_ESCAPE))
    return sent


def build_header(path: str | os.PathLike[str], view_only: bool) -> bytes:
    """The full 256-byte header for the file at *path* (its basename, in the
    filesystem encoding)."""
    name = os.fsencode(os.path.basename(os.fspath(path)))
    sent = header_name(name, view_only)
    return sent + b"\0" * (HEADER_SIZE - len(sent))
