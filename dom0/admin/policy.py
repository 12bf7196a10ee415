"""qrexec policy, evaluated by the real parser (`qrexec.policy.parser`,
python3-qrexec in dom0), with system info built as qubesd builds it for
qrexec-policy-daemon (qubes/api/internal.py SystemInfoCache; the daemon gets
it through internal.GetSystemInfo, qrexec/utils.py get_system_info).

qrexec is imported lazily; where it is missing, callers say so instead of
guessing what a rule means."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NamedTuple

from whonix_open.dom0.admin.inventory import Inventory

VENDOR_FILE = "70-whonix-open.policy"
USER_FILE = "30-user-whonix-open.policy"


class PolicyUnavailable(Exception):
    """The policy cannot be evaluated here (qrexec missing, or it does not load)."""


def parser() -> ModuleType:
    try:
        import qrexec.policy.parser as qparser
    except ImportError as e:
        raise PolicyUnavailable(f"the qrexec policy parser is not installed (python3-qrexec; "
                                f"{e})") from None
    return qparser


def default_dirs() -> list[str]:
    """The directories qrexec-policy-daemon loads, in its order: R4.3+ has a
    runtime directory first (qrexec.RUNTIME_POLICY_PATH, /run/qubes/policy.d);
    R4.2's qrexec (4.2.x) has only qrexec.POLICYPATH."""
    parser()
    import qrexec

    runtime = getattr(qrexec, "RUNTIME_POLICY_PATH", None)
    return [str(d) for d in (runtime, qrexec.POLICYPATH) if d is not None]


def _multi_dir() -> bool:
    """Whether FilePolicy takes several directories (qrexec >= 4.3, the same
    release that added the runtime directory); R4.2's takes exactly one."""
    import qrexec

    return hasattr(qrexec, "RUNTIME_POLICY_PATH")


def system_info(inventory: Inventory) -> dict[str, Any]:
    """{"domains": {...}} with the keys qubesd's SystemInfoCache writes and
    the uuid aliases qrexec's get_system_info() adds. label/icon/guivm are
    only used to draw an ask dialog: left empty here."""
    domains: dict[str, Any] = {}
    for q in inventory.values():
        entry = {
            "internal": q.features.get("internal"), "tags": sorted(q.tags), "type": q.klass,
            "template_for_dispvms": q.template_for_dispvms, "default_dispvm": q.default_dispvm,
            "icon": "", "label": "", "guivm": None, "relayvm": None, "transport_rpc": None,
            "power_state": q.power_state, "name": q.name,
        }
        if q.uuid:
            entry["uuid"] = q.uuid
        domains[q.name] = entry
    for entry in list(domains.values()):
        if "uuid" in entry:
            domains["uuid:" + entry["uuid"]] = entry
    return {"domains": domains}


def _qrexec_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qrexec")
    except PackageNotFoundError:
        return "unknown version"


def bad_file_names(dirs: Sequence[str]) -> list[str]:
    """Policy files whose name makes qrexec refuse *every* call (the parser
    loads all files or none), judged by the parser's own filter."""
    qparser = parser()
    bad = []
    for d in dirs:
        path = pathlib.Path(d)
        if not path.is_dir():
            continue
        for f in sorted(path.iterdir()):
            try:
                qparser.filter_filepaths([f])
            except Exception:  # noqa: BLE001 - qrexec.exc.AccessDenied
                bad.append(str(f))
    return bad


def load(dirs: Sequence[str]) -> Any:
    """The whole policy as qrexec-policy-daemon loads it (FilePolicy)."""
    qparser = parser()
    import qrexec.exc

    paths = [pathlib.Path(d) for d in dirs]
    if not _multi_dir():
        if len(paths) != 1:
            raise PolicyUnavailable(f"this qrexec ({_qrexec_version()}) loads policy from one "
                                    f"directory; got {len(paths)}: {', '.join(dirs)}")
        paths = paths[0]
    try:
        return qparser.FilePolicy(policy_path=paths)
    except qrexec.exc.PolicySyntaxError as e:
        raise PolicyUnavailable(f"the policy does not load, so qrexec denies every call: "
                                f"{e}") from None
    except qrexec.exc.AccessDenied as e:
        raise PolicyUnavailable(f"the policy does not load, so qrexec denies every call: "
                                f"{e}") from None


class Decision(NamedTuple):
    service: str
    argument: str  # as in the policy: "+" or "+tor"
    source: str
    target: str
    result: str  # "allow" | "ask" | "deny"
    where: str | None  # "file:line" of the deciding rule; None: no rule matched
    rule: str | None  # that rule's text
    resolved: str | None = None  # allow: where the call goes; ask: the default
    file: str | None = None  # the deciding rule's file name

    def to_json(self) -> dict:
        return self._asdict()


def _rule_text(rule: Any) -> str:
    try:
        lines = pathlib.Path(rule.filepath).read_text().splitlines()
        return " ".join(lines[rule.lineno - 1].split())
    except (OSError, IndexError, TypeError):
        return repr(rule)


def decide(policy: Any, info: dict, service: str, argument: str, source: str,
           target: str) -> Decision:
    """What qrexec answers to *source* calling SERVICE+ARG at *target*."""
    qparser = parser()
    import qrexec.exc

    request = qparser.Request(service, argument, source, target, system_info=info)
    base = Decision(service, argument, source, target, "deny", None, None)
    try:
        rule = policy.find_matching_rule(request)
    except qrexec.exc.AccessDenied:
        return base
    except Exception as e:  # noqa: BLE001 - the parser itself fails on this request
        # e.g. an @dispvm:NAME rule against @dispvm from a qube without a
        # default_dispvm (parser.match_strings gets None). qrexec-policy-daemon
        # then answers nothing, and qrexec refuses the call.
        return base._replace(rule=f"qrexec's parser fails on this request "
                                  f"({type(e).__name__}): refused")
    where = f"{pathlib.Path(rule.filepath).name}:{rule.lineno}"
    base = base._replace(where=where, rule=_rule_text(rule),
                         file=pathlib.Path(rule.filepath).name)
    try:
        resolution = rule.action.evaluate(request)
    except qrexec.exc.AccessDenied:
        return base
    if isinstance(resolution, qparser.AskResolution):
        return base._replace(result="ask", resolved=resolution.default_target)
    return base._replace(result="allow", resolved=str(resolution.target))
