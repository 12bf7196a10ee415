"""Failures of the VM commands said in one sentence (issue 19): the real
entry points run as a user runs them, the exact text asserted, nothing else on
stderr (no traceback, no dialog program's or notifier's noise), and a
notification when stderr is not a terminal (a desktop entry started us)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, isolated_env, wait_for
from tests.vm.test_e2e_sim import chain  # noqa: F401 - fixture
from whonix_open.vm import cli

BIN = Path(sys.executable).parent  # the console scripts of `make venv`
NOT_QUBES = ("qrexec-client-vm not found on PATH or at /usr/lib/qubes/qrexec-client-vm: "
             "this does not look like a Qubes qube. Nothing was opened.")


@pytest.fixture
def desk(tmp_path: Path) -> dict[str, str]:
    """A session with no display and nothing of whonix-open on PATH but a
    recording notify-send; /usr/bin for the real zenity where a test adds it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    notify = bin_dir / "notify-send"
    log = tmp_path / "notify.log"
    notify.write_text(f'#!{sys.executable}\nimport json, sys\n'
                      f'open("{log}", "a").write(json.dumps(sys.argv[1:]) + "\\n")\n')
    notify.chmod(0o755)
    env = isolated_env(tmp_path, PATH=str(bin_dir), HOME=str(tmp_path))
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None
         ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=DEADLINE, check=False)


def _notified(tmp_path: Path) -> list[str]:
    log = tmp_path / "notify.log"
    return [json.loads(line)[-1] for line in log.read_text().splitlines()] if log.exists() else []


# --- whonix-open-link / whonix-open-choose ------------------------------------

def test_link_handler_without_whonix_open_says_so_and_notifies(desk, tmp_path):
    got = _run([str(BIN / "whonix-open-link"), "--", "https://example.org/"], desk)
    text = ("cannot run the whonix-open command: it is not installed (not found on PATH). "
            "Nothing was opened.")
    assert (got.returncode, got.stdout, got.stderr) == (1, "", f"whonix-open: error: {text}\n")
    assert _notified(tmp_path) == [text]


def test_chooser_without_whonix_open_says_so(desk, tmp_path):
    (tmp_path / "config/whonix-open").mkdir(parents=True)
    (tmp_path / "config/whonix-open/chooser.json").write_text(
        '{"profile": "tor", "view_only": true}\n')  # remembered: no dialog
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    got = _run([str(BIN / "whonix-open-choose"), "--", str(tmp_path / "a.pdf")], desk)
    assert got.returncode == 1
    assert got.stderr == ("whonix-open: error: cannot run the whonix-open command: it is not "
                          "installed (not found on PATH). Nothing was opened.\n")


def test_chooser_with_a_missing_file_says_which_before_asking(desk, tmp_path):
    gone = tmp_path / "gone.pdf"
    got = _run([str(BIN / "whonix-open-choose"), "--", str(gone)], desk)
    assert (got.returncode, got.stderr) == (1, f"whonix-open: error: {gone}: no such file\n")
    assert _notified(tmp_path) == [f"{gone}: no such file"]


def test_chooser_and_confirmation_without_a_display_say_so(desk, tmp_path):
    desk["PATH"] += os.pathsep + "/usr/bin"  # the real zenity/kdialog, no display for them
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    text = ("cannot ask: there is no display to show a dialog on (DISPLAY and "
            "WAYLAND_DISPLAY are unset). Nothing was opened.")
    for argv in ([str(BIN / "whonix-open-choose"), "--", str(tmp_path / "a.pdf")],
                 [str(BIN / "whonix-open-link"), "--confirm", "--", "https://example.org/"]):
        got = _run(argv, desk)
        assert (got.returncode, got.stderr) == (1, f"whonix-open: error: {text}\n"), argv
    assert _notified(tmp_path) == [text, text]


