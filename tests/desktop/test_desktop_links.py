"""The link handler with the real GIO and xdg-utils in a throwaway XDG
environment: made the default for x-scheme-handler/http(s) with `xdg-mime
default` (what "default browser" means to xdg-open, gio and mail clients),
`xdg-open URL` and `gio open URL` must run the real whonix-open-link, which
checks the link and runs `whonix-open -- URL` (the recording stand-in).
Also: every new desktop file passes desktop-file-validate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from desktop_entry_strict import exec_argv, parse
from desktop_gui import REPO, GuiSession, have

BIN = Path(sys.executable).parent
LINKS = REPO / "desktop" / "links"
NEW_FILES = [*sorted(LINKS.glob("*.desktop")), *sorted((REPO / "desktop/dom0").glob("*.desktop")),
             REPO / "desktop/chooser/whonix-open-choose.desktop"]


@pytest.fixture
def session(tmp_path: Path):
    missing = have("Xvfb", "xdg-mime", "xdg-open", "gio")
    assert not missing, f"missing {missing}: run .ci/install-system-deps"
    with GuiSession(tmp_path, "links", size="640x480") as gui:
        apps = gui.home / ".local/share/applications"
        apps.mkdir(parents=True)
        for f in LINKS.glob("*.desktop"):
            shutil.copy(f, apps)
        gui.env["PATH"] = f"{gui.standin.bin}:{BIN}:/usr/bin:/bin"
        gui.env["XDG_DATA_DIRS"] = "/usr/share"
        yield gui


def sh(session: GuiSession, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=session.env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_every_new_desktop_file_passes_desktop_file_validate():
    assert shutil.which("desktop-file-validate"), "run .ci/install-system-deps"
    out = subprocess.run(["desktop-file-validate", *map(str, NEW_FILES)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_dom0_menu_entries_sit_beside_the_stock_ones():
    names = {}
    for path in sorted((REPO / "desktop/dom0").glob("*.desktop")):
        entry = parse(path)["Desktop Entry"]
        names[entry["Name"]] = exec_argv(entry["Exec"])
    assert names == {
        "Terminal (checked Tor disposable)": ["whonix-open-app", "terminal"],
        "Tor Browser (checked Tor disposable)": ["whonix-open-app", "torbrowser"],
    }


def test_link_handlers_claim_http_and_https_and_pass_links_after_dashes():
    for path, options in ((LINKS / "whonix-open-link.desktop", []),
                          (LINKS / "whonix-open-link-confirm.desktop", ["--confirm"])):
        entry = parse(path)["Desktop Entry"]
        assert entry["MimeType"] == "x-scheme-handler/http;x-scheme-handler/https;"
        assert exec_argv(entry["Exec"]) == ["whonix-open-link", *options, "--", "%U"]


@pytest.mark.parametrize("opener", ["xdg-open", "gio"])
@pytest.mark.parametrize("url", ["https://www.whonix.org/wiki/Qubes?x=1&y=2",
                                 "http://example.org/"])
def test_default_browser_runs_whonix_open_with_the_link(session, opener, url):
    scheme = url.split(":", 1)[0]
    mime = f"x-scheme-handler/{scheme}"
    assert sh(session, "xdg-mime", "default", "whonix-open-link.desktop", mime).returncode == 0
    assert sh(session, "xdg-mime", "query", "default", mime).stdout.strip() == \
        "whonix-open-link.desktop"
    argv = ["gio", "open", url] if opener == "gio" else ["xdg-open", url]
    out = sh(session, *argv)
    assert out.returncode == 0, out.stderr
    assert session.standin.wait_calls(1) == [["--url", "--", url]]


def test_a_hostile_link_handed_to_the_handler_is_refused(session):
    out = sh(session, "whonix-open-link", "--", "https://example.org/\x1b]0;x\x07")
    assert out.returncode == 2 and "control characters" in out.stderr
    assert session.standin.calls() == []


def test_xdg_settings_can_make_it_the_default_web_browser(session):
    out = sh(session, "xdg-settings", "set", "default-web-browser", "whonix-open-link.desktop")
    assert out.returncode == 0, out.stderr
    got = sh(session, "xdg-settings", "get", "default-web-browser")
    assert got.stdout.strip() == "whonix-open-link.desktop"
    for scheme in ("http", "https"):
        assert sh(session, "xdg-mime", "query", "default",
                  f"x-scheme-handler/{scheme}").stdout.strip() == "whonix-open-link.desktop"
    assert sh(session, "xdg-open", "https://example.org/").returncode == 0
    assert session.standin.wait_calls(1) == [["--url", "--", "https://example.org/"]]


CHOOSER = REPO / "desktop" / "chooser"


def test_chooser_entries_all_run_whonix_open_choose():
    """One label and one command in every place the chooser appears."""
    found = {}
    entry = parse(CHOOSER / "whonix-open-choose.desktop")["Desktop Entry"]
    found["mime"] = (entry["Name"], exec_argv(entry["Exec"]))
    assert entry["NoDisplay"] == "true" and "application/pdf" in entry["MimeType"]
    groups = parse(CHOOSER / "pcmanfm-qt/whonix-open-choose.desktop")
    assert groups["Desktop Entry"]["Type"] == "Action"
    found["pcmanfm-qt"] = (groups["Desktop Entry"]["Name"],
                           exec_argv(groups["X-Action-Profile local_files"]["Exec"]))
    # files only, as the other entries (a folder alone shows none of them)
    assert groups["X-Action-Profile local_files"]["MimeTypes"] == "all/allfiles;"
    for version in ("kf5", "kf6"):
        groups = parse(CHOOSER / f"dolphin/{version}/whonix-open-choose.desktop")
        assert groups["Desktop Entry"]["Type"] == "Service"
        assert groups["Desktop Entry"]["Actions"] == "whonixChoose;"
        action = groups["Desktop Action whonixChoose"]
        found[version] = (action["Name"], exec_argv(action["Exec"]))
    assert all(v == ("Open in disposable…", ["whonix-open-choose", "--", "%F"])
               for v in found.values()), found
