"""Our policy files, loaded next to the real R4.3 dom0 files, in order."""

import re
import shutil
from pathlib import Path

import pytest

from tests.policy.qrexec_policy import PolicyError, Qube, evaluate, load, parse_file

REPO = Path(__file__).resolve().parents[2]
OURS = REPO / "policy"
UPSTREAM = Path(__file__).parent / "fixtures"

ANON = Qube("anon-whonix", tags=("anon-vm",))
WORK = Qube("work")
DISP = Qube("disp42", klass="DispVM", tags=("anon-vm",))
SERVICES = ("whonix.OpenInDisposable", "whonix.ViewInDisposable")


@pytest.fixture
def rules():
    return load(OURS, UPSTREAM)


def action(rules, service, arg, source, target="dom0"):
    rule = evaluate(rules, service, arg, source, target)
    return rule.action if rule else "deny"


def test_file_names_are_valid_and_files_parse():
    files = sorted(OURS.glob("*.policy"))
    assert [f.name for f in files] == ["30-user-whonix-open.policy", "70-whonix-open.policy"]
    for f in files:
        parse_file(f)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("arg", ["", "tor", "offline", "tor-2"])
@pytest.mark.parametrize("source", [ANON, WORK, DISP])
def test_every_qube_may_ask_dom0(rules, service, arg, source):
    rule = evaluate(rules, service, arg, source, "dom0")
    assert rule.action == "allow" and rule.where.startswith("70-whonix-open")


@pytest.mark.parametrize("service", [*SERVICES, "whonix.RoutingStatus"])
@pytest.mark.parametrize("target", ["sys-net", "anon-whonix", "@dispvm", "@default"])
def test_no_other_target(rules, service, target):
    assert action(rules, service, "", ANON, target) == "deny"


def test_routing_status_takes_no_argument(rules):
    assert action(rules, "whonix.RoutingStatus", "", WORK) == "allow"
    assert action(rules, "whonix.RoutingStatus", "tor", WORK) == "deny"


def test_stock_open_in_vm_rules_are_untouched(rules):
    # Whonix's own 80-whonix.policy still governs qubes.OpenInVM.
    assert action(rules, "qubes.OpenInVM", "", ANON, "@dispvm") == "ask"
    assert action(rules, "qubes.OpenInVM", "", WORK, "@dispvm") == "allow"


def test_user_template_examples_work_when_uncommented(tmp_path):
    text = (OURS / "30-user-whonix-open.policy").read_text()
    examples = [line[1:] for line in text.splitlines()
                if re.match(r"#whonix\.", line)]
    assert examples, "the template should carry examples"
    (tmp_path / "30-user-whonix-open.policy").write_text("\n".join(examples[:4]) + "\n")
    shutil.copy(OURS / "70-whonix-open.policy", tmp_path)
    rules = load(tmp_path, UPSTREAM)
    restricted = Qube("mail", tags=("offline-only",))
    assert action(rules, "whonix.OpenInDisposable", "offline", restricted) == "allow"
    assert action(rules, "whonix.ViewInDisposable", "offline", restricted) == "allow"
    assert action(rules, "whonix.OpenInDisposable", "tor", restricted) == "deny"
    assert action(rules, "whonix.OpenInDisposable", "", restricted) == "deny"
    assert action(rules, "whonix.OpenInDisposable", "tor", WORK) == "allow"
    # every example line parses
    (tmp_path / "30-user-whonix-open.policy").write_text("\n".join(examples) + "\n")
    parse_file(tmp_path / "30-user-whonix-open.policy")


@pytest.mark.parametrize("bad", [
    "whonix.OpenInDisposable * @anyvm @adminvm allow # trailing comment",
    "whonix.OpenInDisposable * @anyvm @adminvm permit",
    "whonix.OpenInDisposable * @anyvm",
    "whonix.OpenInDisposable tor @anyvm @adminvm allow",
    "whonix.OpenInDisposable * @anyvm @adminvm deny target=dom0",
])
def test_the_reader_is_strict(tmp_path, bad):
    (tmp_path / "30-x.policy").write_text(bad + "\n")
    with pytest.raises(PolicyError):
        parse_file(tmp_path / "30-x.policy")


def test_bad_file_name_is_caught(tmp_path):
    (tmp_path / "30-User.policy").write_text("")
    with pytest.raises(PolicyError, match="file name"):
        parse_file(tmp_path / "30-User.policy")