def test_chooser_without_a_dialog_program_says_so(desk, tmp_path):
    desk["DISPLAY"] = ":99"  # a display, but neither zenity nor kdialog on PATH
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    got = _run([str(BIN / "whonix-open-choose"), "--", str(tmp_path / "a.pdf")], desk)
    assert got.returncode == 1
    assert got.stderr == ("whonix-open: error: cannot ask: no dialog program is installed "
                          "(zenity or kdialog). Nothing was opened.\n")


@pytest.mark.parametrize(("command", "says"), [
    ("whonix-open-link", "Open web links in a fresh Whonix disposable whose Tor gateway "
                         "dom0 checks first"),
    ("whonix-open-choose", "Open files in a fresh Whonix disposable, asking first: Tor or "
                           "offline"),
])
def test_handlers_help_describes_them(desk, command, says):
    got = _run([str(BIN / command), "--help"], desk)
    assert got.returncode == 0 and got.stderr == ""
    assert says in " ".join(got.stdout.split())
    assert "exit status:" in got.stdout


# --- whonix-open: links and apps ------------------------------------------------

@pytest.mark.parametrize("args", [["--app", "torbrowser"], ["https://example.org/"]])
def test_without_qrexec_client_vm_one_message(desk, tmp_path, args):
    got = _run([sys.executable, "-m", "whonix_open.vm.cli", *args], desk)
    assert (got.returncode, got.stderr) == (4, f"whonix-open: error: {NOT_QUBES}\n")
    assert _notified(tmp_path) == [NOT_QUBES]


