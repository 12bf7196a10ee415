"""What differs between the Qubes releases README.md claims (R4.2, R4.3,
and upstream's development line), handled where qubesadmin and qrexec are
imported: one test per difference. `make test-releases` runs this file with
each release's own libraries (.venv-r4.2, .venv-r4.3, .venv-dev)."""

from __future__ import annotations

import pathlib
from importlib.metadata import version

import pytest

from tests.dom0.test_preloads import DVM
from whonix_open.contract import Exit
from whonix_open.dom0.backend import BackendError


def _release(package: str) -> tuple[int, int]:
    major, minor = version(package).split(".")[:2]
    return int(major), int(minor)


def test_an_admin_api_refusal_is_a_backend_error(qubesd, sim):
    """qubesadmin 4.2.18 has no exc.PermissionDenied (4.3 and 4.4 do): qubesd's
    refusal then arrives as QubesException. Either way it is a BackendError,
    never an AttributeError from the except clause itself."""
    import qubesadmin.exc

    from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

    assert hasattr(qubesadmin.exc, "PermissionDenied") == (_release("qubesadmin") >= (4, 3))
    backend = QubesadminBackend(env={"WHONIX_OPEN_QUBESD_SOCKET": qubesd.socket_path})
    sim.set_fault("qubesd_refuses", ["admin.vm.CreateDisposable"])
    with pytest.raises(BackendError, match=r"PermissionDenied|QubesException"):
        backend.create_disposable(DVM)


def test_a_refused_create_is_69_not_73(broker, sim):
    sim.set_fault("qubesd_refuses", ["admin.vm.CreateDisposable"])
    r = broker.open_file()
    assert r.code == Exit.DISPOSABLE_FAILED, r.err
    assert "Traceback" not in r.err and "AttributeError" not in r.err


def test_policy_directories_are_this_qrexecs_own():
    """qrexec 4.2.x loads only /etc/qubes/policy.d and its FilePolicy takes one
    directory; 4.3+ adds /run/qubes/policy.d first and takes a list."""
    import qrexec

    from whonix_open.dom0.admin import policy

    if _release("qrexec") >= (4, 3):
        assert policy.default_dirs() == [str(qrexec.RUNTIME_POLICY_PATH),
                                         str(qrexec.POLICYPATH)]
    else:
        assert not hasattr(qrexec, "RUNTIME_POLICY_PATH")
        assert policy.default_dirs() == ["/etc/qubes/policy.d"]


def test_policy_loads_with_this_qrexec(tmp_path):
    from whonix_open.dom0.admin import policy

    repo = pathlib.Path(__file__).resolve().parents[2]
    one, two = tmp_path / "etc", tmp_path / "run"
    one.mkdir()
    two.mkdir()
    (one / "70-whonix-open.policy").write_text((repo / "policy" / "70-whonix-open.policy")
                                                .read_text())
    loaded = policy.load([str(one)])
    info = {"domains": {"anon-whonix": {"type": "AppVM", "tags": ["anon-vm"],
                                        "default_dispvm": None, "icon": "",
                                        "template_for_dispvms": False, "power_state": "Running"},
                        "dom0": {"type": "AdminVM", "tags": [], "default_dispvm": None,
                                 "icon": "", "template_for_dispvms": False,
                                 "power_state": "Running"}}}
    decision = policy.decide(loaded, info, "whonix.OpenInDisposable", "+tor", "anon-whonix",
                             "dom0")
    assert decision.result == "allow", decision
    if _release("qrexec") >= (4, 3):
        policy.load([str(two), str(one)])  # the runtime directory first, as the daemon
    else:
        with pytest.raises(policy.PolicyUnavailable, match="one directory"):
            policy.load([str(two), str(one)])
