"""whonix.RoutingStatus: tell the calling qube about its own network path.

One JSON object on stdout. The caller learns only facts about itself (its
netvm, and whether that is a Whonix-Gateway) and the profile names dom0
offers - nothing about other qubes. Exit 0; a malformed request 64.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence

from whonix_open.contract import SERVICE_STATUS, Exit
from whonix_open.dom0.audit import AuditRecord, log_line
from whonix_open.dom0.backend import Backend, BackendError, NoSuchQube
from whonix_open.dom0.choose_backend import connect
from whonix_open.dom0.config import ConfigError, load_config
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.request import parse_request
from whonix_open.dom0.resolve import GW_FEATURE, WS_FEATURE, feature_true, is_gateway


def status(backend: Backend, caller: str, env: Mapping[str, str]) -> dict:
    try:
        info = backend.info(caller)
    except NoSuchQube:
        raise Refusal(Exit.BAD_REQUEST, f"caller {caller} does not exist") from None
    try:
        config = load_config(env)
        profiles, default, config_ok = sorted(config.profiles), config.default_profile, True
    except ConfigError as e:
        log_line(f"configuration: {e}")
        profiles, default, config_ok = [], None, False
    return {
        "version": 1,
        "qube": info.name,
        "netvm": info.netvm,
        "netvm_is_whonix_gateway": bool(info.netvm) and is_gateway(backend, info.netvm),
        "is_whonix_workstation": feature_true(backend.feature_with_template(caller, WS_FEATURE)),
        "is_whonix_gateway": feature_true(backend.feature_with_template(caller, GW_FEATURE)),
        "is_disposable_template": info.template_for_dispvms,
        "is_disposable": info.klass == "DispVM",
        "profiles": profiles,
        "default_profile": default,
        "config_ok": config_ok,
    }


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         backend: Backend | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    audit = AuditRecord(service=SERVICE_STATUS)
    try:
        request = parse_request(SERVICE_STATUS, argv, env, allow_profile=False)
        audit.caller = request.caller
        backend = backend or connect(env)
        print(json.dumps(status(backend, request.caller, env), sort_keys=True), flush=True)
        code = Exit.OK
    except Refusal as e:
        log_line(f"refused ({int(e.code)}): {e.reason}")
        code = e.code
    except BackendError as e:
        log_line(f"qubesd: {type(e).__name__}: {e}")
        code = Exit.INTERNAL
    audit.emit(int(code))
    return int(code)
