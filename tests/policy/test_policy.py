"""Our policy files with the real qrexec parser, next to the real R4.3 dom0
files (90-default, Whonix's 80-whonix, 35-compat), first match wins."""

from __future__ import annotations

import re

import pytest

from tests.policy.real_policy import OURS, Policy, qube, system
from whonix_open.contract import SERVICE_OPEN, SERVICE_STATUS, SERVICE_VIEW, Exit
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import parse_request

DVM = "whonix-workstation-18-dvm"
SERVICES = (SERVICE_OPEN, SERVICE_VIEW)
# What 80-whonix and 90-default let any qube start in a (new) disposable or
# another qube: the ways out of a disposable's network path.
ESCAPES = ("qubes.VMShell", "qubes.VMExec", "qubes.VMExecGUI", "qubes.OpenInVM",
           "qubes.OpenURL", "qubes.StartApp")


def whonix_system(disposable_default_dispvm: str | None = None,
                  disposable_tags: tuple[str, ...] = ("whonix-open-disposable",)) -> dict:
    """A Qubes-Whonix dom0 with one disposable opened by whonix-open. Its tags
    are what qubesd gives it (the DVM's, created-by-dom0) plus ours."""
    return system(**{
        "sys-net": qube(), "sys-firewall": qube(),
        "sys-whonix": qube(tags=("anon-gateway",)),
        "sys-whonix-2": qube(tags=("anon-gateway",)),
        DVM: qube(tags=("anon-vm",), template_for_dispvms=True, default_dispvm=DVM),
        "default-dvm": qube(template_for_dispvms=True, default_dispvm="default-dvm"),
        "anon-whonix": qube(tags=("anon-vm",), default_dispvm=DVM),
        "work": qube(default_dispvm="default-dvm"),
        "vault": qube(),
        "mail": qube(tags=("offline-only",), default_dispvm="default-dvm"),
        "disp1234": qube("DispVM", ("anon-vm", "created-by-dom0", "disp-created-by-dom0",
                                    *disposable_tags),
                         default_dispvm=disposable_default_dispvm),
    })


@pytest.fixture
def policy(tmp_path):
    return Policy(tmp_path)


def test_file_names_are_valid_and_the_real_parser_loads_them(policy):
    files = sorted(p.name for p in OURS.glob("*.policy"))
    assert files == ["30-user-whonix-open.policy", "70-whonix-open.policy"]
    assert all(re.fullmatch(r"[0-9a-z_.-]+\.policy", f) for f in files)
    assert any("70-whonix-open.policy" in str(r.filepath) for r in policy.policy.rules)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("arg", ["", "tor", "offline", "tor-2"])
@pytest.mark.parametrize("source", ["anon-whonix", "work", "vault", "disp1234"])
def test_every_qube_may_ask_dom0(policy, service, arg, source):
    """Every qube but the broker's own disposables (test_containment.py);
    disp1234 here is one of qrexec's own @dispvm disposables (untagged). The
    broker then refuses what a qube may not have (vault: 79)."""
    verdict, resolution = policy.evaluate(service, arg, source, "@adminvm",
                                          whonix_system(disposable_tags=()))
    assert verdict == "allow", resolution
    assert resolution.rule.filepath.name == "70-whonix-open.policy"


@pytest.mark.parametrize("service", [*SERVICES, SERVICE_STATUS])
@pytest.mark.parametrize("target", ["sys-net", "anon-whonix", "@dispvm", "@default",
                                    f"@dispvm:{DVM}"])
def test_no_other_target(policy, service, target):
    assert policy.action(service, "", "anon-whonix", target, whonix_system()) == "deny"


def test_routing_status_takes_no_argument(policy):
    si = whonix_system()
    assert policy.action(SERVICE_STATUS, "", "work", "@adminvm", si) == "allow"
    assert policy.action(SERVICE_STATUS, "tor", "work", "@adminvm", si) == "deny"


def test_stock_rules_for_other_qubes_are_untouched(policy):
    si = whonix_system()
    assert policy.action("qubes.OpenInVM", "", "anon-whonix", "@dispvm", si) == "ask"
    assert policy.action("qubes.OpenInVM", "", "work", "@dispvm", si) == "allow"
    assert policy.action("qubes.VMShell", "", "work", "@dispvm", si) == "allow"


# --- issue 7.1: no way from the opened disposable to another network ----------

@pytest.mark.parametrize("service", ESCAPES)
@pytest.mark.parametrize("target", ["@dispvm", f"@dispvm:{DVM}", "@dispvm:default-dvm",
                                    "@default", "anon-whonix", "work", DVM])
@pytest.mark.parametrize("profile_dispvm", [None, DVM], ids=["default_dispvm-none",
                                                             "default_dispvm-inherited"])
def test_the_opened_disposable_cannot_reach_another_qube(policy, service, target,
                                                         profile_dispvm):
    """Whatever the profile (tor, offline, a second gateway), the opened
    disposable carries our tag and has default_dispvm none; even if the
    second layer failed and it still had its DVM's default_dispvm, the first
    one denies every way out."""
    si = whonix_system(disposable_default_dispvm=profile_dispvm)
    verdict, why = policy.evaluate(service, "", "disp1234", target, si)
    assert verdict == "deny", why


