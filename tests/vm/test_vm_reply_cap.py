"""The reply cap, through the real CLI and a stand-in qrexec-client-vm that
plays a hostile disposable: a reply that never ends, one that trickles, one
that would fill the file system. Each is cut off with exit status 5, every
byte received is removed, the original stays untouched and the session ends
(the stand-in, i.e. qrexec-client-vm, is gone when the CLI returns)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEADLINE
from tests.vm.test_vm_editback import ORIGINAL, assert_untouched, kept_copies, leftovers
from tests.vm.test_vm_editback_faults import assert_words_only, recovered
from whonix_open.vm import replycap
from whonix_open.vm.exitcodes import CliExit


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    path = folder / "letter.txt"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    return path


def _gone(pid_file: Path) -> bool:
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too (its parent, the CLI, reaped it unless it exited).
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"


def _assert_cut_off(world, doc: Path, before: os.stat_result, result, words: str) -> None:
    assert result.returncode == CliExit.REPLY_TOO_LARGE == 5, result.stderr
    assert_words_only(result.stderr)
    assert "NOT saved" in result.stderr and words in result.stderr, result.stderr
    assert "original is unchanged" in result.stderr
    assert_untouched(doc, before)
    assert kept_copies(doc.parent) == [] and leftovers(doc.parent) == []
    assert recovered(world) == []
    assert _gone(world.root / "standin.pid"), "the session (qrexec-client-vm) must end"


def test_a_reply_that_never_ends_is_cut_off_at_the_default_cap(world, doc):
    before = doc.stat()
    world.set(flood=True, pid_file=str(world.root / "standin.pid"))
    result = world.run("--no-notify", str(doc))
    _assert_cut_off(world, doc, before, result, "more than 64 MiB, the default cap")


def test_a_trickling_reply_is_cut_off_at_the_explicit_cap(world, doc):
    before = doc.stat()
    world.set(trickle=[4096, 0.005], pid_file=str(world.root / "standin.pid"))
    result = world.run("--no-notify", "--max-reply", "64K", str(doc))
    _assert_cut_off(world, doc, before, result, "more than 64 KiB, the --max-reply")


def test_the_cap_from_the_config_file(world, doc):
    before = doc.stat()
    world.write_config('max_reply_size = "1K"\n')
    world.set(mode="edit", pid_file=str(world.root / "standin.pid"))
    result = world.run("--no-notify", str(doc))
    _assert_cut_off(world, doc, before, result, "more than 1 KiB")
    # The command line wins over the config: a large media edit goes through.
    result = world.run("--no-notify", "--max-reply", "1M", str(doc))
    assert result.returncode == 0, result.stderr
    assert doc.read_bytes() == ORIGINAL + b" [edited]"


def test_a_reply_never_fills_the_file_system(world, tmp_path):
    """A 16 MiB tmpfs: the default cap (64 MiB) is more than fits, so the
    free space less the reserve is the bound; afterwards the file system is
    as empty as before (it used to fill it and keep the partial reply)."""
    folder = tmp_path / "small"
    folder.mkdir()
    report = tmp_path / "after.txt"
    world.set(flood=True, pid_file=str(world.root / "standin.pid"))
    script = (
        f'mount -t tmpfs -o size=16m tmpfs "{folder}"\n'
        f'printf "notes" > "{folder}/notes.txt"\n'
        'set +e; "$@"; rc=$?\n'
        f'ls -A "{folder}" > "{report}"; df -B1 --output=used "{folder}" | tail -1 >> "{report}"\n'
        "exit $rc"
    )
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    argv = ["unshare", "--mount", "--propagation", "private", *userns, "sh", "-ec", script,
            "sh", *world.cli_argv("--no-notify", str(folder / "notes.txt"))]
    result = subprocess.run(argv, env=world.env, capture_output=True, text=True,
                            timeout=DEADLINE, check=False)
    assert result.returncode == 5, result.stderr
    assert "free space of the file system" in result.stderr, result.stderr
    listing, used = report.read_text().splitlines()
    assert listing == "notes.txt"
    assert int(used) < 1 << 20, "the partial reply was removed"
    assert recovered(world) == []


@pytest.mark.parametrize("bad", ["lots", "-1", "0", "2X", ""])
def test_a_bad_size_is_a_usage_error(world, doc, bad):
    result = world.run("--no-notify", f"--max-reply={bad}", str(doc))
    assert result.returncode == 2 and "is not a size" in result.stderr, result.stderr
    world.write_config(f'max_reply_size = "{bad}"\n')
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 2 and "max_reply_size" in result.stderr, result.stderr
    assert world.open_calls() == []


def test_sizes_and_the_reserve():
    assert replycap.parse_size("2G") == 2 << 30 == replycap.parse_size("2GiB")
    assert replycap.parse_size("1048576") == 1 << 20
    assert replycap.default_limit(1024) == 64 << 20
    assert replycap.default_limit(1 << 30) == 4 << 30
    st = os.statvfs(sys.prefix)
    assert replycap.reserve(st) >= st.f_blocks * st.f_frsize // 100
