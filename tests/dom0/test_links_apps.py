"""whonix.OpenURLInDisposable and whonix.StartAppInDisposable end to end: the
real service executables, real pipes, the simulated Qubes, and a simulated
disposable side that behaves like the real qubes.OpenURL (one line, only
http/https/ftp) and qubes.StartApp (desktop id must exist; waits for the app).
They share the file broker's path: same checks, limits, watchdog, cleanup."""

from __future__ import annotations

import os
import signal

import pytest

from tests.dom0.test_hardening import run_until_lifetime_ends
from tests.dom0.test_open_service import CREATE, audit_line, finish, methods
from tests.helpers import wait_for
from whonix_open.contract import SERVICE_APP, SERVICE_OPEN, SERVICE_URL, Exit
from whonix_open.dom0.disposable import CONTAINED_TAG

URL = b"https://www.whonix.org/wiki/Qubes\n"


def launched(sim) -> list[dict]:
    return sim.snapshot().get("launched", [])


def _open_link(broker, url: bytes = URL, arg: str = "tor", **kw):
    return broker.run(url, service=SERVICE_URL, arg=arg, **kw)


def _start_app(broker, arg: str = "torbrowser+tor", **kw):
    return broker.run(b"\n", service=SERVICE_APP, arg=arg, **kw)


def _running(broker, sim, service: str, arg: str, data: bytes, caller: str = "anon-whonix"):
    """A link or app session that stays open until the test ends it (the
    browser or app is not closed)."""
    sim.set_fault("disposable_behaviour", "hang")
    before = len(launched(sim))
    proc = broker.start(service=service, arg=arg, caller=caller)
    proc.stdin.write(data)
    proc.stdin.flush()
    wait_for(lambda: len(launched(sim)) > before, "the disposable to start it")
    return proc


# --- links --------------------------------------------------------------------

def test_a_link_opens_in_a_tor_disposable_and_nothing_comes_back(broker, sim):
    r = _open_link(broker)
    assert r.code == Exit.OK, r.err
    assert r.out == b""
    (got,) = launched(sim)
    assert got["kind"] == "url" and got["url"] == URL.decode().strip()
    assert sim.disposables() == []
    line = audit_line(r.err)
    assert "service=whonix.OpenURLInDisposable profile=tor relay=qubes.OpenURL" in line
    assert "network=sys-whonix" in line and "exit=0" in line
    assert "whonix.org" not in r.err  # dom0 never reads (or logs) the link


def test_a_link_in_an_offline_profile_is_76_before_any_admin_call(broker, sim):
    r = _open_link(broker, arg="offline")
    assert r.code == Exit.LINK_NEEDS_NETWORK
    assert "offline profile offline" in r.err
    assert sim.calls() == []


def test_a_custom_offline_profile_refuses_links_too(broker, sim):
    broker.config.write_text('[profiles.airgap]\nnetwork = "offline"\n')
    assert _open_link(broker, arg="airgap").code == Exit.LINK_NEEDS_NETWORK
    assert sim.calls() == []


@pytest.mark.parametrize("bad", [b"javascript:alert(1)\n", b"file:///etc/passwd\n",
                                 b"HTTPS://upper.case/\n", b"-https://x/\n"])
def test_the_disposable_refuses_what_qubes_openurl_refuses(broker, sim, bad):
    """dom0 never reads the stream: a hostile caller reaches the disposable,
    whose qubes.OpenURL refuses it (exit 1) - dom0 reports 69 and kills it."""
    r = _open_link(broker, url=bad)
    assert r.code == Exit.DISPOSABLE_FAILED
    assert "qubes.OpenURL in disp" in r.err and "failed with exit code 1" in r.err
    assert launched(sim) == [] and sim.disposables() == []


def test_a_link_costs_the_same_admin_calls_as_a_file_open(broker, sim):
    assert broker.open_file().code == Exit.OK
    file_calls = methods(sim)
    assert _open_link(broker).code == Exit.OK
    link_calls = methods(sim)[len(file_calls):]
    assert sorted(link_calls) == sorted(file_calls), (file_calls, link_calls)


