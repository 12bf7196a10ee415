"""The whonix-open command line: arguments, file refusals before any qrexec
call, service names, several files at once, exit codes and their messages,
the loop guard."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, DOM0_STATUS_WHONIX
from whonix_open.contract import Exit
from whonix_open.vm import cli, loopguard
from whonix_open.vm.messages import MESSAGES


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("notes")
    return path


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--json", "x"],
        ["--profile", "Tor!", "x"],
        ["--profile", "-x", "x"],
        ["--profile", "a" * 32, "x"],
        ["--profile", "tor", "--offline", "x"],
        ["--view-only", "--edit", "x"],
        ["--status", "x"],
        ["--recover", "--status"],
        ["--bogus", "x"],
    ],
)
def test_bad_arguments_are_usage_errors_without_any_qrexec_call(world, args):
    result = world.run(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert world.calls() == []


def test_help_documents_the_exit_codes(world):
    result = world.run("--help")
    assert result.returncode == 0
    for text in ("exit status:", "\n  64       ", "\n  126      ", "require_whonix_gateway",
                 "view-only-"):
        assert text in result.stdout


def test_version(world):
    result = world.run("--version")
    assert result.returncode == 0 and result.stdout.startswith("whonix-open ")


def test_refusals_happen_before_any_qrexec_call(world, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    try:
        cases = {
            str(tmp_path): "is a directory",
            str(tmp_path / "missing.pdf"): "no such file",
            str(fifo): "named pipe",
            str(sock_path): "socket",
            "/dev/null": "device",
            str(dangling): "broken symbolic link",
        }
        for arg, text in cases.items():
            result = world.run(arg)
            assert result.returncode == 1, arg
            assert text in result.stderr, (arg, result.stderr)
        assert world.calls() == []
    finally:
        sock.close()


@pytest.mark.parametrize("suffix", ["/", "/.", "/..", "//", "/./"])
def test_a_file_named_as_a_directory_is_refused_like_the_kernel_does(world, doc, suffix):
    """realpath() drops a trailing "/" or "/.": "a.txt/" was accepted (and left
    a .part file), "a.txt/." sent the header "." (extension lost)."""
    link = doc.parent / "link.txt"
    link.symlink_to(doc)
    for arg in (str(doc) + suffix, str(link) + suffix):
        result = world.run("--no-notify", arg)
        assert result.returncode == 1, result.stderr
        assert f"{arg}: Not a directory" in result.stderr
        assert "Error" not in result.stderr and "Traceback" not in result.stderr
    assert world.calls() == [], "refused before any qrexec call"
    assert not [p for p in doc.parent.iterdir() if p.name.endswith(".part")]


def test_dev_stdin_on_a_pipe_is_named_a_pipe(world):
    result = world.run("--no-notify", "/dev/stdin", input="some text\n")
    assert result.returncode == 1
    assert "/dev/stdin: is a pipe" in result.stderr, result.stderr
    assert "symbolic link" not in result.stderr
    assert world.calls() == []


def test_dev_stdin_from_a_file_opens_that_file(world, doc):
    with open(doc, "rb") as stdin:
        result = world.run("--no-notify", "/dev/stdin", stdin=stdin)
    assert result.returncode == 0, result.stderr
    [call] = world.open_calls()
    assert bytes.fromhex(call["header"]).startswith(b"stdin\0")
    assert call["body_len"] == doc.stat().st_size


def test_unreadable_file_is_refused(world, doc, monkeypatch, capsys, mocker):
    """In-process: the tests may run as root, where mode 000 is readable."""
    real_open = os.open

    def fake_open(path, flags, *args, **kw):
        if path == doc.name and kw.get("dir_fd") is not None:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr("whonix_open.vm.targets.os.open", fake_open)
    notify = mocker.patch("whonix_open.vm.notify.notify")
    assert cli.main([str(doc)]) == 1
    assert "not readable" in capsys.readouterr().err
    assert world.calls() == []
    notify.assert_called_once()


def test_good_files_are_still_opened_when_one_is_refused(world, doc, tmp_path):
    result = world.run("--no-notify", str(tmp_path / "missing"), str(doc))
    assert result.returncode == 1  # the first failing argument decides
    assert len(world.open_calls()) == 1
    assert "no such file" in result.stderr and "unchanged" in result.stderr


@pytest.mark.parametrize(
    ("args", "config", "service"),
    [
        ([], None, "whonix.OpenInDisposable+tor"),
        (["--offline"], None, "whonix.OpenInDisposable+offline"),
        (["--profile", "tor-2"], None, "whonix.OpenInDisposable+tor-2"),
        (["--view-only", "--offline"], None, "whonix.ViewInDisposable+offline"),
        ([], 'default_profile = "offline"\n', "whonix.OpenInDisposable+offline"),
        (["--profile", "tor"], 'default_profile = "offline"\n', "whonix.OpenInDisposable+tor"),
        ([], "view_only = true\n", "whonix.ViewInDisposable+tor"),
        (["--edit"], "view_only = true\n", "whonix.OpenInDisposable+tor"),
    ],
)
def test_service_and_profile(world, doc, args, config, service):
    if config:
        world.write_config(config)
    result = world.run("--no-notify", *args, str(doc))
    assert result.returncode == 0, result.stderr
    calls = world.calls()
    assert calls[0]["argv"] == ["dom0", "whonix.RoutingStatus"]
    assert [c["argv"] for c in calls[1:]] == [["dom0", service]]


@pytest.mark.parametrize(
    ("status", "config", "service"),
    [
        # dom0's RoutingStatus names its default: that name is sent.
        ({"status_json": {**DOM0_STATUS_WHONIX, "default_profile": "work"}}, None, "+work"),
        # ... but the user's own default_profile wins over it.
        ({"status_json": {**DOM0_STATUS_WHONIX, "default_profile": "work"}},
         'default_profile = "offline"\n', "+offline"),
        # No answer from dom0 (denied) or no usable default in it: built-in "tor".
        ({"status_code": 126}, None, "+tor"),
        ({"status_json": {**DOM0_STATUS_WHONIX, "default_profile": None}}, None, "+tor"),
        ({"status_json": {**DOM0_STATUS_WHONIX, "default_profile": "Bad Name"}}, None, "+tor"),
    ],
)
def test_an_explicit_profile_is_always_sent(world, doc, status, config, service):
    """dom0 refuses an empty service argument (so that `+` cannot bypass a
    policy rule about `+tor`): the CLI always names a profile, and reuses the
    RoutingStatus answer it already asked for (no extra qrexec call)."""
    world.set(**status)
    if config:
        world.write_config(config)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    argvs = [c["argv"] for c in world.calls()]
    service = "whonix.OpenInDisposable" + service
    assert argvs == [["dom0", "whonix.RoutingStatus"], ["dom0", service]]


def test_name_starting_with_view_only_is_escaped_in_edit_mode(world, tmp_path):
    path = tmp_path / "view-only-draft.odt"
    path.write_text("draft")
    world.set(mode="edit")
    result = world.run("--no-notify", str(path))
    assert result.returncode == 0, result.stderr
    header = bytes.fromhex(world.open_calls()[0]["header"])
    assert header.startswith(b"_view-only-draft.odt\0")
    assert path.read_text() == "draft [edited]", "edits still come back"


def test_several_files_are_opened_concurrently_and_each_reported(world, tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.txt"
        path.write_text(f"file {i}")
        files.append(path)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    # Each stand-in waits until all three are in flight: sequential opens
    # would time out there (exit 99).
    world.set(mode="edit", rendezvous=[str(meeting), 3])
    result = world.run("--no-notify", *map(str, files))
    assert result.returncode == 0, result.stderr
    for i, path in enumerate(files):
        assert path.read_text() == f"file {i} [edited]"
        assert f"{path}: edited in a disposable; changes saved" in result.stderr
    assert len(world.open_calls()) == 3


def test_overall_exit_is_the_first_failing_files_code(world, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a")
    b.write_text("b")
    world.set(mode="none", exit=68)
    result = world.run("--no-notify", str(a), str(b))
    assert result.returncode == 68
    assert result.stderr.count("too many disposables") == 2


def test_same_file_twice_is_opened_once(world, doc, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(doc)
    result = world.run("--no-notify", str(doc), str(link))
    assert result.returncode == 1
    assert "given twice" in result.stderr
    assert len(world.open_calls()) == 1


NONZERO = [code for code in Exit if code != Exit.OK]


@pytest.mark.parametrize("code", NONZERO, ids=[c.name for c in NONZERO])
def test_each_exit_code_gets_its_own_message(world, doc, code):
    world.set(mode="none", exit=int(code))
    result = world.run("--no-notify", "--profile", "work", str(doc))
    assert result.returncode == int(code)
    expected = MESSAGES[code].format(profile="the profile 'work'")
    assert expected in " ".join(result.stderr.split())
    assert doc.read_text() == "notes"


def test_unknown_exit_code_is_a_transport_failure(world, doc):
    world.set(mode="none", exit=5)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 4
    assert "unexpected code 5" in result.stderr


def test_missing_qrexec_client_vm(world, doc):
    (world.bin / "qrexec-client-vm").unlink()
    if Path("/usr/lib/qubes/qrexec-client-vm").exists():  # pragma: no cover - on Qubes
        pytest.fail("this test needs a machine without Qubes' qrexec-client-vm")
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 4
    assert "qrexec-client-vm not found" in result.stderr
    assert "UNVERIFIED" in result.stderr  # the routing check fell back too


def test_loop_guard_refuses_inside_an_openinvm_session(world, doc):
    env = dict(world.env, QREXEC_SERVICE_FULL_NAME="qubes.OpenInVM", QREXEC_REMOTE_DOMAIN="dom0")
    result = subprocess.run(
        world.cli_argv("--no-notify", str(doc)),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 3
    assert "qubes.OpenInVM" in result.stderr and "#7406" in result.stderr
    assert world.calls() == []


def test_loop_guard_opens_when_confirmed(world, doc, monkeypatch, mocker):
    monkeypatch.setenv("QREXEC_SERVICE_FULL_NAME", "qubes.OpenURL+")
    confirm = mocker.patch("whonix_open.vm.loopguard.confirm", return_value=True)
    mocker.patch("whonix_open.vm.notify.notify")
    assert cli.main([str(doc)]) == 0
    confirm.assert_called_once()
    assert "qubes.OpenURL" in confirm.call_args.args[0]
    assert len(world.open_calls()) == 1


def test_loop_guard_detection():
    assert loopguard.spawning_service({"QREXEC_SERVICE_FULL_NAME": "qubes.OpenInVM"})
    assert loopguard.spawning_service({"QREXEC_SERVICE_FULL_NAME": "qubes.OpenURL+x"})
    assert not loopguard.spawning_service({"QREXEC_SERVICE_FULL_NAME": "qubes.VMShell"})
    assert not loopguard.spawning_service({})


def test_loop_guard_cannot_ask_without_terminal_or_dialog(monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert loopguard.confirm("open?") is False


def test_installed_console_script_runs(world, doc):
    script = Path(sys.executable).with_name("whonix-open")
    result = subprocess.run(
        [str(script), "--no-notify", str(doc)],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
