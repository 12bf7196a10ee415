"""whonix.ConvertInDisposable in the shipped policy, evaluated by the real qrexec
parser (python3-qrexec from ../shared/upstream): every qube may ask dom0 (which
then refuses network profiles itself, 78), nothing else is a target. (What
the broker's own disposables may call is the containment rules' business.)"""

from __future__ import annotations

import pytest

from tests.policy.real_policy import Policy
from tests.policy.test_policy import DVM, whonix_system
from whonix_open.contract import SERVICE_CONVERT


@pytest.fixture
def policy(tmp_path):
    return Policy(tmp_path)


@pytest.mark.parametrize("arg", ["300+offline", "75+offline", "4800+airgap"])
@pytest.mark.parametrize("source", ["anon-whonix", "work", "mail"])
def test_every_qube_may_ask_dom0_to_convert(policy, arg, source):
    verdict, why = policy.evaluate(SERVICE_CONVERT, arg, source, "@adminvm", whonix_system())
    assert verdict == "allow", why
    assert why.rule.filepath.name == "70-whonix-open.policy"


@pytest.mark.parametrize("target", ["sys-net", "anon-whonix", "@dispvm", "@default",
                                    f"@dispvm:{DVM}"])
def test_conversions_go_to_dom0_only(policy, target):
    assert policy.action(SERVICE_CONVERT, "300+offline", "anon-whonix", target,
                         whonix_system()) == "deny"


def test_an_admin_rule_can_deny_a_tag(tmp_path):
    p = Policy(tmp_path, extra={"30-user-whonix-open.policy":
                                "whonix.ConvertInDisposable * @tag:no-convert @adminvm deny\n"})
    si = whonix_system()
    si["domains"]["work"]["tags"] = ["no-convert"]
    assert p.action(SERVICE_CONVERT, "300+offline", "work", "@adminvm", si) == "deny"
    assert p.action(SERVICE_CONVERT, "300+offline", "anon-whonix", "@adminvm", si) == "allow"
