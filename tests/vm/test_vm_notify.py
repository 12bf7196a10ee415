"""Notifications: used when stderr is not a terminal, never instead of it."""

from __future__ import annotations

import io
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