@pytest.mark.parametrize(("args", "code", "said"), [
    (["https://example.org/"], 64, "https://example.org/: dom0 refused the request as malformed"),
    (["--app", "torbrowser"], 77, "app torbrowser: dom0 refused: that app is not in dom0's"),
])
def test_dom0s_code_when_qrexec_client_vm_ends_before_the_line_is_written(
        tmp_path, monkeypatch, capsys, args, code, said):
    """dom0 refused at once: qrexec-client-vm is gone before we write (a slow
    machine, made certain here by waiting for it to end after each start)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    client = bin_dir / "qrexec-client-vm"
    client.write_text(f"#!/bin/sh\nexec 0<&-\nexit {code}\n")
    client.chmod(0o755)
    for key in list(os.environ):
        if key.startswith(("QREXEC_", "WHONIX_OPEN_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    real_popen = subprocess.Popen

    class EndsFirst(real_popen):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            wait_for(lambda: self.poll() is not None, "qrexec-client-vm to end")

    monkeypatch.setattr(subprocess, "Popen", EndsFirst)
    assert cli.main(["--no-notify", *args]) == code
    err = capsys.readouterr().err
    assert err.startswith(f"whonix-open: error: {said}") and err.count("\n") == 1, err


def test_an_unknown_caller_is_not_blamed_on_the_profile(chain):  # noqa: F811
    got = chain.run("--no-notify", "https://example.org/", caller="ghost")
    assert got.returncode == 64
    assert got.stderr == (
        "whonix-open: error: https://example.org/: dom0 refused the request as malformed "
        "(code 64): the profile 'tor' may be unknown there, or dom0 did not accept the call "
        "for another reason; its log names it (journalctl -t whonix-open). `whonix-open "
        "--status` lists the profiles dom0 offers.\n")
    assert "caller ghost does not exist" in chain.audit("ghost")


# --- whonix-open --status / --recover / loop guard -------------------------------

def test_status_off_qubes_says_only_what_it_knows(desk):
    got = _run([sys.executable, "-m", "whonix_open.vm.cli", "--status"], desk)
    assert got.returncode == 0 and got.stderr == ""
    warnings = [line for line in got.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: could not ask dom0 about this qube's network (qrexec-client-vm not found on "
        "PATH or at /usr/lib/qubes/qrexec-client-vm: this does not look like a Qubes qube); "
        "the facts below are this qube's own and UNVERIFIED.",
        "warning: could not determine whether this qube is behind a Whonix-Gateway: its own "
        "traffic may not be Tor-routed. whonix-open opens files and links only in a "
        "disposable whose network dom0 enforces (Tor, or offline).",
    ]


def test_status_of_a_clearnet_qube_speaks_of_no_file(world):
    world.set(status_json={**_clearnet()})
    got = world.run("--status", "--json")
    assert json.loads(got.stdout)["warnings"] == [
        "this qube is NOT behind a Whonix-Gateway (its netvm is sys-firewall): its own "
        "traffic is not Tor-routed. whonix-open opens files and links only in a disposable "
        "whose network dom0 enforces (Tor, or offline)."]


def test_opening_two_files_from_a_clearnet_qube_speaks_of_both(world, tmp_path):
    world.set(status_json={**_clearnet()})
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for f in files:
        f.write_text("x")
    got = world.run("--no-notify", *map(str, files))
    assert got.returncode == 0
    assert ("whonix-open: warning: this qube is NOT behind a Whonix-Gateway (its netvm is "
            "sys-firewall): its own traffic, such as the downloads that brought these files, "
            "is not Tor-routed. The disposables the files open in are still Tor-routed (or "
            "offline), because dom0 enforces that.\n") in got.stderr


def _clearnet() -> dict[str, object]:
    from tests.helpers import DOM0_STATUS_WHONIX

    return dict(DOM0_STATUS_WHONIX, qube="work", netvm="sys-firewall",
                netvm_is_whonix_gateway=False, is_whonix_workstation=False)


@pytest.mark.parametrize(("path", "what"), [("/nonexistent-dir/", "directory"),
                                            ("/nonexistent-dir", "file or directory")])
def test_recover_in_a_place_that_does_not_exist_is_an_error(desk, path, what):
    got = _run([sys.executable, "-m", "whonix_open.vm.cli", "--no-notify", "--recover", path],
               desk)
    assert (got.returncode, got.stdout) == (1, "")
    assert got.stderr == f"whonix-open: error: {path}: no such {what}.\n"


def test_recover_still_finds_the_edit_of_a_file_that_is_gone(desk, tmp_path, monkeypatch):
    leftover = tmp_path / ".notes.txt.whonix-open-abcd1234.complete"
    leftover.write_text("edited")
    # offered only as a run of ours recorded it (vm/replyrecords.py, issue 20)
    from whonix_open.vm import replyrecords

    monkeypatch.setenv("XDG_STATE_HOME", desk["XDG_STATE_HOME"])
    fd = os.open(leftover, os.O_RDONLY)
    try:
        replyrecords.record(fd, ".notes.txt.whonix-open-abcd1234")
    finally:
        os.close(fd)
    got = _run([sys.executable, "-m", "whonix_open.vm.cli", "--no-notify", "--recover",
                str(tmp_path / "notes.txt")], desk)
    assert got.returncode == 0, got.stderr
    assert [p.name for p in tmp_path.glob("notes.txt.whonix-open-edited-*")], got.stderr


def test_loop_guard_without_a_display_leaks_no_dialog_noise(desk, tmp_path):
    desk["PATH"] += os.pathsep + "/usr/bin"  # the real zenity: it would warn on stderr
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    env = dict(desk, QREXEC_SERVICE_FULL_NAME="qubes.OpenInVM")
    got = _run([sys.executable, "-m", "whonix_open.vm.cli", "--no-notify", str(doc)], env)
    assert got.returncode == 3
    assert got.stderr == ("whonix-open: error: refused: started from inside a qubes.OpenInVM "
                          "session (see qubes-issues #7406); not opening another disposable "
                          "without confirmation\n")


# --- --help points to nothing that is not installed ------------------------------

def test_help_lists_every_dom0_code_itself_instead_of_an_uninstalled_file(desk):
    from whonix_open.contract import SUMMARY, Exit

    got = _run([sys.executable, "-m", "whonix_open.vm.cli", "--help"], desk)
    assert got.returncode == 0 and got.stderr == ""
    assert "DESIGN.md" not in got.stdout
    for code in Exit:
        if code != Exit.OK:
            assert f"\n  {int(code):<8} {SUMMARY[code]}\n" in got.stdout, code
