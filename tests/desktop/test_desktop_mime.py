"""The MIME handlers with the real GIO and xdg-utils, in a throwaway XDG environment.

`xdg-mime default` makes whonix-open.desktop (or the view variant) the handler of
a type; then `gio open FILE` and `xdg-open FILE` (with DISPLAY set, from a real
Xvfb) must run the recording stand-in with the file. This is also what a mail
client does with an attachment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from desktop_gui import REPO, GuiSession, have


@pytest.fixture
def session(tmp_path: Path):
    missing = have("Xvfb", "xdg-mime", "xdg-open", "gio")
    assert not missing, f"missing {missing}: run .ci/install-system-deps"
    dest = tmp_path / "destdir"
    subprocess.run(["make", "-s", "-C", str(REPO), "install-vm-desktop", f"DESTDIR={dest}"],
                   check=True, capture_output=True)
    with GuiSession(tmp_path, "mime", size="640x480") as gui:
        gui.env["XDG_DATA_DIRS"] = f"{dest}/usr/share:/usr/share"
        yield gui


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "Downloads it's $HOME"
    folder.mkdir()
    (folder / "notes.txt").write_text("plain text\n")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 4)
    return folder


def sh(session: GuiSession, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=session.env, capture_output=True, text=True,
                          timeout=60, check=False)


def make_default(session: GuiSession, handler: str, mime: str) -> None:
    assert sh(session, "xdg-mime", "default", handler, mime).returncode == 0
    assert sh(session, "xdg-mime", "query", "default", mime).stdout.strip() == handler


@pytest.mark.parametrize(("opener", "handler", "name", "mime", "options"), [
    ("gio", "whonix-open.desktop", "notes.txt", "text/plain", ["--"]),
    ("gio", "whonix-open-view.desktop", "report.pdf", "application/pdf", ["--view-only", "--"]),
    ("gio", "whonix-open.desktop", "blob.bin", "application/octet-stream", ["--"]),
    ("xdg-open", "whonix-open.desktop", "notes.txt", "text/plain", ["--"]),
    ("xdg-open", "whonix-open-view.desktop", "report.pdf", "application/pdf",
     ["--view-only", "--"]),
])
def test_default_handler_runs_whonix_open_with_the_file(session, docs, opener, handler, name,
                                                        mime, options):
    make_default(session, handler, mime)
    target = docs / name
    assert sh(session, "xdg-mime", "query", "filetype", str(target)).stdout.strip() == mime
    argv = ["gio", "open", str(target)] if opener == "gio" else ["xdg-open", str(target)]
    out = sh(session, *argv)
    assert out.returncode == 0, out.stderr
    assert session.standin.wait_calls(1) == [[*options, str(target)]]


def test_gio_ignores_the_handler_when_whonix_open_is_not_on_path(session):
    """Why docs/USING.md says the handler is ignored when `whonix-open` is not
on PATH (GIO checks TryExec): install the CLI together with the desktop files."""
    make_default(session, "whonix-open.desktop", "text/plain")
    query = ["gio", "mime", "text/plain"]
    assert "whonix-open.desktop" in sh(session, *query).stdout.splitlines()[0]
    session.env["PATH"] = "/usr/bin:/bin"  # the stand-in is gone
    assert "whonix-open.desktop" not in sh(session, *query).stdout
