"""The link confirmation and the "Open in disposable..." chooser, driven under
Xvfb with the real dialog programs (zenity as on Xfce/GNOME, kdialog as on
KDE/LXQt) the way a person uses the keyboard: accept, cancel with Esc, each
choice, remember. `whonix-open` is the recording stand-in: what it receives is
exactly what the real CLI would be asked to open. Screenshots of every dialog
go to artifacts/screenshots/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from desktop_gui import GuiSession, have

from tests.helpers import wait_for
from whonix_open.vm.dialogs import CHOICES

pytestmark = pytest.mark.gui

BIN = Path(sys.executable).parent  # whonix-open-link / whonix-open-choose (make venv)
URL = "https://example.org/a?q=<b>bold</b>&x=1"
# The keys that pick row k (0-based), then Next/OK.
PICK = {k: ["Home", *["Down"] * k, "Return"] for k in range(len(CHOICES))}
# The "remember?" question: the default button is "Just this time".
JUST_ONCE = ["Return"]
REMEMBER = {"zenity": ["shift+Tab", "shift+Tab", "Return"], "kdialog": ["Tab", "space"]}


@pytest.fixture(params=["zenity", "kdialog"])
def gui(request, tmp_path: Path):
    program = request.param
    missing = have("Xvfb", "xdotool", "import", program)
    assert not missing, f"missing {missing}: run .ci/install-system-deps"
    assert (BIN / "whonix-open-choose").exists(), "run `make venv` (installs the commands)"
    with GuiSession(tmp_path, f"dialog-{program}", size="1024x768") as g:
        g.env["PATH"] = f"{g.standin.bin}:{BIN}:/usr/bin:/bin"
        g.env["XDG_CURRENT_DESKTOP"] = "KDE" if program == "kdialog" else "XFCE"
        g.program = program
        doc = g.home / "Downloads" / "report.pdf"  # the chooser checks it exists first
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_bytes(b"%PDF-1.7\n")
        g.doc = str(doc)
        yield g


def _settled(gui: GuiSession, wid: str) -> bool:
    """The window is mapped, focused and painted (two equal grabs in a row)."""
    box = gui.toplevels().get(wid)
    if box is None:
        return False
    gui.x("xdotool", "windowfocus", "--sync", wid, check=False)
    first = gui.grab(box)
    return first == gui.grab(box) and len(first) > 1000


def _windows(gui: GuiSession) -> set[tuple[str, str]]:
    """(window, owning pid): X may give the next dialog process the window id
    of the one that just closed, so the id alone does not tell them apart."""
    found = set()
    for wid in gui.toplevels():
        pid = gui.x("xprop", "-id", wid, "_NET_WM_PID", check=False).rpartition("=")[2]
        found.add((wid, pid.strip()))
    return found


def drive(gui: GuiSession, argv: list[str], steps: list[list[str]], label: str):
    """Run *argv*; for each step wait for its new dialog window, screenshot it,
    type the keys. Returns the finished process."""
    seen = _windows(gui)
    proc = subprocess.Popen(argv, env=gui.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for n, keys in enumerate(steps):
            def new_window():
                fresh = [w for w in _windows(gui) if w not in seen]
                return fresh[0] if fresh else None
            window = wait_for(new_window, f"dialog {n + 1} of {argv[0]}", 30, interval=0.2)
            wait_for(lambda wid=window[0]: _settled(gui, wid), "the dialog to settle", 30, 0.2)
            seen.add(window)
            gui.save_artifact(f"{label}-{n + 1}")
            gui.key(*keys)
            wait_for(lambda w=window: w not in _windows(gui) or proc.poll() is not None,
                     "the dialog to close", 30, 0.2)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            gui.save_artifact(f"{label}-stuck")
            proc.kill()
            proc.wait()
    return proc


def link(gui, *args):
    return [str(BIN / "whonix-open-link"), *args]


def choose(gui, *args):
    return [str(BIN / "whonix-open-choose"), *args]


# --- the link confirmation --------------------------------------------------

def test_confirmed_link_is_opened(gui):
    proc = drive(gui, link(gui, "--confirm", "--", URL), [["Return"]], "link-confirm-accept")
    assert proc.returncode == 0, proc.stderr
    assert gui.standin.wait_calls(1) == [["--url", "--", URL]]


def test_escape_at_the_confirmation_sends_nothing(gui):
    proc = drive(gui, link(gui, "--confirm", "--", URL), [["Escape"]], "link-confirm-esc")
    assert proc.returncode == 1
    assert gui.standin.calls() == []


# --- the chooser ------------------------------------------------------------

@pytest.mark.parametrize("row", range(len(CHOICES)), ids=[c[0] for c in CHOICES])
def test_each_choice_reaches_whonix_open(gui, row):
    _tag, _label, profile, view_only = CHOICES[row]
    proc = drive(gui, choose(gui, "--", gui.doc), [PICK[row], JUST_ONCE], f"choose-{_tag}")
    assert proc.returncode == 0, proc.stderr
    mode = "--view-only" if view_only else "--edit"
    assert gui.standin.wait_calls(1) == [[mode, "--profile", profile, "--", gui.doc]]
    assert not (gui.home / ".config/whonix-open/chooser.json").exists()


def test_a_remembered_choice_is_used_without_asking(gui):
    proc = drive(gui, choose(gui, "--", gui.doc), [PICK[3], REMEMBER[gui.program]],
                 "choose-remember")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((gui.home / ".config/whonix-open/chooser.json").read_text())
    assert saved == {"profile": "offline", "view_only": False}
    again = subprocess.run(choose(gui, "--", gui.doc), env=gui.env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert gui.standin.wait_calls(2) == [["--edit", "--profile", "offline", "--", gui.doc]] * 2
    assert subprocess.run(choose(gui, "--forget"), env=gui.env, check=False,
                          timeout=60).returncode == 0
    assert not (gui.home / ".config/whonix-open/chooser.json").exists()


@pytest.mark.parametrize("at", [1, 2])
def test_escape_in_the_chooser_sends_nothing(gui, at):
    steps = [["Escape"]] if at == 1 else [PICK[1], ["Escape"]]
    proc = drive(gui, choose(gui, "--", gui.doc), steps, f"choose-esc-{at}")
    assert proc.returncode == 1
    assert gui.standin.calls() == []
    assert not (gui.home / ".config/whonix-open/chooser.json").exists()


# --- hostile file names in the chooser ----------------------------------------

# (file name, word that must stay on the first line of the name, injected word)
HOSTILE_NAMES = {  # "zebra": a word OCR reads reliably
    "entity-newline": ("report&#10;zebra.pdf", "report", "zebra"),
    "backslash-n": ("report\\nzebra.pdf", "report", "zebra"),
    "real-newline": ("report\nzebra.pdf", "report", "zebra"),
    "amp-and-lt": ("report & <b>zebra.pdf", "report", "zebra"),
    "bidi-override": ("report\u202ezebra.exe", "report", "zebra"),
}


def _boxes(lines, part: str):
    """Screen boxes of the OCR words that contain *part* (names are one word)."""
    return [box for line in lines for word, box in line.words if part.lower() in word.lower()]


@pytest.mark.parametrize("case", HOSTILE_NAMES)
def test_hostile_names_are_shown_as_they_are_in_the_chooser(gui, case):
    """zenity's --list ignores --no-markup for --text and unescapes backslash
    sequences: `&#10;` and `\\n` in a name became real line breaks (an
    injected "(checked: safe to edit)" line), a bare `&` or `<` blanked the
    text, `&#x202E;` a real right-to-left override. The name must show on one
    line, as it is (escapes visible), under zenity and kdialog alike."""
    name, first, injected = HOSTILE_NAMES[case]
    hostile = Path(gui.doc).parent / name  # a real file: the chooser asks only for those
    hostile.write_text("x")
    seen = _windows(gui)
    proc = subprocess.Popen(choose(gui, "--", str(hostile)), env=gui.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window = wait_for(lambda: next((w for w in _windows(gui) if w not in seen), None),
                          "the chooser", 30, interval=0.2)
        wait_for(lambda: _settled(gui, window[0]), "the dialog to settle", 30, 0.2)
        box = gui.toplevels()[window[0]]
        lines = wait_for(lambda: (got := gui.ocr(box)) and _boxes(got, "disposable")
                         and _boxes(got, injected) and got,
                         f"{injected!r} and the dialog text on screen", 30, 0.5)
        gui.save_artifact(f"hostile-name-{case}")
        head = _boxes(lines, first)
        [tail] = _boxes(lines, injected)[:1]
        assert head, [line.text for line in lines]
        same_line = any(abs((h.y + h.h / 2) - (tail.y + tail.h / 2)) < tail.h for h in head)
        assert same_line, f"{injected!r} is on a line of its own: {[ln.text for ln in lines]}"
        gui.key("Escape")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert gui.standin.calls() == []
