"""Issue 16 in the policy, evaluated by the real qrexec parser next to the
real R4.3 dom0 files: the broker's disposables (tag whonix-open-disposable)
are denied the whonix services before any allow, reach no other qube by any
service, and the gateway reaches nothing in them."""

from __future__ import annotations

import pytest

from tests.policy.real_policy import OURS, Policy
from tests.policy.test_policy import DVM, whonix_system
from whonix_open.contract import (
    SERVICE_APP,
    SERVICE_OPEN,
    SERVICE_STATUS,
    SERVICE_URL,
    SERVICE_VIEW,
)
from whonix_open.dom0.disposable import CONTAINED_TAG

VENDOR = "70-whonix-open.policy"
CONVERT = "whonix.ConvertInDisposable"  # coming (issue 17): named in the policy now
OURS_SERVICES = (SERVICE_OPEN, SERVICE_VIEW, SERVICE_URL, SERVICE_APP, SERVICE_STATUS, CONVERT)
ARGS = ("", "tor", "offline", "torbrowser+tor", "terminal+offline", "tor-2")
# Every service that carries data out of a qube, stock and Whonix, and one no
# file names yet: the containment must not depend on the list.
OUT = ("qubes.Filecopy", "qubes.OpenInVM", "qubes.OpenURL", "qubes.StartApp", "qubes.VMShell",
       "qubes.VMExec", "qubes.VMExecGUI", "qubes.ClipboardPaste", "qubes.ConnectTCP",
       "qubes.UpdatesProxy", "qubes.GetImageRGBA", "qubes.Notifications", "whonix.NewStatus",
       "sdwdate-gui.Connect", "sdwdate.Connect", "qubes.SomeFutureService")
TARGETS = ("@dispvm", f"@dispvm:{DVM}", "@dispvm:default-dvm", "@default", "sys-whonix",
           "sys-net", "anon-whonix", "work", "vault", DVM)
DISPOSABLE = "disp1234"  # whonix_system(): tagged as the broker tags its disposables


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return Policy(tmp_path_factory.mktemp("policy"))


def contained(**kw) -> dict:
    """A Qubes-Whonix system with one broker disposable; with sdwdate-gui's
    tags as Whonix's salt sets them, so 80-whonix's rules for them apply."""
    si = whonix_system(**kw)
    domains = si["domains"]
    domains[DISPOSABLE]["tags"].append("sdwdate-gui-client")
    domains["sys-whonix"]["tags"].append("sdwdate-gui-server")
    domains["sys-whonix"]["uuid"] = "00000000-0000-4000-8000-000000000001"
    return si


@pytest.mark.parametrize("service", OURS_SERVICES)
@pytest.mark.parametrize("arg", ARGS)
def test_the_whonix_services_are_denied_to_the_brokers_disposables(policy, service, arg):
    verdict, why = policy.evaluate(service, arg, DISPOSABLE, "@adminvm", contained())
    assert verdict == "deny"
    assert f"{VENDOR}:" in str(why)
    # ... by the containment rule of the vendor file, not by a catch-all after it
    line = int(str(why).rsplit(":", 1)[1])
    assert line < _first_allow_line()


def _rules(policy) -> list:
    return [r for r in policy.policy.rules if r.filepath.name == VENDOR]


def _first_allow_line() -> int:
    text = (OURS / VENDOR).read_text().splitlines()
    return next(n for n, line in enumerate(text, 1)
                if line.strip() and not line.startswith("#") and line.split()[4] == "allow")


def test_every_containment_rule_comes_before_every_allow(policy):
    rules = _rules(policy)
    containment = [r for r in rules if f"@tag:{CONTAINED_TAG}" in (str(r.source), str(r.target))]
    allows = [r for r in rules if type(r.action).__name__ == "Allow"]
    assert containment and allows
    assert max(r.lineno for r in containment) < min(r.lineno for r in allows)
    assert all(type(r.action).__name__ == "Deny" for r in containment)
    assert {r.service for r in containment} >= {*OURS_SERVICES, None}  # None: "*"


