"""The link and app services in the shipped policy and the 30-user examples,
evaluated by the real qrexec parser (python3-qrexec from ../shared/upstream)."""

from __future__ import annotations

import pytest

from tests.policy.real_policy import Policy
from tests.policy.test_policy import DVM, _examples, request_reached, whonix_system
from whonix_open.contract import SERVICE_APP, SERVICE_URL


@pytest.fixture
def policy(tmp_path):
    return Policy(tmp_path)


@pytest.mark.parametrize(("service", "arg"), [(SERVICE_URL, "tor"), (SERVICE_URL, "tor-2"),
                                              (SERVICE_APP, "torbrowser+tor"),
                                              (SERVICE_APP, "terminal+offline")])
@pytest.mark.parametrize("source", ["anon-whonix", "work", "vault", "disp1234"])
def test_every_qube_may_ask_dom0_for_links_and_apps(policy, service, arg, source):
    """Not the broker's own disposables (test_containment.py): disp1234 is
    untagged here, one of qrexec's own @dispvm disposables."""
    verdict, why = policy.evaluate(service, arg, source, "@adminvm",
                                   whonix_system(disposable_tags=()))
    assert verdict == "allow", why
    assert why.rule.filepath.name == "70-whonix-open.policy"


@pytest.mark.parametrize("service", [SERVICE_URL, SERVICE_APP])
@pytest.mark.parametrize("target", ["sys-net", "anon-whonix", "@dispvm", "@default",
                                    f"@dispvm:{DVM}"])
def test_links_and_apps_go_to_dom0_only(policy, service, target):
    assert policy.action(service, "tor", "anon-whonix", target, whonix_system()) == "deny"


def _with(tmp_path, lines: list[str]) -> Policy:
    return Policy(tmp_path, extra={"30-user-whonix-open.policy": "\n".join(lines) + "\n"})


def test_link_examples(tmp_path):
    lines = [e for e in _examples() if e.startswith("whonix.OpenURLInDisposable")
             and ("mail" in e or "vault" in e)]
    assert len(lines) == 2
    p = _with(tmp_path, lines)
    si = whonix_system()
    assert p.action(SERVICE_URL, "tor", "mail", "@adminvm", si) == "ask"
    assert p.action(SERVICE_URL, "tor", "vault", "@adminvm", si) == "deny"
    assert p.action(SERVICE_URL, "tor", "work", "@adminvm", si) == "allow"


def _pair_reached(arg: str) -> tuple[str, str] | None:
    request = request_reached(SERVICE_APP, arg, caller="work")
    return None if request is None else (request.app, request.profile)


@pytest.mark.parametrize("arg", ["torbrowser+tor", "terminal+tor", "torbrowser+offline",
                                 "torbrowser+tor-2", "torbrowser", "tor", "+torbrowser+tor",
                                 "torbrowser++tor", "Torbrowser+tor", "torbrowser+tor+",
                                 "torbrowser_tor", ""])
def test_only_tor_browser_over_tor_example(tmp_path, arg):
    """The example allows exactly the pair it names: whatever else a qube
    spells is denied by the policy or refused by the broker."""
    lines = [e for e in _examples() if e.startswith("whonix.StartAppInDisposable")]
    assert len(lines) == 2
    verdict = _with(tmp_path, lines).action(SERVICE_APP, arg, "work", "@adminvm",
                                            whonix_system())
    reached = _pair_reached(arg)
    if verdict == "allow":
        assert reached in (None, ("torbrowser", "tor"))
    assert (verdict == "allow") == (arg == "torbrowser+tor")
