"""`whonix-open-admin check`: a correct Whonix setup passes; each
misconfiguration gives exactly its finding, with the command that fixes it;
the JSON schema is the documented one; check and broker agree."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from tests.admin.conftest import findings, require_qrexec
from tests.dom0.conftest import Broker
from whonix_open.dom0.admin.findings import CHECKS
from whonix_open.dom0.admin.inventory import Source
from whonix_open.dom0.admin.main import main
from whonix_open.dom0.backend import NoSuchQube
from whonix_open.sim.backend import SimBackend

CHECK_KEYS = {"check", "level", "qubes", "message", "fix"}


@pytest.fixture(autouse=True)
def _qrexec():
    require_qrexec()


def only_problem(out) -> dict:
    problems = findings(out, "WARN") + findings(out, "FAIL")
    assert len(problems) == 1, problems
    return problems[0]


def test_a_correct_whonix_setup_passes_everything(admin):
    out = admin.check()
    assert out.code == 0, out.out
    data = out.json()
    assert data["summary"] == {"PASS": len(data["findings"]), "WARN": 0, "FAIL": 0}
    seen = {f["check"] for f in data["findings"]}
    # every subject was looked at (the ones that only report problems aside)
    assert seen >= {"config", "profile", "fast-path", "dvm-netvm", "anon-netvm",
                    "anon-default-dispvm", "dvm-running", "orphan", "policy"}


def test_json_schema_is_stable(admin):
    data = admin.check().json()
    assert set(data) == {"version", "command", "findings", "summary", "exit"}
    assert data["version"] == 1 and data["command"] == "check" and data["exit"] == 0
    for f in data["findings"]:
        assert set(f) == CHECK_KEYS
        assert f["check"] in CHECKS and f["level"] in ("PASS", "WARN", "FAIL")
        assert all(isinstance(q, str) for q in f["qubes"])
        assert all(isinstance(c, str) for c in f["fix"])


# scenario -> (check, level, first qubes, fix commands)
CASES = {
    "dvm-clearnet": ("dvm-netvm", "FAIL", ["whonix-workstation-18-dvm", "sys-firewall"],
                     ["qvm-prefs whonix-workstation-18-dvm netvm sys-whonix"]),
    "anon-clearnet": ("anon-netvm", "FAIL", ["anon-whonix", "sys-firewall"],
                      ["qvm-prefs anon-whonix netvm sys-whonix"]),
    "anon-default-dispvm": ("anon-default-dispvm", "FAIL", ["anon-whonix", "default-dvm"],
                            ["qvm-prefs anon-whonix default_dispvm "
                             "whonix-workstation-18-dvm"]),
    "nested-dispvm": ("anon-default-dispvm", "FAIL",
                      ["whonix-workstation-18-dvm", "default-dvm", "anon-whonix"],
                      ["qvm-prefs whonix-workstation-18-dvm default_dispvm "
                       "whonix-workstation-18-dvm"]),
    "dvm-running": ("dvm-running", "FAIL", ["whonix-workstation-18-dvm"],
                    ["qvm-shutdown --wait whonix-workstation-18-dvm"]),
    "named-disposable": ("named-disposable", "WARN", ["anon-disp"],
                         ["qvm-shutdown --wait anon-disp", "qvm-remove anon-disp"]),
    "no-auto-cleanup": ("no-auto-cleanup", "WARN", ["disp4242"],
                        ["qvm-prefs disp4242 auto_cleanup True"]),
    # marked, but no record names it (the run dir was lost): proves nothing
    "orphan": ("unproven", "WARN", ["disp77"], ["qvm-kill disp77"]),
    "preload": ("fast-path", "WARN", ["whonix-workstation-18-dvm"],
                ["whonix-open-admin setup --profile offline"]),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
def test_each_misconfiguration_gives_exactly_its_finding(make_admin, scenario):
    check, level, qubes, fix = CASES[scenario]
    admin = make_admin(scenario)
    out = admin.check()
    got = only_problem(out)
    assert (got["check"], got["level"]) == (check, level)
    assert got["qubes"][:len(qubes)] == qubes
    assert got["fix"] == [c.format(config=admin.config) for c in fix]
    assert out.code == (1 if level == "FAIL" else 0)


def test_text_output_names_the_qubes_and_the_fix(make_admin):
    out = make_admin("dvm-clearnet").run("check", "-q", "--policy-dir",
                                         str(make_admin().policy))
    assert out.code == 1
    assert "FAIL  dvm-netvm" in out.out
    assert "qubes: whonix-workstation-18-dvm, sys-firewall, anon-whonix" in out.out
    assert "fix:   qvm-prefs whonix-workstation-18-dvm netvm sys-whonix" in out.out
    assert "PASS" not in out.out.splitlines()[0]
    assert out.out.rstrip().endswith("0 WARN, 1 FAIL")


def test_preloads_a_profile_can_use_pass(make_admin):
    out = make_admin("preload").check()
    passed = [f for f in findings(out, "PASS") if f["check"] == "fast-path"]
    assert len(passed) == 1 and "profile tor takes one of the 2 preloaded" in \
        passed[0]["message"]


def test_a_disposable_of_a_live_session_is_no_orphan(make_admin):
    admin = make_admin("orphan")
    admin.session("anon-whonix.4242.0badc0de", {"disposables": ["disp77"], "pid": 4242},
                  alive=True)
    out = admin.check()
    assert out.code == 0 and not findings(out, "FAIL")


def test_a_broken_profiles_toml_fails(admin):
    admin.config.write_text("[limits]\nper_qube = true\n")
    out = admin.check()
    got = only_problem(out)
    assert got["check"] == "config" and got["level"] == "FAIL"
    assert "limits.per_qube" in got["message"] and got["fix"] == [f"edit {admin.config}"]


def test_a_profile_pinned_to_a_non_gateway_fails_with_the_candidates(admin):
    admin.config.write_text('[profiles.tor-2]\nnetwork = "tor"\ngateway = "sys-firewall"\n')
    got = only_problem(admin.check())
    assert got["check"] == "profile" and "profile tor-2 is refused (66)" in got["message"]
    assert got["fix"] == [f"edit {admin.config}: profiles.tor-2.gateway must name a "
                          f"Whonix-Gateway (sys-whonix)"]


def test_a_lost_template_for_dispvms_is_named(make_admin):
    out = make_admin("no-ws-dvm").check()
    fails = findings(out, "FAIL")
    assert {f["check"] for f in fails} == {"profile"} and len(fails) == 2  # tor, offline
    assert all(f["fix"] == ["qvm-prefs whonix-workstation-18-dvm template_for_dispvms True"]
               for f in fails)


@pytest.mark.parametrize("scenario, broker_exit", [("default", 0), ("no-ws-dvm", 66),
                                                     ("gateway-not-whonix", 66)])
def test_check_and_broker_agree(make_admin, scenario, broker_exit):
    admin = make_admin(scenario)
    profile_fails = [f for f in findings(admin.check(), "FAIL") if f["check"] == "profile"
                     and "profile tor " in f["message"]]
    result = Broker(admin.sim, admin.tmp).open_file(arg="tor")
    assert result.code == broker_exit, result.err
    assert bool(profile_fails) == (broker_exit == 66)


def test_qubesd_unreachable_is_a_sentence_and_exit_3(admin):
    admin.sim.set_fault("qubesd_unreachable", True)
    out = admin.check()
    assert out.code == 3 and out.json()["exit"] == 3  # --json: the error as JSON too
    assert out.err.startswith("whonix-open-admin: cannot read the system from qubesd")



def test_dom0s_preload_setting_counts_for_the_global_default_dispvm(admin):
    """qubesd's get_feat_preload_max: dom0's preload-dispvm-max applies to the
    global default_dispvm (the simulation has no global properties: a source
    that knows it is injected, as `app` is in the qvm-* tools)."""
    class WithGlobalDefault(Source):
        def global_default_dispvm(self):
            return "whonix-workstation-18-dvm"

    admin.sim.set_feature("dom0", "preload-dispvm-max", "3")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", "--json", "--policy-dir", str(admin.policy)],
                    app=WithGlobalDefault(SimBackend.from_env(admin.env())), env=admin.env())
    fast = {f["message"].split()[1]: f for f in json.loads(out.getvalue())["findings"]
            if f["check"] == "fast-path"}
    assert code == 0
    assert {p: f["level"] for p, f in fast.items()} == {"offline": "WARN", "tor": "PASS"}
    assert "tor takes one of the 3 preloaded" in fast["tor"]["message"]


def test_an_unknown_backend_is_refused_in_words(admin):
    env = {**admin.env(), "WHONIX_OPEN_BACKEND": "nonsense"}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["status"], env=env)
    assert code == 3
    assert err.getvalue() == ("whonix-open-admin: cannot read the system from qubesd: "
                              "unknown WHONIX_OPEN_BACKEND='nonsense'\n")


def test_a_qube_that_vanishes_during_the_check_is_left_out(admin):
    """Disposables come and go while check reads the system: one that is gone
    between the list and its properties is not there, not an error."""
    vanished = []

    class Vanishing(SimBackend):
        def info(self, name):
            if name == "anon-whonix":
                vanished.append(name)
                raise NoSuchQube(f"no such qube: {name}")
            return super().info(name)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", "--json", "--policy-dir", str(admin.policy)],
                    app=Source(Vanishing.from_env(admin.env())), env=admin.env())
    data = json.loads(out.getvalue())
    assert code == 0 and vanished
    assert not any("anon-whonix" in f["qubes"] for f in data["findings"])
