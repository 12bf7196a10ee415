"""The real qrexec policy parser (python3-qrexec, from ../shared/upstream) on
our policy files next to the real R4.3 dom0 files, as dom0 evaluates them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = REPO / "policy"
UPSTREAM = Path(__file__).parent / "fixtures"

try:
    from qrexec.exc import AccessDenied
    from qrexec.policy import parser, parser_compat
except ImportError:  # never a silent skip: say what is missing
    pytest.fail("the real qrexec policy parser is needed: `make venv` installs it from "
                "../shared/upstream (qrexec-*.whl, pip install --no-deps)", pytrace=False)


def qube(klass: str = "AppVM", tags: tuple[str, ...] = (), *, template_for_dispvms=False,
         default_dispvm: str | None = None) -> dict:
    """One domain as qubesd's internal.GetSystemInfo describes it
    (qubes-core-admin qubes/api/internal.py get_system_info)."""
    return {"tags": list(tags), "type": klass, "template_for_dispvms": template_for_dispvms,
            "default_dispvm": default_dispvm, "icon": "", "label": "red", "guivm": None,
            "relayvm": None, "transport_rpc": None, "power_state": "Running",
            "uuid": "00000000-0000-0000-0000-000000000000", "internal": None}


def system(**domains: dict) -> dict:
    return {"domains": {"dom0": qube("AdminVM"), **domains}}


class Policy:
    """The policy directory dom0 would have: our files, the upstream ones, and
    whatever a test adds."""

    def __init__(self, tmp: Path, *, ours: Path = OURS, extra: dict[str, str] | None = None):
        self.dir = tmp / "policy.d"
        self.dir.mkdir(parents=True)
        for source in (*sorted(UPSTREAM.glob("*.policy")), *sorted(ours.glob("*.policy"))):
            shutil.copy(source, self.dir)
        for name, text in (extra or {}).items():
            (self.dir / name).write_text(text)
        legacy = tmp / "qubes-rpc-policy"  # 35-compat.policy includes R4.0 files from here
        legacy.mkdir()
        saved = parser_compat.POLICYPATH_OLD
        parser_compat.POLICYPATH_OLD = legacy
        try:
            self.policy = parser.FilePolicy(policy_path=self.dir)
        finally:
            parser_compat.POLICYPATH_OLD = saved

    def evaluate(self, service: str, arg: str, source: str, target: str,
                 system_info: dict) -> tuple[str, object]:
        """("allow" | "ask" | "deny", the resolution or the refusal)."""
        request = parser.Request(service, "+" + arg, source, target, system_info=system_info)
        try:
            resolution = self.policy.evaluate(request)
        except AccessDenied as e:
            return "deny", e
        return ("ask" if isinstance(resolution, parser.AskResolution) else "allow"), resolution

    def action(self, *args, **kwargs) -> str:
        return self.evaluate(*args, **kwargs)[0]
