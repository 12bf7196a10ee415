"""From a qube without a netvm, end to end (the real whonix-open CLI, the
sim's qrexec-client-vm stand-in, the real dom0 services): networked profiles
are refused with 79 and the user is told what that means and how the
administrator opts the qube in; offline still works."""

from __future__ import annotations

from tests.vm.test_e2e_sim import CONTENT, EDIT_SUFFIX, chain, doc  # noqa: F401 - fixtures
from whonix_open.contract import Exit


def test_a_file_from_the_vault_is_refused_with_79_and_explained(chain, doc):  # noqa: F811
    result = chain.run("--no-notify", str(doc), caller="vault")
    assert result.returncode == Exit.NO_NEW_NETWORK
    text = " ".join(result.stderr.split())
    assert "this qube has no network" in text and "'tor'" in text
    assert "qvm-features NAME-OF-THIS-QUBE whonix-open-allow-network 1" in text
    assert doc.read_bytes() == CONTENT
    assert chain.no_disposables_left() and chain.sim.received() == []


def test_a_link_from_the_vault_is_refused_with_79(chain):  # noqa: F811
    result = chain.run("--no-notify", "https://attacker.example/?secret=1", caller="vault")
    assert result.returncode == Exit.NO_NEW_NETWORK, result.stderr
    assert chain.sim.snapshot().get("launched", []) == []


def test_the_vault_still_opens_files_offline(chain, doc):  # noqa: F811
    result = chain.run("--no-notify", "--offline", str(doc), caller="vault")
    assert result.returncode == 0, result.stderr
    assert doc.read_bytes() == CONTENT + EDIT_SUFFIX
