"""The copy-paste session of docs/DEVELOPING.md ("Driving the simulated Qubes
by hand"), run as written from the repository root in one bash: each command's
output must be what the doc shows (`...` stands for any text, as in doctest)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "DEVELOPING.md"
HEADING = "## Driving the simulated Qubes by hand"
MARK = "@@whonix-open-doc-session@@"


def session() -> list[tuple[str, str]]:
    """[(command, expected output)] of the first ```console block under HEADING."""
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index(HEADING):]
    block = re.search(r"```console\n(.*?)```", section, re.DOTALL)
    assert block, f"{PAGE.name}: no ```console block under {HEADING!r}"
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before the first command: {line!r}"
            steps[-1][1].append(line)
    return [(cmd, "\n".join(out)) for cmd, out in steps]


def matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def test_the_documented_session_prints_what_the_doc_shows(tmp_path):
    steps = session()
    script = "".join(f"echo {MARK}\n{{ {cmd}\n}} 2>&1\n" for cmd, _ in steps)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WHONIX_OPEN_", "QREXEC_", "VIRTUAL_ENV"))}
    env.update({"HOME": str(tmp_path), "TMPDIR": str(tmp_path), "LC_ALL": "C.UTF-8",
                "XDG_CONFIG_HOME": str(tmp_path / ".config"),
                "XDG_DATA_HOME": str(tmp_path / ".local/share"),
                "XDG_STATE_HOME": str(tmp_path / ".local/state")})
    env.pop("DISPLAY", None)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    r = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                       text=True, check=False, timeout=300)
    outputs = r.stdout.split(MARK + "\n")[1:]
    assert len(outputs) == len(steps), r.stdout + r.stderr
    for (cmd, expected), actual in zip(steps, outputs, strict=True):
        assert matches(expected, actual.rstrip("\n")), (
            f"$ {cmd}\n--- the doc shows:\n{expected}\n--- it printed:\n{actual}")


def test_the_ellipsis_matches_only_what_it_stands_for():
    assert matches("exit ...", "exit 126")
    assert matches("a\n...\nb", "a\nx\ny\nb")
    assert not matches("exit 0", "exit 126")
    assert not matches("in /tmp/...", "in /var/x")
