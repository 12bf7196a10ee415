"""The menu entries in the real file managers (Debian packages) under Xvfb.

Each test installs the integration files with `make install-vm-desktop
DESTDIR=...` (Thunar: runs the merge tool for the throwaway user), starts the
file manager on a folder with two files and a subfolder, selects with mouse
clicks, right-clicks, finds the entries by their text (OCR) and clicks one. The
recording stand-in `whonix-open` must then have been run with exactly the
expected argv. Screenshots of each menu: artifacts/screenshots/<fm>-*.png.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from desktop_gui import INDEXER_PATTERNS, LABELS, OPTIONS, REPO, GuiSession, find_all, have

pytestmark = pytest.mark.gui

FILES = ("alpha.txt", "beta.pdf")
FOLDER = "folder"
# A word in every file manager's context menu for a folder: proves the menu is
# there (and drawn) when our entries must be absent.
MENU_ANCHOR = "Copy"


@pytest.fixture
def install(tmp_path: Path) -> Path:
    """The desktop files installed the way a template gets them; returns DESTDIR."""
    destdir = tmp_path / "destdir"
    subprocess.run(["make", "-s", "-C", str(REPO), "install-vm-desktop", f"DESTDIR={destdir}"],
                   check=True, capture_output=True)
    return destdir


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Quote, space and $ in the folder name: the paths must arrive unmangled."""
    work = tmp_path / "my files it's $HOME"
    work.mkdir()
    (work / FILES[0]).write_text("first file\n")
    (work / FILES[1]).write_bytes(b"%PDF-1.4\n% second file\n")
    (work / FOLDER).mkdir()
    return work


def need(*programs: str) -> None:
    missing = have(*programs)
    # a missing Debian package is a broken CI setup, not a reason to skip
    assert not missing, f"missing {missing}: run .ci/install-system-deps"


def drive(session: GuiSession, work: Path, check_once: bool = False) -> None:
    """Single file x three entries, two files; none for a folder or file plus folder."""
    lines = session.wait_text(session.main_window, [*FILES, FOLDER])
    where = {name: find_all(lines, name)[0].center for name in (*FILES, FOLDER)}
    blank = (min(x for x, _ in where.values()), max(y for _, y in where.values()) + 120)
    alpha, beta = (str(work / n) for n in FILES)
    expected = []

    for number, label in enumerate(LABELS):
        session.select(blank, [where[FILES[0]]])
        menu = session.open_menu(where[FILES[0]])
        if number == 0:
            session.save_artifact("single-file")
            if check_once:
                for other in LABELS:
                    count = len(find_all(session.menu_lines, other))
                    assert count == 1, f"{other!r} shown {count} times"
        session.activate(menu, label)
        expected.append([*OPTIONS[label], alpha])
        assert session.standin.wait_calls(len(expected), session) == expected

    session.select(blank, [where[FILES[0]], where[FILES[1]]])
    menu = session.open_menu(where[FILES[1]])
    session.save_artifact("two-files")
    session.activate(menu, "Open in Tor disposable")
    call = session.standin.wait_calls(len(expected) + 1, session)[-1]
    assert call[:1] == ["--"] and sorted(call[1:]) == sorted([alpha, beta])
    expected.append(call)

    # A folder alone, and a file with a folder: no entries, in every file manager
    # (Thunar, Dolphin and PCManFM-Qt match each selected item; Nautilus does the same).
    for case, picked in (("folder", [FOLDER]), ("file-and-folder", [FILES[0], FOLDER])):
        session.select(blank, [where[name] for name in picked])
        session.open_menu(where[FOLDER], want=[MENU_ANCHOR])
        session.save_artifact(case)
        shown = [label for label in LABELS if find_all(session.menu_lines, label)]
        assert shown == [], f"{case}: {shown} shown"
        session.key("Escape")
        session.wait_menu_closed()
    assert session.standin.calls() == expected
    # no indexer ran in this session (masked: see desktop_gui)
    running = {name for name, _ in session.processes().values()}
    assert not [n for n in running if any(p in n.lower() for p in INDEXER_PATTERNS)], running


def test_thunar(tmp_path, install, workdir):
    need("thunar", "Xvfb", "xdotool", "tesseract", "dbus-run-session")
    with GuiSession(tmp_path, "thunar") as session:
        tool = install / "usr/bin/whonix-open-thunar-actions"
        subprocess.run([sys.executable, str(tool)], env=session.env, check=True,
                       capture_output=True)
        session.start(["thunar", str(workdir)])
        drive(session, workdir, check_once=True)


