"""whonix-open-admin against the simulated Qubes: its public entry point
`main(args, app=None, env=...)`, a scenario per situation (scenarios/), the
real qrexec policy parser over this project's policy files plus Qubes' real
90-default and Whonix's 80-whonix (tests/policy/fixtures)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from whonix_open.dom0.admin.main import main
from whonix_open.sim.harness import SimQubes

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UPSTREAM_POLICY = REPO / "tests" / "policy" / "fixtures"
# 35-compat.policy's !compat-4.0 includes R4.0 files from /etc/qubes-rpc/policy:
# pointed at an empty directory here (make_admin), as on an R4.3 dom0 without any.
REAL_POLICY_FILES = ("35-compat.policy", "80-whonix.policy", "90-default.policy",
                     "90-default-gui-daemon.policy")


def require_qrexec() -> None:
    try:
        import qrexec.policy.parser  # noqa: F401
    except ImportError:
        pytest.fail("the real qrexec policy parser is needed: .venv/bin/pip install --no-deps "
                    "../shared/upstream/qrexec-*.whl (or python3-qrexec from "
                    "QubesOS/qubes-core-qrexec)")


@dataclass
class Output:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Admin:
    """One simulated dom0 with its run dir, profiles.toml and policy dir."""

    def __init__(self, tmp: Path, scenario: str = "default") -> None:
        self.tmp = tmp
        self.sim = SimQubes.create(tmp / "sim", scenario_path(scenario))
        self.run_dir = tmp / "run"
        self.run_dir.mkdir()
        self.config = tmp / "profiles.toml"
        self.policy = tmp / "policy.d"
        self.policy.mkdir()
        for f in (REPO / "policy").glob("*.policy"):
            shutil.copy(f, self.policy)
        for name in REAL_POLICY_FILES:
            shutil.copy(UPSTREAM_POLICY / name, self.policy)
        self._held: list[int] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QREXEC_", "WHONIX_"))}
        env.update(self.sim.env())
        env.update(WHONIX_OPEN_RUN_DIR=str(self.run_dir), WHONIX_OPEN_CONFIG=str(self.config))
        return env

    def run(self, *args: str) -> Output:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args), env=self.env())
        return Output(code, out.getvalue(), err.getvalue())

    def check(self, *extra: str) -> Output:
        return self.run("check", "--json", "--policy-dir", str(self.policy), *extra)

    def session(self, session_id: str, record: dict, *, alive: bool) -> Path:
        """A broker session record; *alive*: this test holds its flock as the
        running service would (released at teardown)."""
        path = self.run_dir / f"{session_id}.session"
        path.write_text(json.dumps(record))
        if alive:
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.append(fd)
        return path

    def close(self) -> None:
        for fd in self._held:
            os.close(fd)
        self.sim.kill_leftovers()


def scenario_path(name: str) -> str:
    path = SCENARIOS / f"{name}.toml"
    return str(path) if path.exists() else name


def findings(out: Output, level: str | None = None) -> list[dict]:
    return [f for f in out.json()["findings"] if level is None or f["level"] == level]


@pytest.fixture
def make_admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    made: list[Admin] = []
    with contextlib.suppress(ImportError):
        from qrexec.policy import parser_compat

        (tmp_path / "qubes-rpc-policy").mkdir()
        monkeypatch.setattr(parser_compat, "POLICYPATH_OLD", tmp_path / "qubes-rpc-policy")

    def make(scenario: str = "default") -> Admin:
        admin = Admin(tmp_path / f"admin{len(made)}", scenario)
        made.append(admin)
        return admin

    yield make
    for admin in made:
        admin.close()


@pytest.fixture
def admin(make_admin) -> Admin:
    return make_admin()
