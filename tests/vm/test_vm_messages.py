"""The message table (vm/messages.py) covers every code of the contract."""

from __future__ import annotations

from whonix_open.contract import Exit
from whonix_open.vm.exitcodes import CliExit, from_transport
from whonix_open.vm.messages import MESSAGES, describe


def test_every_contract_code_has_a_distinct_message():
    assert set(MESSAGES) == set(Exit)
    texts = [MESSAGES[code] for code in Exit]
    assert len(set(texts)) == len(texts)


def test_specific_advice():
    assert "policy denied" in describe(126, None) and "administrator" in describe(126, None)
    assert "'tor-2'" in describe(64, "tor-2")
    assert "default profile" in describe(64, None)
    assert "NOT opened" in describe(67, "tor")
    assert "try again later" in describe(68, None)
    assert "not installed" in describe(127, None)
    no_network = describe(79, "tor")
    assert "'tor'" in no_network and "no network" in no_network
    assert "--offline" in no_network
    assert "qvm-features NAME-OF-THIS-QUBE whonix-open-allow-network 1" in no_network


def test_unknown_codes():
    assert "unexpected code 9" in describe(9, None)
    assert "signal 9" in describe(-9, None)


def test_qrexec_client_vm_own_failures_are_named():
    # agent/qrexec-client-vm.c exits 1 when it cannot reach the agent (or on a
    # vchan error); libqrexec returns -1 (255) when the connection closes
    # before an exit code arrived.
    assert "qrexec agent" in describe(1, None)
    assert "broke off" in describe(255, None)
    assert from_transport(255) == CliExit.TRANSPORT


def test_cli_codes():
    assert from_transport(0) == 0
    assert from_transport(67) == 67 and from_transport(126) == 126
    assert from_transport(1) == CliExit.TRANSPORT and from_transport(-15) == CliExit.TRANSPORT


def test_every_message_is_whole_sentences():
    """The CLI appends sentences after these ("... The original is
    unchanged; ..."): each must end with a full stop (signal 9's did not)."""
    codes = [int(c) for c in Exit] + [1, 255, 9, -9, -15]
    for code in codes:
        assert describe(code, "tor").endswith("."), code


def test_every_contract_code_has_a_summary():
    """The few words --help and whonix-open-app show (contract.SUMMARY)."""
    from whonix_open.contract import SUMMARY

    assert set(SUMMARY) == set(Exit)
    assert all(text and not text.endswith(".") for text in SUMMARY.values())
