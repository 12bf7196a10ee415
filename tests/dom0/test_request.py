"""The qrexec request grammar: nothing but a valid profile name gets through."""

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whonix_open.contract import SERVICE_OPEN, Exit, is_profile_name
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import parse_request


def env(arg: str, caller: str = "anon-whonix", **extra: str) -> dict:
    return {"QREXEC_REMOTE_DOMAIN": caller, "QREXEC_SERVICE_ARGUMENT": arg,
            "QREXEC_SERVICE_FULL_NAME": f"{SERVICE_OPEN}+{arg}", **extra}


def test_empty_argument_is_refused_not_an_alias_of_the_default_profile():
    # A policy rule about "+tor" must not be passed by with "+" (issue 7.3).
    with pytest.raises(Refusal) as e:
        parse_request(SERVICE_OPEN, [], env(""))
    assert e.value.code == Exit.BAD_REQUEST and "no profile named" in e.value.reason


def test_a_service_without_argument_refuses_one():
    status_env = {"QREXEC_REMOTE_DOMAIN": "work", "QREXEC_SERVICE_ARGUMENT": "tor",
                  "QREXEC_SERVICE_FULL_NAME": "whonix.RoutingStatus+tor"}
    with pytest.raises(Refusal):
        parse_request("whonix.RoutingStatus", ["tor"], status_env, allow_profile=False)
    ok = {**status_env, "QREXEC_SERVICE_ARGUMENT": "",
          "QREXEC_SERVICE_FULL_NAME": "whonix.RoutingStatus+"}
    assert parse_request("whonix.RoutingStatus", [], ok, allow_profile=False).profile is None


@pytest.mark.parametrize("arg", ["tor", "offline", "tor-2", "a", "0" * 31])
def test_valid_profile_names(arg):
    req = parse_request(SERVICE_OPEN, [arg], env(arg))
    assert (req.caller, req.profile) == ("anon-whonix", arg)


@pytest.mark.parametrize("arg", ["-tor", "Tor", "tor_2", "tor.2", "a" * 32, "tor\n", "..",
                                 "tor+x", " tor", "-"])
def test_malformed_arguments_are_refused(arg):
    with pytest.raises(Refusal) as e:
        parse_request(SERVICE_OPEN, [arg], env(arg))
    assert e.value.code == Exit.BAD_REQUEST
    assert arg.strip() not in e.value.reason or arg.strip() == ""  # never echoed


@pytest.mark.parametrize("bad", [
    {"QREXEC_REMOTE_DOMAIN": ""},
    {"QREXEC_REMOTE_DOMAIN": "bad name"},
    {"QREXEC_REMOTE_DOMAIN": "-x"},
    {"QREXEC_SERVICE_FULL_NAME": "whonix.ViewInDisposable+tor"},
    {"QREXEC_SERVICE_ARGUMENT": "offline"},
])
def test_inconsistent_or_malformed_environment(bad):
    e = {**env("tor"), **bad}
    with pytest.raises(Refusal) as exc:
        parse_request(SERVICE_OPEN, ["tor"], e)
    assert exc.value.code == Exit.BAD_REQUEST


def test_missing_caller_and_argument():
    with pytest.raises(Refusal):
        parse_request(SERVICE_OPEN, [], {"QREXEC_SERVICE_ARGUMENT": ""})
    with pytest.raises(Refusal):
        parse_request(SERVICE_OPEN, [], {"QREXEC_REMOTE_DOMAIN": "work"})


def test_argv_disagreeing_with_environment():
    with pytest.raises(Refusal):
        parse_request(SERVICE_OPEN, ["offline"], env("tor"))
    with pytest.raises(Refusal):
        parse_request(SERVICE_OPEN, ["tor", "extra"], env("tor"))


@given(st.text(alphabet=string.printable + "éß\x00\x7f", max_size=40))
def test_fuzz_only_profile_names_pass(arg):
    try:
        req = parse_request(SERVICE_OPEN, [arg] if arg else [], env(arg))
    except Refusal as e:
        assert e.code == Exit.BAD_REQUEST
        assert not is_profile_name(arg)
    else:
        assert req.profile == arg
        assert is_profile_name(arg)