@pytest.mark.parametrize("service", OUT)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("default_dispvm", [None, DVM])
def test_a_brokers_disposable_reaches_no_other_qube(policy, service, target, default_dispvm):
    """Whatever its profile (an offline disposable carries the same tags):
    no path to the gateway, to a new disposable or to another qube - also if
    the second layer (default_dispvm none) had failed."""
    verdict, why = policy.evaluate(service, "", DISPOSABLE, target,
                                   contained(disposable_default_dispvm=default_dispvm))
    assert verdict == "deny", why


@pytest.mark.parametrize(("service", "arg"), [("whonix.SdwdateStatus", ""),
                                              ("whonix.GatewayCommand", "restart"),
                                              ("whonix.GatewayCommand", "showlog")])
def test_the_gateway_reaches_nothing_in_it(policy, service, arg):
    si = contained()
    assert policy.action(service, arg, "sys-whonix", DISPOSABLE, si) == "deny"
    # unchanged for Whonix's own workstations (80-whonix)
    assert policy.action(service, arg, "sys-whonix", "anon-whonix", si) == "allow"


@pytest.mark.parametrize("service", ("qubes.OpenInVM", "qubes.OpenURL", "qubes.StartApp",
                                     "qubes.Filecopy", "qubes.VMShell", "qubes.VMExec",
                                     "qubes.VMExecGUI"))
@pytest.mark.parametrize("source", ("anon-whonix", "work", "sys-whonix"))
def test_no_qube_sends_its_data_into_it(policy, service, source):
    assert policy.action(service, "", source, DISPOSABLE, contained()) == "deny"


def test_ask_dialogs_do_not_offer_it(policy):
    """80-whonix's ask for anon-vm qubes lists the other anon-vm qubes as
    targets; the broker's disposables carry anon-vm but are not among them."""
    for service in ("qubes.OpenInVM", "qubes.Filecopy"):
        verdict, resolution = policy.evaluate(service, "", "anon-whonix", "@dispvm"
                                              if service == "qubes.OpenInVM" else "@default",
                                              contained())
        assert verdict == "ask"
        assert DISPOSABLE not in resolution.targets_for_ask
        assert "work" in resolution.targets_for_ask or service == "qubes.OpenInVM"


def test_qubes_own_disposables_are_untouched(policy):
    """Without the tag (qrexec's own @dispvm disposable) stock rules apply."""
    si = whonix_system(disposable_default_dispvm=DVM, disposable_tags=())
    assert policy.action("qubes.VMShell", "", DISPOSABLE, "@dispvm", si) == "allow"
    assert policy.action("whonix.NewStatus", "", DISPOSABLE, "sys-whonix", si) == "allow"
    assert policy.action(SERVICE_OPEN, "tor", DISPOSABLE, "@adminvm", si) == "allow"


def test_dom0_services_still_answer_it(policy):
    """It still boots as Qubes expects: dom0's own services are not ways out."""
    si = contained()
    for service in ("qubes.FeaturesRequest", "qubes.NotifyTools"):
        assert policy.action(service, "", DISPOSABLE, "dom0", si) == "allow"


def test_the_clipboard_example_lets_exactly_the_clipboard_out(tmp_path):
    text = (OURS / "30-user-whonix-open.policy").read_text()
    (example,) = [line[1:] for line in text.splitlines() if line.startswith("#qubes.")]
    p = Policy(tmp_path, extra={"30-user-whonix-open.policy": example + "\n"})
    si = contained()
    assert p.action("qubes.ClipboardPaste", "", DISPOSABLE, "work", si) == "ask"
    assert p.action("qubes.Filecopy", "", DISPOSABLE, "work", si) == "deny"


def test_qubes_policy_lint_accepts_the_files():
    """qrexec's own linter (qubes-policy-lint), as an administrator runs it."""
    import subprocess
    import sys

    files = [str(OURS / "70-whonix-open.policy"), str(OURS / "30-user-whonix-open.policy")]
    r = subprocess.run([sys.executable, "-m", "qrexec.tools.qubes_policy_lint", *files],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
