"""Every shell script in the repository passes shellcheck."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shell_scripts() -> list[Path]:
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                             text=True, check=True).stdout.split()
    found = []
    for name in tracked:
        path = REPO / name
        if path.is_file():
            with path.open("rb") as f:
                first = f.readline()
            if first.startswith(b"#!") and (b"sh\n" in first or b"bash" in first):
                found.append(path)
    return found


def test_shell_scripts_pass_shellcheck():
    scripts = shell_scripts()
    assert {p.name for p in scripts} >= {"qrexec-client-vm", "run", "install-system-deps"}
    r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout
