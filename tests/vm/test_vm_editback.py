"""Edit-back through the real CLI process and a stand-in qrexec-client-vm:
the original is replaced atomically only after a complete, successful reply,
and every failure leaves it byte-identical with the reply kept and named."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
from pathlib import Path

import pytest

from tests.helpers import wait_for
from whonix_open.vm import cli, editback
from whonix_open.vm.editback import KEPT_INFIX

ORIGINAL = b"the original content\n" * 100


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    path = folder / "letter.txt"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    return path


def kept_copies(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if KEPT_INFIX in p.name)


def leftovers(folder: Path) -> list[Path]:
    """Reply files that a run did not clean up (.new, .part or .complete)."""
    return [p for p in folder.iterdir() if p.name.endswith((".new", ".part", ".complete"))]


def assert_untouched(doc: Path, before: os.stat_result) -> None:
    assert doc.read_bytes() == ORIGINAL
    now = doc.stat()
    assert (now.st_ino, now.st_mtime_ns, stat.S_IMODE(now.st_mode)) == (
        before.st_ino,
        before.st_mtime_ns,
        0o640,
    )


def test_edit_replaces_atomically_and_keeps_the_mode(world, doc):
    before = doc.stat()
    world.set(mode="edit")
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert doc.read_bytes() == ORIGINAL + b" [edited]"
    after = doc.stat()
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert after.st_ino != before.st_ino, "a new file renamed over, not rewritten in place"
    assert "changes saved" in result.stderr
    assert leftovers(doc.parent) == [] and kept_copies(doc.parent) == []
    [call] = world.open_calls()
    assert call["body_len"] == len(ORIGINAL)
    assert call["body_sha256"] == hashlib.sha256(ORIGINAL).hexdigest()


def test_symlink_argument_updates_the_file_it_points_to(world, doc, tmp_path):
    link = tmp_path / "shortcut.txt"
    link.symlink_to(doc)
    world.set(mode="edit")
    result = world.run("--no-notify", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert doc.read_bytes() == ORIGINAL + b" [edited]"
    assert stat.S_IMODE(doc.stat().st_mode) == 0o640
    # The header carries the name the user gave.
    assert bytes.fromhex(world.open_calls()[0]["header"]).startswith(b"shortcut.txt\0")


def test_empty_reply_means_unchanged(world, doc):
    before = doc.stat()
    world.set(mode="none")
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert_untouched(doc, before)
    assert "unchanged" in result.stderr
    assert leftovers(doc.parent) == [] and kept_copies(doc.parent) == []


@pytest.mark.parametrize("code", [64, 66, 67, 69, 70, 71, 73, 125])
def test_dom0_failure_with_a_reply_keeps_it_beside_the_original(world, doc, code):
    before = doc.stat()
    world.set(mode="edit", exit=code)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == code
    assert_untouched(doc, before)
    [kept] = kept_copies(doc.parent)
    assert kept.read_bytes() == ORIGINAL + b" [edited]"
    assert str(kept) in result.stderr
    assert leftovers(doc.parent) == []


def test_policy_denied_without_reply_leaves_nothing_behind(world, doc):
    before = doc.stat()
    world.set(mode="none", exit=126, stop_reading_after=0)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 126
    assert "policy denied" in result.stderr
    assert_untouched(doc, before)
    assert list(doc.parent.iterdir()) == [doc]


def test_reply_cut_half_way_leaves_the_original_and_keeps_the_part(world, doc):
    before = doc.stat()
    half = len(ORIGINAL) // 2
    world.set(mode="edit", cut_reply_at=half)  # then the stand-in dies (SIGKILL)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 4, result.stderr  # transport: killed by a signal
    assert_untouched(doc, before)
    [kept] = kept_copies(doc.parent)
    assert kept.read_bytes() == ORIGINAL[:half]
    assert "possibly incomplete" in result.stderr and str(kept) in result.stderr


def test_dom0_stopping_early_is_never_applied_even_with_exit_0(world, tmp_path):
    # Bigger than any pipe buffer, so the early stop is seen as a broken pipe
    # (what fits in a pipe buffer is indistinguishable from a complete send).
    big = tmp_path / "big.bin"
    digest = _big(big, 4 << 20)
    world.set(mode="edit", stop_reading_after=10)
    result = world.run("--no-notify", str(big))
    assert result.returncode == 1
    assert hashlib.sha256(big.read_bytes()).digest() == digest
    assert "stopped reading" in result.stderr
    [kept] = kept_copies(tmp_path)
    assert kept.stat().st_size == 10 + len(b" [edited]")


def test_original_changed_while_open_is_not_overwritten(world, doc):
    world.set(mode="edit", append_to=str(doc))
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 1
    assert doc.read_bytes() == ORIGINAL + b"local change", "the local change survives"
    [kept] = kept_copies(doc.parent)
    assert kept.read_bytes() == ORIGINAL + b" [edited]"
    assert "changed or replaced here" in result.stderr


def test_view_only_never_writes(world, doc):
    before = doc.stat()
    # Even a (misbehaving) dom0 that sends data back must not cause a write.
    world.set(mode="edit")
    result = world.run("--no-notify", "--view-only", str(doc))
    assert result.returncode == 0, result.stderr
    assert_untouched(doc, before)
    assert list(doc.parent.iterdir()) == [doc]
    assert not Path(world.env["XDG_DATA_HOME"]).exists()
    [call] = world.open_calls()
    assert call["argv"] == ["dom0", "whonix.ViewInDisposable+tor"]
    assert bytes.fromhex(call["header"]).startswith(b"view-only-letter.txt\0")


def test_unwritable_directory_saves_to_the_recovery_dir(world, doc, tmp_path, monkeypatch, capsys):
    """The CLI in-process, with the reply file refused in the original's
    directory as a read-only directory would (the tests may run as root,
    which bypasses permission bits)."""
    before = doc.stat()
    real_create = editback._create_locked

    def create(dir_fd, base):
        if os.path.samestat(os.fstat(dir_fd), doc.parent.stat()):
            raise PermissionError(13, "Permission denied")
        return real_create(dir_fd, base)

    recovered_home = tmp_path / "xdg-data"
    monkeypatch.setattr(editback, "_create_locked", create)
    monkeypatch.setattr("xdg.BaseDirectory.xdg_data_home", str(recovered_home))
    world.set(mode="edit")
    code = cli.main(["--no-notify", str(doc)])
    err = capsys.readouterr().err
    assert code == 1
    assert_untouched(doc, before)
    recovered = recovered_home / "whonix-open" / "recovered"
    [kept] = [p for p in recovered.iterdir()]
    assert KEPT_INFIX in kept.name and kept.name.startswith("letter.txt")
    assert kept.read_bytes() == ORIGINAL + b" [edited]"
    assert "is not writable" in err and str(kept) in err
    assert stat.S_IMODE(recovered.stat().st_mode) == 0o700


def _big(path: Path, size: int) -> bytes:
    data = os.urandom(1 << 16) * (size >> 16)
    path.write_bytes(data)
    return hashlib.sha256(data).digest()


@pytest.mark.parametrize("partial_reply", [False, True])
def test_sigterm_mid_transfer_leaves_the_original_byte_identical(
    world, tmp_path, partial_reply
):
    big = tmp_path / "big.bin"
    digest = _big(big, 16 << 20)
    ready = tmp_path / "standin.ready"
    control = {"mode": "edit", "stop_reading_after": 1 << 20, "hang": True}
    control["ready_file"] = str(ready)
    if partial_reply:
        control["cut_reply_at"] = 4096
    world.set(**control)
    proc = world.popen("--no-notify", str(big))
    wait_for(ready.exists, "the stand-in to be mid-transfer")
    standin_pid = int(wait_for(lambda: ready.read_text(), "the stand-in's pid"))
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert hashlib.sha256(big.read_bytes()).digest() == digest
    assert "interrupted" in err
    # The CLI ended its qrexec-client-vm (dom0 then kills the disposable).
    wait_for(lambda: not _alive(standin_pid), "the stand-in to be gone")
    kept = kept_copies(tmp_path)
    if partial_reply:
        assert len(kept) == 1 and kept[0].stat().st_size == 4096
        assert str(kept[0]) in err
    else:
        assert kept == []
    assert leftovers(tmp_path) == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, the CLI, has exited).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
