"""`whonix-open-admin check` and `policy explain` follow the broker's rule for
qubes without a netvm (exit 79 unless opted in) and the containment rules of
70-whonix-open.policy, and agree with what the real broker executable does."""

from __future__ import annotations

import pytest

from tests.admin.conftest import findings, require_qrexec
from tests.dom0.conftest import Broker
from whonix_open.contract import Exit
from whonix_open.dom0.admission import OPT_IN_FEATURE

URL_TOR = "whonix.OpenURLInDisposable+tor"


@pytest.fixture(autouse=True)
def _qrexec():
    require_qrexec()


def _explain(admin, qube: str, call: str | None = None,
             target: str | None = None) -> dict[str, dict]:
    args = ["policy", "explain", "--policy-dir", str(admin.policy), qube, *([call] if call else []),
            "--json", *(["--target", target] if target else [])]
    out = admin.run(*args)
    assert out.code == 0, out.err
    return {d["service"] + d["argument"]: d for d in out.json()["decisions"]}


def _policy_line(admin, call: str) -> str:
    [line] = [f["message"] for f in findings(admin.check(), "PASS")
              if f["check"] == "policy" and f["message"].startswith(f"{call} -> dom0: ")]
    return line


def test_check_says_which_qubes_the_broker_refuses(admin):
    line = _policy_line(admin, URL_TOR)
    assert "refused by the broker (79): " in line
    refused = line.split("refused by the broker (79): ")[1].split(";")[0].split(", ")
    assert "vault" in refused and "sys-net" in refused and "anon-whonix" not in refused
    offline = _policy_line(admin, "whonix.OpenInDisposable+offline")
    assert "refused by the broker" not in offline and "vault" in offline


def test_explain_shows_the_broker_refusal_and_it_is_what_the_broker_does(admin):
    by = _explain(admin, "vault")
    assert by[URL_TOR]["result"] == "allow" and by[URL_TOR]["broker"] == Exit.NO_NEW_NETWORK
    assert by["whonix.OpenInDisposable+offline"]["broker"] is None
    assert by["qubes.OpenInVM+"]["broker"] is None  # not the broker's to refuse
    result = Broker(admin.sim, admin.tmp).run(b"https://example.org/\n",
                                              service="whonix.OpenURLInDisposable",
                                              arg="tor", caller="vault")
    assert result.code == Exit.NO_NEW_NETWORK
    text = admin.run("policy", "explain", "--policy-dir", str(admin.policy), "vault",
                     URL_TOR).out
    assert text.splitlines()[0] == (f"{URL_TOR} -> dom0: ALLOW -> dom0, but the broker "
                                    f"refuses it (exit 79)")


def test_an_opted_in_qube_is_a_warning_and_the_broker_serves_it(admin):
    assert [f for f in findings(admin.check(), "WARN") if f["check"] == "network-opt-in"] == []
    admin.sim.set_feature("vault", OPT_IN_FEATURE, "1")
    out = admin.check()
    [warn] = [f for f in findings(out, "WARN") if f["check"] == "network-opt-in"]
    assert warn["qubes"] == ["vault"]
    assert warn["fix"] == [f"qvm-features --unset vault {OPT_IN_FEATURE}"]
    assert out.code == 0  # the administrator's choice: a warning, not a failure
    assert _explain(admin, "vault")[URL_TOR]["broker"] is None
    assert Broker(admin.sim, admin.tmp).open_file(caller="vault").code == Exit.OK


def test_a_rule_before_the_vendor_file_that_lets_the_gateway_in_fails(admin):
    (admin.policy / "50-config-whonix.policy").write_text(
        "whonix.SdwdateStatus * @anyvm @anyvm allow\n")
    fails = [f for f in findings(admin.check(), "FAIL") if f["check"] == "containment"]
    assert any(f["message"].startswith("whonix.SdwdateStatus may be called in an opened "
                                       "disposable by ") and "sys-whonix" in f["message"]
               for f in fails), fails


def test_a_rule_before_the_vendor_file_that_lets_the_clipboard_out_fails(admin):
    (admin.policy / "50-config-clipboard.policy").write_text(
        "qubes.ClipboardPaste * @anyvm @anyvm ask\n")
    fails = [f for f in findings(admin.check(), "FAIL") if f["check"] == "containment"]
    assert any("qubes.ClipboardPaste towards" in f["message"]
               and "50-config-clipboard.policy:1" in f["message"] for f in fails), fails


def test_the_shipped_policy_contains_everything(admin):
    [ok] = [f for f in findings(admin.check()) if f["check"] == "containment"]
    assert ok["level"] == "PASS"
    assert "whonix services" in ok["message"] and "whonix.SdwdateStatus" in ok["message"]


def test_an_offline_disposable_has_no_qrexec_path_to_the_gateway_or_another_qube(admin):
    """A real offline disposable of this service on the simulated system (the
    DVM template's tags, the broker's tag and marker, netvm none), through
    `policy explain` - the real parser with the system information qubesd
    would give qrexec."""
    admin.sim.add_qube("whonix-open-disp42", klass="DispVM",
                       template="whonix-workstation-18-dvm", netvm="", default_dispvm="",
                       auto_cleanup=True, power_state="Running",
                       tags=["anon-vm", "created-by-dom0", "whonix-open-disposable"],
                       features={"whonix-open-session": "anon-whonix.1.00000001"})
    for service, target in [("whonix.NewStatus", "sys-whonix"), ("qubes.Filecopy", "personal"),
                            ("qubes.UpdatesProxy", "@default"), ("qubes.VMShell", "@dispvm"),
                            ("qubes.OpenURL", "@dispvm:whonix-workstation-18-dvm"),
                            ("qubes.ClipboardPaste", "anon-whonix")]:
        [d] = _explain(admin, "whonix-open-disp42", f"{service}+", target).values()
        assert d["result"] == "deny", d
    for call in ("whonix.OpenInDisposable+offline", "whonix.OpenURLInDisposable+tor"):
        [d] = _explain(admin, "whonix-open-disp42", call).values()
        assert d["result"] == "deny" and d["broker"] is None, d  # the policy stops it first
    [ok] = [f for f in findings(admin.check()) if f["check"] == "containment"]
    assert ok["level"] == "PASS"
