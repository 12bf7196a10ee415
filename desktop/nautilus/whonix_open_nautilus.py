"""Nautilus extension: the whonix-open entries in the file context menu.

Installed in /usr/share/nautilus-python/extensions/ (python3-nautilus). Works with
the nautilus-python 4.0 API (Nautilus 43+, get_file_items(files)) and 3.0
(get_file_items(window, files)).

The entries show only when every selected item is a local file, as in Thunar,
Dolphin and PCManFM-Qt (which cannot express anything else): a selection with a
folder, an item that is not a local file (sftp://, trash://, a recent:// entry
that does not resolve to a local file) or one that is gone gets no menu.

Paths are taken from GIO (`GFile.get_path()`), not decoded from the URI: a
name that is not UTF-8 arrives as its real bytes (PyGObject's str with
surrogate escapes, which subprocess turns back into those bytes).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from urllib.parse import urlsplit

import gi

try:
    gi.require_version("Nautilus", "4.0")
except ValueError:
    gi.require_version("Nautilus", "3.0")
from gi.repository import Gio, GObject, Nautilus

# (menu item name, label, tip, whonix-open options): same wording in every file manager.
# The chooser entry (CHOOSER) runs whonix-open-choose instead.
ENTRIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("WhonixOpen::open", "Open in Tor disposable",
     "Open in a fresh Whonix disposable routed through Tor; edits come back", ()),
    ("WhonixOpen::view", "View in Tor disposable",
     "View read-only in a fresh Whonix disposable routed through Tor", ("--view-only",)),
    ("WhonixOpen::view-offline", "View in offline disposable",
     "View read-only in a fresh Whonix disposable with no network",
     ("--view-only", "--offline")),
    ("WhonixOpen::convert", "Convert to trusted PDF (offline disposable)",
     "Render to pixels in a fresh Whonix disposable with no network; save "
     "NAME.trusted.pdf beside it and move the original to ~/QubesUntrustedPDFs",
     ("--convert",)),
)

CHOOSER: tuple[str, str, str] = (
    "WhonixOpen::choose", "Open in disposable…",
    "Choose Tor or offline, view-only or edit, then open in a fresh Whonix disposable")

FALLBACK_CLI = "/usr/bin/whonix-open"
FALLBACK_CHOOSER = "/usr/bin/whonix-open-choose"


def local_path(file_info) -> str | None:
    """The local filesystem path behind a Nautilus FileInfo, or None.

    recent:// (and other virtual) items carry the real file:// location as their
    activation URI, so that is preferred over the item's own URI.
    """
    if file_info.is_gone():
        return None
    activation = file_info.get_activation_uri()
    if activation and activation != file_info.get_uri():
        location = Gio.File.new_for_uri(activation)
    else:
        location = file_info.get_location()
    if not location.has_uri_scheme("file"):
        return None
    if urlsplit(location.get_uri()).netloc not in ("", "localhost"):
        return None  # another host's file: not ours to open
    path = location.get_path()  # the name's real bytes (surrogate-escaped str)
    return path if path and path.startswith("/") else None


def selection_paths(files: Sequence) -> list[str] | None:
    """Paths to hand to whonix-open, or None when the menu must not appear."""
    if not files:
        return None
    paths = []
    for file_info in files:
        path = local_path(file_info)
        if path is None:
            return None  # one non-local or gone item: no partial open
        paths.append(path)
    if any(f.is_directory() for f in files):
        return None  # as the other file managers do; whonix-open refuses folders
    return paths


def command(options: Sequence[str], paths: Sequence[str]) -> list[str]:
    """The argv for one menu entry; '--' so a path starting with '-' stays a path."""
    cli = shutil.which("whonix-open") or FALLBACK_CLI
    return [cli, *options, "--", *paths]


def chooser_command(paths: Sequence[str]) -> list[str]:
    """The argv of "Open in disposable…" (the dialog, then whonix-open)."""
    return [shutil.which("whonix-open-choose") or FALLBACK_CHOOSER, "--", *paths]


def launch(argv: Sequence[str]) -> None:
    """Start whonix-open detached from Nautilus (no shell; it shows its own errors)."""
    subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


class WhonixOpenMenuProvider(GObject.GObject, Nautilus.MenuProvider):
    """Adds the whonix-open entries (three, and the chooser) for local files."""

    def get_file_items(self, *args):
        # API 4.0 passes (files,), API 3.0 passes (window, files).
        paths = selection_paths(args[-1])
        if paths is None:
            return []
        items = []
        for name, label, tip, options in ENTRIES:
            item = Nautilus.MenuItem(name=name, label=label, tip=tip)
            item.connect("activate", self._activate, command(options, paths))
            items.append(item)
        name, label, tip = CHOOSER
        item = Nautilus.MenuItem(name=name, label=label, tip=tip)
        item.connect("activate", self._activate, chooser_command(paths))
        items.append(item)
        return items

    def _activate(self, _item, argv: list[str]) -> None:
        launch(argv)
