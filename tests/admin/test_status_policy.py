"""`whonix-open-admin status` and `policy explain` (the latter with the real
qrexec parser over the shipped files, 90-default, 80-whonix and a
shadowing Global Config file), and the policy findings of `check`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.admin.conftest import REPO, findings, require_qrexec
from tests.dom0.conftest import Broker
from tests.helpers import DEADLINE, wait_for

DEAD_SESSION = "anon-whonix.4242.0badc0de"
VENDOR = REPO / "policy" / "70-whonix-open.policy"


def vendor_rule(text: str) -> str:
    """'70-whonix-open.policy:N' of the rule whose words are *text*."""
    lines = [" ".join(line.split()) for line in VENDOR.read_text().splitlines()]
    return f"{VENDOR.name}:{lines.index(text) + 1}"


SHADOW = ("# Qubes Global Config writes files like this one\n"
          "whonix.OpenInDisposable * @tag:anon-vm @adminvm deny\n")


@pytest.fixture(autouse=True)
def _qrexec():
    require_qrexec()


def test_status_of_a_session_joins_record_and_system(make_admin):
    admin = make_admin("orphan")
    now = time.time()
    admin.session("disp78.4242.0badc0de", {
        "disposables": ["disp77"], "pid": 4242, "caller": "disp78", "owner": "anon-whonix",
        "profile": "tor", "dvm": "whonix-workstation-18-dvm", "network": "sys-whonix",
        "started": now - 125, "deadline": now + 3475}, alive=True)
    data = admin.run("status", "--json").json()
    assert data["version"] == 1 and data["command"] == "status"
    [s] = data["sessions"]
    assert s["state"] == "open" and s["caller"] == "disp78" and s["owner"] == "anon-whonix"
    assert s["profile"] == "tor" and s["network"] == "sys-whonix"
    assert s["disposables"] == [{"name": "disp77", "state": "Running"}]
    assert 120 <= s["age_seconds"] <= 125 + DEADLINE and s["left_seconds"] <= 3475
    text = admin.run("status").out.splitlines()
    assert text[0].split() == ["CALLER", "PROFILE", "DISPOSABLE", "NETWORK", "AGE", "LEFT",
                               "STATE"]
    assert text[1].split()[:7] == ["disp78", "(created", "by", "anon-whonix)", "tor", "disp77",
                                   "sys-whonix"]


def test_status_hides_stale_sessions_unless_asked(make_admin):
    admin = make_admin("orphan")
    admin.session("anon-whonix.1.00000001", {"disposables": ["disp77"]}, alive=False)
    assert admin.run("status").out == "no open sessions\n"
    [s] = admin.run("status", "--all", "--json").json()["sessions"]
    assert s["state"] == "stale"


def test_hostile_record_fields_are_dropped(make_admin):
    admin = make_admin()
    admin.session("x.1.00000001", {"disposables": ["ok1", "../../etc", 5],
                                   "caller": "bad\nname", "profile": "Tor!",
                                   "started": "yesterday"}, alive=True)
    [s] = admin.run("status", "--json").json()["sessions"]
    assert [d["name"] for d in s["disposables"]] == ["ok1"]
    assert s["caller"] is None and s["profile"] is None and s["age_seconds"] is None


def test_status_lists_a_real_broker_session(make_admin):
    admin = make_admin()
    admin.sim.set_fault("disposable_behaviour", "hang")
    proc = Broker(admin.sim, admin.tmp).start(arg="offline")
    try:
        proc.stdin.write(b"a.txt".ljust(256, b"\0"))
        proc.stdin.flush()
        disp = wait_for(lambda: [s["qube"] for s in admin.sim.services()], "the relay")[0]
        [s] = admin.run("status", "--json").json()["sessions"]
        assert s["state"] == "open" and s["disposables"][0]["name"] == disp
    finally:
        proc.terminate()
        proc.communicate(timeout=DEADLINE)
    assert admin.run("status").out == "no open sessions\n"


def explain(admin, *args):
    return admin.run("policy", "explain", "--policy-dir", str(admin.policy), *args)


def test_explain_names_the_deciding_rule(admin):
    data = explain(admin, "anon-whonix", "--json").json()
    by_call = {d["service"] + d["argument"]: d for d in data["decisions"]}
    tor = by_call["whonix.OpenInDisposable+tor"]
    assert (tor["result"], tor["where"], tor["resolved"]) == \
        ("allow", vendor_rule(tor["rule"]), "dom0")
    assert tor["rule"] == "whonix.OpenInDisposable * @anyvm @adminvm allow"
    stock = by_call["qubes.OpenInVM+"]
    assert stock["result"] == "ask" and stock["file"] == "80-whonix.policy"
    assert stock["resolved"] == "@dispvm:whonix-workstation-18-dvm"
    shell = by_call["qubes.VMShell+"]
    assert shell["result"] == "allow" and shell["file"] == "90-default.policy"


def test_explain_one_call_in_words(admin):
    rule = "whonix.RoutingStatus * @anyvm @adminvm deny"
    out = explain(admin, "vault", "whonix.RoutingStatus+x")
    assert out.code == 0
    assert out.out.splitlines() == [
        "whonix.RoutingStatus+x -> dom0: DENY",
        f"    {vendor_rule(rule)}: {rule}"]


def test_explain_follows_the_users_file_and_a_shadowing_file(admin):
    (admin.policy / "30-user-whonix-open.policy").write_text(
        "whonix.OpenInDisposable +offline vault @adminvm allow\n"
        "whonix.OpenInDisposable * vault @adminvm deny\n")
    (admin.policy / "50-config-whonix.policy").write_text(SHADOW)
    by = {(d["source"], d["argument"]): d
          for q in ("vault", "anon-whonix")
          for d in explain(admin, q, "whonix.OpenInDisposable+tor", "--json")
          .json()["decisions"]}
    assert by[("vault", "+tor")]["where"] == "30-user-whonix-open.policy:2"
    assert by[("vault", "+tor")]["result"] == "deny"
    assert by[("anon-whonix", "+tor")]["where"] == "50-config-whonix.policy:2"


def test_explain_an_unknown_qube(admin):
    out = explain(admin, "nosuch")
    assert out.code == 2 and out.err == "whonix-open-admin: no qube named 'nosuch'\n"


def test_check_warns_about_a_shadowing_file(admin):
    (admin.policy / "50-config-whonix.policy").write_text(SHADOW)
    warns = [f for f in findings(admin.check(), "WARN") if f["check"] == "policy"]
    assert warns and all("50-config-whonix.policy:2" in f["message"] for f in warns)
    assert {f["message"].split(" from ")[0] for f in warns} >= {
        "whonix.OpenInDisposable+tor", "whonix.OpenInDisposable+offline"}
    assert "anon-whonix" in warns[0]["qubes"] and "vault" not in warns[0]["qubes"]


def test_check_fails_a_policy_file_name_qrexec_rejects(admin):
    (admin.policy / "50-My Rules.policy").write_text("")
    out = admin.check()
    [bad] = [f for f in findings(out, "FAIL") if f["check"] == "policy"]
    assert "refuses every qrexec call" in bad["message"]
    assert bad["fix"] == [f"sudo mv {admin.policy}/50-My Rules.policy "
                          f"{admin.policy}/50-my-rules.policy"]
    assert out.code == 1


def test_check_says_so_when_qrexec_is_missing(admin, tmp_path):
    """python3-qrexec absent: a WARN saying so, never a guess (a real process
    whose `import qrexec` fails)."""
    blocker = tmp_path / "block"
    (blocker / "qrexec").mkdir(parents=True)
    (blocker / "qrexec" / "__init__.py").write_text("raise ImportError('no qrexec here')\n")
    env = {**admin.env(), "PYTHONPATH": str(blocker)}
    r = subprocess.run([sys.executable, str(REPO / "packaging" / "whonix-open-admin"),
                        "check", "-q"], env=env, capture_output=True, text=True,
                       timeout=DEADLINE, check=False)
    assert r.returncode == 0, r.stderr
    assert "WARN  policy              policy not checked: the qrexec policy parser is not " \
           "installed" in r.stdout


def test_launcher_help_reads_like_a_man_page(admin):
    env = {**os.environ, **admin.env()}
    launcher = [sys.executable, str(REPO / "packaging" / "whonix-open-admin")]
    top = subprocess.run([*launcher, "--help"], env=env, capture_output=True, text=True,
                         timeout=DEADLINE, check=False)
    assert top.returncode == 0 and "commands:" in top.stdout
    for cmd in ("check", "status", "reap", "policy"):
        r = subprocess.run([*launcher, cmd, "--help"], env=env, capture_output=True, text=True,
                           timeout=DEADLINE, check=False)
        assert r.returncode == 0 and f"usage: whonix-open-admin {cmd}" in r.stdout
        assert "Exit status:" in r.stdout
    bad = subprocess.run([*launcher, "frobnicate"], env=env, capture_output=True, text=True,
                         timeout=DEADLINE, check=False)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr


def test_check_fails_a_file_that_lets_an_opened_disposable_out(admin):
    """Containment (DESIGN.md, Enforcement 8) checked before anyone opens a
    file: an earlier file allowing qubes.VMShell to the Whonix DVM template's
    disposables for everyone. (A rule for plain @dispvm would not get out: an
    opened disposable has no default_dispvm.)"""
    rule = "qubes.VMShell * @anyvm @dispvm:whonix-workstation-18-dvm allow"
    (admin.policy / "50-config-shell.policy").write_text(rule + "\n")
    out = admin.check()
    [hole] = [f for f in findings(out, "FAIL") if f["check"] == "containment"]
    assert hole["message"] == (
        f"an opened disposable may call qubes.VMShell towards "
        f"@dispvm:whonix-workstation-18-dvm: 50-config-shell.policy:1 ({rule}) decides "
        f"before the containment rules of 70-whonix-open.policy")
    assert hole["fix"] == ["edit /etc/qubes/policy.d/50-config-shell.policy line 1: exclude "
                           "@tag:whonix-open-disposable (a deny rule for it before this one)"]
    assert out.code == 1


def test_check_passes_containment_on_the_shipped_policy(admin):
    passed = [f for f in findings(admin.check(), "PASS") if f["check"] == "containment"]
    assert len(passed) == 1 and "qubes.VMShell" in passed[0]["message"]


def test_check_fails_a_disposable_of_ours_without_the_tag(make_admin):
    admin = make_admin("orphan")
    admin.sim.set_property("disp77", "tags", ["anon-vm", "created-by-dom0"])
    admin.session(DEAD_SESSION, {"disposables": ["disp77"]}, alive=True)
    out = admin.check()
    [bad] = findings(out, "FAIL")
    assert bad["check"] == "containment" and bad["qubes"] == ["disp77"]
    assert bad["fix"] == ["qvm-kill disp77"]


def test_explain_a_request_the_real_parser_fails_on(admin):
    """An @dispvm:NAME rule against @dispvm from a qube without default_dispvm:
    qrexec's parser raises (match_strings gets None), the daemon answers
    nothing and the call is refused - explain says so instead of crashing."""
    (admin.policy / "50-config-shell.policy").write_text(
        "qubes.VMShell * @anyvm @dispvm:whonix-workstation-18-dvm allow\n")
    assert admin.sim.qube("sys-net")["default_dispvm"] in (None, "")
    out = explain(admin, "sys-net", "qubes.VMShell", "--json")
    [d] = out.json()["decisions"]
    from importlib.metadata import version

    if tuple(int(x) for x in version("qrexec").split(".")[:2]) < (4, 3):
        # qrexec 4.2.x: that rule just does not match; 90-default's
        # `qubes.VMShell * @anyvm @dispvm allow` decides, and without a
        # default_dispvm it denies (the release matrix found this difference)
        assert out.code == 0 and d["result"] == "deny"
        assert d["file"] == "90-default.policy" and d["resolved"] is None
        return
    assert out.code == 0 and d["result"] == "deny" and d["where"] is None
    assert d["rule"] == "qrexec's parser fails on this request (AttributeError): refused"