def dolphin_config(session: GuiSession) -> None:
    # KDE's default is single-click-opens; a person selecting by clicking needs double-click
    (Path(session.env["XDG_CONFIG_HOME"]) / "kdeglobals").write_text(
        "[KDE]\nSingleClick=false\n")


def test_dolphin_kf6_and_kf5_files(tmp_path, install, workdir):
    """Both service menus installed (as `make install-vm` does): entries shown once."""
    need("dolphin", "Xvfb", "xdotool", "tesseract", "dbus-run-session")
    with GuiSession(tmp_path, "dolphin") as session:
        dolphin_config(session)
        session.set_data_dirs([install / "usr/share", "/usr/share"])
        session.start(["dolphin", "--new-window", str(workdir)])
        drive(session, workdir, check_once=True)


def test_dolphin_kf5_legacy_file_alone(tmp_path, workdir):
    """Only kservices5/ServiceMenus (what an older KF5 reads): the entries still work."""
    need("dolphin", "Xvfb", "xdotool", "tesseract", "dbus-run-session")
    data = tmp_path / "data"
    menus = data / "kservices5/ServiceMenus"
    menus.mkdir(parents=True)
    (menus / "whonix-open.desktop").write_bytes(
        (REPO / "desktop/dolphin/kf5/whonix-open.desktop").read_bytes())
    with GuiSession(tmp_path, "dolphin-kf5") as session:
        dolphin_config(session)
        session.set_data_dirs([data, "/usr/share"])
        session.start(["dolphin", "--new-window", str(workdir)])
        lines = session.wait_text(session.main_window, [FILES[0], FILES[1]])
        a, b = (find_all(lines, n)[0].center for n in FILES)
        session.select((a[0], a[1] + 120), [a, b])
        menu = session.open_menu(b)
        session.save_artifact("two-files")
        session.activate(menu, "View in Tor disposable")
        call = session.standin.wait_calls(1, session)[0]
        assert call[:2] == ["--view-only", "--"]
        assert sorted(call[2:]) == sorted(str(workdir / n) for n in FILES)


def test_nautilus(tmp_path, install, workdir):
    need("nautilus", "Xvfb", "xdotool", "tesseract", "dbus-run-session")
    with GuiSession(tmp_path, "nautilus") as session:
        session.set_data_dirs([install / "usr/share", "/usr/share"])
        session.start(["nautilus", "--new-window", str(workdir)])
        drive(session, workdir, check_once=True)


def test_nautilus_passes_a_non_utf8_name_as_its_bytes(tmp_path, install):
    """A name that is not UTF-8 (byte 0xFF): the extension used to decode the
    URI with unquote, so whonix-open got U+FFFD in its place - a file that
    does not exist. Now it gets the real bytes (from GIO)."""
    need("nautilus", "Xvfb", "xdotool", "tesseract", "dbus-run-session")
    work = tmp_path / "odd names"
    work.mkdir()
    raw = os.fsencode(work) + b"/invoice-\xff-2024.txt"
    with open(raw, "wb") as fh:
        fh.write(b"not UTF-8 in the name\n")
    (work / FOLDER).mkdir()
    with GuiSession(tmp_path, "nautilus-bytes") as session:
        session.set_data_dirs([install / "usr/share", "/usr/share"])
        session.start(["nautilus", "--new-window", str(work)])
        def shown():  # the name is one OCR word with a replacement character in it
            got = session.ocr(session.main_window())
            words = [box for line in got for word, box in line.words if "invoice" in word]
            return words and find_all(got, FOLDER) and (got, words[0])
        lines, box = session.wait(shown, "the file and the folder on screen")
        item = box.center
        folder = find_all(lines, FOLDER)[0].center
        session.select((min(item[0], folder[0]), max(item[1], folder[1]) + 120), [item])
        menu = session.open_menu(item)
        session.save_artifact("non-utf8-name")
        session.activate(menu, "Open in Tor disposable")
        [call] = session.standin.wait_calls(1, session)
    assert call[0] == "--" and os.fsencode(call[1]) == raw, call


def test_pcmanfm_qt(tmp_path, install, workdir):
    need("pcmanfm-qt", "Xvfb", "xdotool", "tesseract", "dbus-run-session")
    with GuiSession(tmp_path, "pcmanfm-qt") as session:
        session.set_data_dirs([install / "usr/share", "/usr/share"])
        session.start(["pcmanfm-qt", str(workdir)])
        drive(session, workdir, check_once=True)