def test_the_link_disposable_is_contained_before_it_starts(broker, sim):
    assert _open_link(broker).code == Exit.OK
    calls = sim.calls()
    tag = next(i for i, c in enumerate(calls)
               if c["method"] == "admin.vm.tag.Set" and c.get("arg") == CONTAINED_TAG)
    start = next(i for i, c in enumerate(calls) if c["method"] == "admin.vm.Start")
    assert tag < start and calls[tag]["dest"] == calls[start]["dest"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_browser_is_open_kills_the_disposable(broker, sim, sig):
    proc = _running(broker, sim, SERVICE_URL, "tor", URL)
    proc.stdin.close()
    assert len(sim.disposables()) == 1
    proc.send_signal(sig)
    err = finish(proc)
    assert proc.returncode == Exit.INTERNAL and f"terminated by signal {int(sig)}" in err
    assert sim.disposables() == []


def test_the_caller_hanging_up_closes_the_browser_disposable(broker, sim):
    proc = _running(broker, sim, SERVICE_URL, "tor", URL)
    proc.stdin.close()
    proc.stdout.close()
    err = finish(proc)
    assert "the caller went away" in err
    assert sim.disposables() == []


def test_watchdog_kills_the_browser_disposable_on_a_netvm_change(broker, sim):
    proc = _running(broker, sim, SERVICE_URL, "tor", URL)
    proc.stdin.close()
    (disp,) = sim.disposables()
    sim.set_property(disp, "netvm", "sys-firewall")
    err = finish(proc)
    assert proc.returncode == Exit.NETVM_CHANGED, err
    assert sim.disposables() == []


def test_link_sessions_count_against_the_limits(broker, sim):
    broker.config.write_text("[limits]\nper_qube = 1\n")
    held = _running(broker, sim, SERVICE_URL, "tor", URL)
    try:
        r = _start_app(broker)
        assert r.code == Exit.TOO_MANY
        assert methods(sim).count(CREATE) == 1
    finally:
        held.send_signal(signal.SIGTERM)
        finish(held)
    assert sim.disposables() == []


def test_a_disposable_of_this_service_cannot_open_links(broker, sim):
    held = _running(broker, sim, SERVICE_URL, "tor", URL)
    try:
        (disp,) = sim.disposables()
        r = _open_link(broker, caller=disp)
        assert r.code == Exit.LOOP
    finally:
        held.send_signal(signal.SIGTERM)
        finish(held)


def test_a_link_session_past_its_lifetime_is_74(broker, sim, mocker, monkeypatch, capfd):
    code = run_until_lifetime_ends(broker, sim, mocker, monkeypatch, SERVICE_URL, URL)
    assert code == Exit.SESSION_EXPIRED
    assert "reached the session's maximum lifetime" in capfd.readouterr().err
    assert sim.disposables() == []


def test_a_link_caller_that_never_sends_costs_no_disposable(broker, sim):
    broker.config.write_text("[limits]\ncaller_wait_seconds = 1\n")
    proc = broker.start(service=SERVICE_URL, arg="tor")
    try:
        err = finish(proc)
    finally:
        proc.stdin.close()
    assert proc.returncode == Exit.CALLER_SILENT, err
    assert sim.calls() == []


# --- apps ---------------------------------------------------------------------

def test_tor_browser_starts_in_a_checked_tor_disposable(broker, sim):
    r = _start_app(broker)
    assert r.code == Exit.OK, r.err
    (got,) = launched(sim)
    assert (got["kind"], got["app"]) == ("app", "janondisttorbrowser.desktop")
    assert sim.disposables() == []
    line = audit_line(r.err)
    assert "relay=qubes.StartApp+janondisttorbrowser" in line and "network=sys-whonix" in line
    services = [s["service"] for s in sim.services()]
    assert services == ["qubes.StartApp+janondisttorbrowser"]
    assert got["stdin_is_devnull"]  # the caller's stream never reaches the app


def test_a_terminal_may_start_offline(broker, sim):
    r = _start_app(broker, arg="terminal+offline")
    assert r.code == Exit.OK, r.err
    assert "network=offline" in audit_line(r.err)
    assert launched(sim)[0]["app"] == "qubes-run-terminal.desktop"


def test_the_disposable_lives_as_long_as_the_app(broker, sim):
    proc = _running(broker, sim, SERVICE_APP, "torbrowser+tor", b"\n")
    (disp,) = sim.disposables()
    assert proc.poll() is None
    # The user closes Tor Browser (the simulated app quits on SIGUSR1): the
    # StartApp call ends with 0 and dom0 kills the disposable.
    (app,) = launched(sim)
    os.kill(app["pid"], signal.SIGUSR1)
    err = finish(proc)
    assert proc.returncode == Exit.OK, err
    assert disp not in sim.disposables()


def test_closing_the_caller_ends_the_app_and_its_disposable(broker, sim):
    proc = _running(broker, sim, SERVICE_APP, "terminal+tor", b"\n")
    proc.stdin.close()
    proc.stdout.close()
    assert "the caller went away" in finish(proc)
    assert sim.disposables() == []


@pytest.mark.parametrize("arg", ["torbrowser", "torbrowser+", "+tor", "Tor+tor", "a+b+c",
                                 "torbrowser+tor+x", "-x+tor", "tor"])
def test_a_malformed_app_argument_is_64_without_admin_calls(broker, sim, arg):
    assert _start_app(broker, arg=arg).code == Exit.BAD_REQUEST
    assert sim.calls() == []


def test_an_app_outside_the_allowlist_is_77_without_admin_calls(broker, sim):
    r = _start_app(broker, arg="xterm+tor")
    assert r.code == Exit.APP_NOT_ALLOWED and "app xterm is not allowed" in r.err
    assert sim.calls() == []


def test_the_administrator_can_withdraw_and_add_apps(broker, sim):
    broker.config.write_text('[apps.terminal]\nenabled = false\n'
                             '[apps.files]\ndesktop_id = "thunar"\n')
    assert _start_app(broker, arg="terminal+tor").code == Exit.APP_NOT_ALLOWED
    r = _start_app(broker, arg="files+tor")
    assert r.code == Exit.OK, r.err
    assert launched(sim)[0]["app"] == "thunar.desktop"


def test_an_allowed_app_missing_in_the_disposable_is_69_and_cleaned(broker, sim):
    broker.config.write_text('[apps.mail]\ndesktop_id = "thunderbird"\n')
    r = _start_app(broker, arg="mail+tor")
    assert r.code == Exit.DISPOSABLE_FAILED
    assert "qubes.StartApp+thunderbird" in r.err
    assert sim.disposables() == []


def test_an_unknown_profile_for_an_app_is_64(broker, sim):
    assert _start_app(broker, arg="torbrowser+nope").code == Exit.BAD_REQUEST
    assert sim.calls() == []


def test_a_bad_apps_table_is_66(broker, sim):
    broker.config.write_text('[apps.mail]\ndesktop_id = "../evil"\n')
    r = _start_app(broker)
    assert r.code == Exit.MISCONFIGURED and "apps.mail.desktop_id" in r.err


def test_an_app_costs_the_same_admin_calls_as_a_file_open(broker, sim):
    assert broker.open_file(service=SERVICE_OPEN, arg="offline").code == Exit.OK
    file_calls = methods(sim)
    assert _start_app(broker, arg="terminal+offline").code == Exit.OK
    app_calls = methods(sim)[len(file_calls):]
    assert sorted(app_calls) == sorted(file_calls)


def test_app_creation_failure_is_69(broker, sim):
    sim.set_fault("create_fails", True)
    assert _start_app(broker).code == Exit.DISPOSABLE_FAILED
    assert sim.disposables() == []


def test_signal_while_the_app_runs_kills_its_disposable(broker, sim):
    proc = _running(broker, sim, SERVICE_APP, "torbrowser+tor", b"\n")
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert proc.returncode == Exit.INTERNAL
    assert sim.disposables() == []


# --- the same refusals as a file open, for links and apps ---------------------

REQUESTS = {"link": (SERVICE_URL, "tor", URL), "app": (SERVICE_APP, "torbrowser+tor", b"\n")}


def _request(broker, kind: str):
    service, arg, data = REQUESTS[kind]
    return broker.run(data, service=service, arg=arg)


@pytest.mark.parametrize("kind", REQUESTS)
@pytest.mark.parametrize(("fault", "value", "code"), [
    ("wrong_klass", True, Exit.VERIFICATION_FAILED),
    ("wrong_template", True, Exit.VERIFICATION_FAILED),
    ("no_auto_cleanup", True, Exit.VERIFICATION_FAILED),
    ("start_fails", True, Exit.DISPOSABLE_FAILED),
    ("disposable_behaviour", "fail", Exit.DISPOSABLE_FAILED),
    ("qubesd_unreachable", True, Exit.INTERNAL),
])
def test_each_failure_has_the_file_opens_code_and_leaves_nothing(broker, sim, kind, fault,
                                                                 value, code):
    sim.set_fault(fault, value)
    r = _request(broker, kind)
    assert r.code == code, r.err
    if fault != "disposable_behaviour":
        assert launched(sim) == []  # nothing started in a disposable that failed a check
    if fault != "qubesd_unreachable":
        assert sim.disposables() == []


@pytest.mark.parametrize("kind", REQUESTS)
def test_a_netvm_that_does_not_stick_is_67(broker, sim, kind):
    sim.set_fault("netvm_set_ignored", True)
    sim.set_property("whonix-workstation-18-dvm", "netvm", "sys-firewall")
    r = _request(broker, kind)
    assert r.code == Exit.NETWORK_REFUSED, r.err
    assert launched(sim) == [] and sim.disposables() == []


@pytest.mark.parametrize("kind", REQUESTS)
def test_a_misconfigured_profile_is_66(broker, sim, kind):
    broker.config.write_text('[profiles.tor]\ngateway = "sys-firewall"\n')
    r = _request(broker, kind)
    assert r.code == Exit.MISCONFIGURED, r.err
    assert methods(sim).count(CREATE) == 0


@pytest.mark.parametrize("kind", REQUESTS)
@pytest.mark.parametrize("n", [0, 1, 5])
def test_preloads_follow_the_file_rules(broker, sim, kind, n):
    """tor on the DVM's own gateway takes at most the one preload handed out;
    the rest of the queue is left alone (as for files, test_preloads.py)."""
    dvm = "whonix-workstation-18-dvm"
    sim.set_feature("dom0", "preload-dispvm-delay", "3600")
    sim.set_feature(dvm, "preload-dispvm-max", str(n))
    sim.settle()
    ready = sim.preloads(dvm)
    r = _request(broker, kind)
    assert r.code == Exit.OK, r.err
    (got,) = launched(sim)
    if n:
        assert got["qube"] in ready
    assert set(sim.preloads(dvm)) <= set(ready)
    assert len(set(ready) - set(sim.preloads(dvm))) == (1 if n else 0)
    assert got["qube"] not in sim.disposables()
