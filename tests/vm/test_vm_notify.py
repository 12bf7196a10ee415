"""Notifications: used when stderr is not a terminal, never instead of it."""

from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
import sys

import pytest

from whonix_open.vm import cli, notify
from whonix_open.vm.report import Reporter


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("a")
    return path


def test_not_a_tty_results_and_errors_become_notifications(world, doc, tmp_path, mocker, capsys):
    seam = mocker.patch("whonix_open.vm.notify.notify", return_value="notify-send")
    assert cli.main([str(doc), str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    summaries = [c.args[0] for c in seam.call_args_list]
    assert summaries.count("whonix-open: error") == 1
    assert summaries.count("whonix-open") == 1  # the good file's result
    urgencies = {c.args[0]: c.args[2] for c in seam.call_args_list}
    assert urgencies["whonix-open: error"] == "critical"
    # stderr has them too: never only a notification.
    assert "no such file" in err and "unchanged" in err


def test_dom0_failure_is_notified(world, doc, mocker, capsys):
    world.set(exit=126)
    seam = mocker.patch("whonix_open.vm.notify.notify")
    assert cli.main([str(doc)]) == 126
    [call] = seam.call_args_list
    assert "policy denied" in call.args[1] and "administrator" in call.args[1]


def test_routing_warning_is_notified(world, doc, mocker, capsys):
    world.set(status_code=126)
    seam = mocker.patch("whonix_open.vm.notify.notify")
    assert cli.main([str(doc)]) == 0
    assert any(c.args[0] == "whonix-open: warning" for c in seam.call_args_list)


def test_no_notify_option(world, doc, mocker, capsys):
    seam = mocker.patch("whonix_open.vm.notify.notify")
    assert cli.main(["--no-notify", str(doc)]) == 0
    seam.assert_not_called()
    assert "unchanged" in capsys.readouterr().err


def test_quiet_drops_successes_but_not_errors(world, doc, tmp_path, mocker, capsys):
    seam = mocker.patch("whonix_open.vm.notify.notify")
    assert cli.main(["--quiet", str(doc), str(tmp_path / "missing")]) == 1
    assert [c.args[0] for c in seam.call_args_list] == ["whonix-open: error"]
    err = capsys.readouterr().err
    assert "unchanged" not in err and "no such file" in err


def test_on_a_terminal_no_notification(mocker):
    seam = mocker.patch("whonix_open.vm.notify.notify")
    out = FakeTty()
    reporter = Reporter(stream=out)
    reporter.error("boom")
    reporter.info("fine")
    seam.assert_not_called()
    assert "error: boom" in out.getvalue() and "fine" in out.getvalue()


def test_progress_line_escapes_the_file_name():
    out = FakeTty()
    Reporter(stream=out).progress("whonix-open: x\x1b]0;t\x07.iso: 5% of 9 MiB sent")
    assert out.getvalue() == "\rwhonix-open: x\\x1b]0;t\\x07.iso: 5% of 9 MiB sent\033[K"


def test_notify_send_is_used_with_a_safe_argv(mocker):
    mocker.patch("whonix_open.vm.notify.shutil.which", return_value="/usr/bin/notify-send")
    run = mocker.patch(
        "whonix_open.vm.notify.subprocess.run",
        return_value=subprocess.CompletedProcess([], 0),
    )
    assert notify.notify("-s", "$(rm -rf ~) `x`.pdf", "critical") == "notify-send"
    argv = run.call_args.args[0]
    assert argv[-3:] == ["--", "-s", "$(rm -rf ~) `x`.pdf"]
    assert "shell" not in run.call_args.kwargs


def test_notification_body_is_escaped_markup_and_valid_utf8(mocker):
    # The body is markup for the daemons (capability "body-markup"), and
    # notify-send aborts on text that is not UTF-8 (g_variant_new_string).
    mocker.patch("whonix_open.vm.notify.shutil.which", return_value="/usr/bin/notify-send")
    run = mocker.patch(
        "whonix_open.vm.notify.subprocess.run",
        return_value=subprocess.CompletedProcess([], 0),
    )
    name = "a<b>&amp;" + os.fsdecode(b"\xff") + ".pdf"
    assert notify.notify("whonix-open", f"{name}: opened", "low") == "notify-send"
    body = run.call_args.args[0][-1]
    # notify-send then turns each doubled backslash back into one.
    assert body == "a&lt;b&gt;&amp;amp;\\\\xff.pdf: opened"
    body.encode("utf-8")


def test_notify_send_gets_backslashes_doubled_gi_does_not(mocker, monkeypatch):
    # notify-send runs g_strcompress on the body: a file named "a\nb" (a real
    # backslash) would otherwise show a line break.
    mocker.patch("whonix_open.vm.notify.shutil.which", return_value="/usr/bin/notify-send")
    run = mocker.patch(
        "whonix_open.vm.notify.subprocess.run",
        return_value=subprocess.CompletedProcess([], 0),
    )
    notify.notify("s", "C:\\a\\nb")
    assert run.call_args.args[0][-1] == "C:\\\\a\\\\nb"


def test_file_names_with_control_characters_cannot_reach_the_terminal(world, tmp_path):
    # A downloaded file's name can carry ESC sequences, newlines, bidi
    # overrides and bytes that are not UTF-8; the user must see them escaped.
    name = b"x\x1b]0;owned\x07\x1b[2J\nfake line \xe2\x80\xaefdp.exe\xff"
    path = os.path.join(os.fsencode(str(tmp_path)), name)
    with open(path, "wb") as fh:
        fh.write(b"data")
    result = world.run(os.fsdecode(path))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr
    assert "\\x1b]0;owned\\x07\\x1b[2J\\nfake line \\u202efdp.exe\\xff" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    [note] = world.notifications()
    assert "\\x1b]0;owned" in note[4] and "\x1b" not in note[4]


def test_without_any_backend_notify_returns_none(mocker, monkeypatch):
    mocker.patch("whonix_open.vm.notify.shutil.which", return_value=None)
    monkeypatch.setitem(sys.modules, "gi", None)  # import gi -> ImportError
    assert notify.notify("s", "b") is None


def test_gi_is_used_when_notify_send_is_missing(mocker, monkeypatch):
    mocker.patch("whonix_open.vm.notify.shutil.which", return_value=None)
    fake_notify = mocker.MagicMock()
    fake_notify.is_initted.return_value = False
    fake_notify.Notification.new.return_value.show.return_value = True
    gi = mocker.MagicMock()
    repository = mocker.MagicMock(Notify=fake_notify)
    monkeypatch.setitem(sys.modules, "gi", gi)
    monkeypatch.setitem(sys.modules, "gi.repository", repository)
    assert notify.notify("s", "b", "low") == "gi"
    fake_notify.Notification.new.assert_called_once_with("s", "b")


def test_bad_urgency():
    with pytest.raises(ValueError):
        notify.notify("s", "b", "loud")


def test_notify_send_in_a_real_subprocess_run(world, doc, tmp_path):
    result = world.run(str(tmp_path / "missing"))
    assert result.returncode == 1
    [note] = world.notifications()
    assert note[:3] == ["--app-name=whonix-open", "--urgency=critical", "--"]
    assert note[3] == "whonix-open: error" and "no such file" in note[4]


_FAKE_DAEMON = r'''
import sys
from gi.repository import Gio, GLib
XML = """<node><interface name="org.freedesktop.Notifications">
<method name="Notify"><arg type="s" direction="in"/><arg type="u" direction="in"/>
<arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="s" direction="in"/>
<arg type="as" direction="in"/><arg type="a{sv}" direction="in"/><arg type="i" direction="in"/>
<arg type="u" direction="out"/></method>
<method name="GetCapabilities"><arg type="as" direction="out"/></method>
<method name="GetServerInformation"><arg type="s" direction="out"/>
<arg type="s" direction="out"/><arg type="s" direction="out"/><arg type="s" direction="out"/>
</method></interface></node>"""
iface = Gio.DBusNodeInfo.new_for_xml(XML).interfaces[0]
def call(conn, sender, path, name, method, params, inv):
    if method == "Notify":
        args = params.unpack()
        with open(sys.argv[1], "a", encoding="utf-8") as fh:
            fh.write(repr([args[3], args[4]]) + "\n")
        inv.return_value(GLib.Variant("(u)", (1,)))
    elif method == "GetCapabilities":
        inv.return_value(GLib.Variant("(as)", (["body", "body-markup"],)))
    else:
        inv.return_value(GLib.Variant("(ssss)", ("fake", "t", "1", "1.2")))
def own(conn, _name):
    conn.register_object("/org/freedesktop/Notifications", iface, call, None, None)
Gio.bus_own_name(Gio.BusType.SESSION, "org.freedesktop.Notifications", 0, own, None, None)
print("ready", flush=True)
GLib.MainLoop().run()
'''


def test_real_notify_send_shows_the_name_as_it_is(tmp_path):
    """notify() through the real notify-send to a recording daemon: markup
    escaped once, backslashes kept, a non-UTF-8 byte shown (no abort).
    libnotify-bin, dbus and python3-gi come from .ci/install-system-deps."""
    assert shutil.which("notify-send") and shutil.which("dbus-run-session")
    system_python = "/usr/bin/python3"  # the one with python3-gi
    probe = subprocess.run([system_python, "-c", "import gi"], capture_output=True, check=False)
    assert probe.returncode == 0, "python3-gi is missing: run .ci/install-system-deps"
    daemon = tmp_path / "daemon.py"
    daemon.write_text(_FAKE_DAEMON)
    log = tmp_path / "shown.log"
    script = tmp_path / "run.sh"
    script.write_text(
        f'"{system_python}" "{daemon}" "{log}" > "{tmp_path}/ready" & pid=$!\n'
        f'for i in $(seq 50); do [ -s "{tmp_path}/ready" ] && break; sleep 0.1; done\n'
        f'"{sys.executable}" -c "import os; from whonix_open.vm import notify; '
        "print(notify.notify('whonix-open', os.fsdecode(os.environb[b'NAME']) + ': opened'))\"\n"
        'kill "$pid"\n'
    )
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    env[b"NAME"] = b"a<b>&amp;\\n\xff.pdf"
    result = subprocess.run(
        ["dbus-run-session", "--", "sh", str(script)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == b"notify-send", result.stderr
    [shown] = [ast.literal_eval(line) for line in log.read_text("utf-8").splitlines()]
    assert shown == ["whonix-open", "a&lt;b&gt;&amp;amp;\\n\\xff.pdf: opened"]