@pytest.mark.parametrize("service", ("qubes.VMShell", "qubes.VMExec", "qubes.VMExecGUI"))
def test_default_dispvm_none_alone_closes_the_silent_escape(tmp_path, service):
    """The second layer on its own: without our policy file, a disposable
    whose default_dispvm is none has no @dispvm to start; with the inherited
    one it would get a networked disposable without any prompt."""
    empty = tmp_path / "no-ours"
    empty.mkdir()
    bare = Policy(tmp_path, ours=empty)
    untagged = {"disposable_tags": ()}
    assert bare.action(service, "", "disp1234", "@dispvm",
                       whonix_system(DVM, **untagged)) == "allow"  # the escape
    assert bare.action(service, "", "disp1234", "@dispvm",
                       whonix_system(None, **untagged)) == "deny"


# --- issue 7.3: a rule about a profile sees every request for it ----------------

def request_reached(service: str, arg: str, caller: str = "vault"):
    """The request the broker would serve for this argument (None: refused 64)."""
    env = {"QREXEC_REMOTE_DOMAIN": caller, "QREXEC_SERVICE_ARGUMENT": arg,
           "QREXEC_SERVICE_FULL_NAME": f"{service}+{arg}"}
    try:
        return parse_request(service, [arg] if arg else [], env)
    except Refusal as e:
        assert e.code == Exit.BAD_REQUEST
        return None


def _profile_reached(service: str, arg: str) -> str | None:
    request = request_reached(service, arg)
    return None if request is None else request.profile


def _examples() -> list[str]:
    text = (OURS / "30-user-whonix-open.policy").read_text()
    return [line[1:] for line in text.splitlines() if re.match(r"#whonix\.", line)]


def test_every_template_example_parses_with_the_real_parser(tmp_path):
    examples = _examples()
    assert len(examples) >= 9
    Policy(tmp_path, extra={"30-user-whonix-open.policy": "\n".join(examples) + "\n"})


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("arg", ["", "tor", "offline", "tor-2", "Tor", "tor_", "+tor",
                                 "-tor", "tor."])
def test_no_spelling_reaches_a_profile_past_a_rule_about_it(tmp_path, service, arg):
    """Issue 7.3: `+tor ... deny` must stop every request that would reach
    the tor profile. qrexec turns bytes outside [A-Za-z0-9_.+-] into `_`, so
    these are the spellings a qube can send."""
    deny_tor = [e for e in _examples() if "+tor" in e and "vault" in e]
    assert len(deny_tor) == 2
    policy = Policy(tmp_path, extra={"30-user-whonix-open.policy": "\n".join(deny_tor) + "\n"})
    verdict = policy.action(service, arg, "vault", "@adminvm", whonix_system())
    reached = _profile_reached(service, arg)
    if reached == "tor":
        assert verdict == "deny"
    if verdict == "allow":
        assert reached != "tor"


def _action_with_examples(tmp_path, lines: list[str], service, arg, source):
    policy = Policy(tmp_path, extra={"30-user-whonix-open.policy": "\n".join(lines) + "\n"})
    return policy.action(service, arg, source, "@adminvm", whonix_system())


@pytest.mark.parametrize(("service", "arg", "source", "expected"), [
    (SERVICE_OPEN, "offline", "mail", "allow"),
    (SERVICE_VIEW, "offline", "mail", "allow"),
    (SERVICE_OPEN, "tor", "mail", "deny"),
    (SERVICE_VIEW, "tor-2", "mail", "deny"),
    (SERVICE_OPEN, "tor", "work", "allow"),
])
def test_offline_only_example(tmp_path, service, arg, source, expected):
    lines = [e for e in _examples() if "offline-only" in e]
    assert _action_with_examples(tmp_path, lines, service, arg, source) == expected


@pytest.mark.parametrize(("service", "arg", "expected"), [
    (SERVICE_OPEN, "tor", "deny"), (SERVICE_VIEW, "tor", "deny"),
    (SERVICE_OPEN, "offline", "allow"), (SERVICE_VIEW, "offline", "allow"),
])
def test_keep_off_tor_example(tmp_path, service, arg, expected):
    lines = [e for e in _examples() if "+tor" in e and "vault" in e]
    assert _action_with_examples(tmp_path, lines, service, arg, "vault") == expected


def test_view_only_and_ask_and_off_examples(tmp_path):
    examples = _examples()
    view = [e for e in examples if " personal " in e]
    assert _action_with_examples(tmp_path / "a", view, SERVICE_OPEN, "tor", "personal") == "deny"
    assert _action_with_examples(tmp_path / "b", view, SERVICE_VIEW, "tor",
                                 "personal") == "allow"
    ask = [e for e in examples if " work " in e]
    assert _action_with_examples(tmp_path / "c", ask, SERVICE_OPEN, "tor", "work") == "ask"
    off = [e for e in examples if "@anyvm" in e]
    for service in SERVICES:
        assert _action_with_examples(tmp_path / f"d{service}", off, service, "tor",
                                     "work") == "deny"
