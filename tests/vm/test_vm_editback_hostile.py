"""Edit-back against a hostile disposable and a hostile second local user,
through the real CLI and a stand-in qrexec-client-vm:

- what is written back is never more permissive than the original (setuid,
  setgid and sticky bits dropped, the group kept, the ACL copied exactly -
  checked with the real getfacl), or it is kept instead, mode 0600, with the
  reason said; a kept copy is always 0600;
- a folder on the path that another local user owns and swaps while the file
  is open (watched with the real inotifywait, as an attacker would) can
  never redirect the reply into a place of the user's choosing.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import DEADLINE
from tests.vm.test_vm_editback import ORIGINAL, kept_copies, leftovers
from tests.vm.test_vm_editback_faults import assert_words_only, recovered

ATTACKER = "wo-test-attacker"


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    path = folder / "letter.txt"
    path.write_bytes(ORIGINAL)
    return path


def getfacl(path: Path) -> str:
    return subprocess.run(["getfacl", "--omit-header", "--absolute-names", str(path)],
                          capture_output=True, text=True, check=True).stdout


def setfacl(*args: str) -> None:
    subprocess.run(["setfacl", *args], check=True)


def edit(world, doc: Path, *args: str, prefix: list[str] | None = None):
    world.set(mode="edit")
    argv = [*(prefix or []), *world.cli_argv("--no-notify", *args, str(doc))]
    return subprocess.run(argv, env=world.env, capture_output=True, text=True,
                          timeout=DEADLINE, check=False)


@pytest.mark.parametrize("mode", [0o4755, 0o2750, 0o1644, 0o6777])
def test_setuid_setgid_and_sticky_bits_never_come_back(world, doc, mode):
    doc.chmod(mode)
    result = edit(world, doc)
    assert result.returncode == 0, result.stderr
    assert doc.read_bytes() == ORIGINAL + b" [edited]"
    assert stat.S_IMODE(doc.stat().st_mode) == mode & 0o777


def test_the_group_is_kept(world, doc):
    """It used to become the user's primary group."""
    os.chown(doc, -1, 4321)
    doc.chmod(0o640)
    result = edit(world, doc)
    assert result.returncode == 0, result.stderr
    assert (doc.stat().st_gid, stat.S_IMODE(doc.stat().st_mode)) == (4321, 0o640)


def test_a_group_that_cannot_be_kept_means_kept_0600_with_the_reason(world, doc):
    """Without the right to give the file that group (here: root without
    CAP_CHOWN, as a normal user outside the group is), the edit is not applied
    but kept, private, and the message says why."""
    os.chown(doc, -1, 4321)
    doc.chmod(0o664)
    before = doc.stat()
    result = edit(world, doc, prefix=["setpriv", "--bounding-set=-chown", "--"])
    assert result.returncode == 1, result.stderr
    assert_words_only(result.stderr)
    assert "group (gid 4321) could not be kept" in result.stderr, result.stderr
    assert doc.read_bytes() == ORIGINAL and doc.stat().st_ino == before.st_ino
    [kept] = kept_copies(doc.parent)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert str(kept) in result.stderr


def test_the_acl_is_copied_exactly(world, doc):
    """A "deny this user" entry and a mask narrower than the group entry: the
    entry used to be dropped and the mask turned into the group bits."""
    doc.chmod(0o660)
    setfacl("-m", "u:nobody:---,g:nogroup:rw-,m::r--", str(doc))
    before = getfacl(doc)
    assert "user:nobody:---" in before and "mask::r--" in before
    result = edit(world, doc)
    assert result.returncode == 0, result.stderr
    assert doc.read_bytes() == ORIGINAL + b" [edited]"
    assert getfacl(doc) == before


def test_a_folder_default_acl_does_not_widen_a_file_without_acl(world, doc):
    """The reply file is made in the folder, so it inherits the folder's
    default ACL; the original has none, so the new version has none either
    (it used to give 'nobody' read access through the inherited entry)."""
    doc.chmod(0o640)
    setfacl("-d", "-m", "u:nobody:rwx", str(doc.parent))
    result = edit(world, doc)
    assert result.returncode == 0, result.stderr
    assert "nobody" not in getfacl(doc)
    assert stat.S_IMODE(doc.stat().st_mode) == 0o640


def test_a_kept_copy_is_always_0600(world, doc):
    """The original changed here meanwhile, so the reply is kept, not
    applied: it used to get the original's mode (here world-readable)."""
    doc.chmod(0o644)
    setfacl("-m", "u:nobody:r--", str(doc))
    world.set(mode="edit", append_to=str(doc))
    result = world.run("--no-notify", str(doc))
    assert result.returncode == 1, result.stderr
    [kept] = kept_copies(doc.parent)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert "nobody" not in getfacl(kept)


# --- a folder swapped by another local user -------------------------------

def _sbin(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    assert found, f"{name} missing (util-linux/passwd)"
    return found


@pytest.fixture
def attacker() -> str:
    """A second local user (created once; CI runs the tests as root)."""
    assert os.geteuid() == 0, "this test creates a second local user: run it as root"
    if subprocess.run(["id", ATTACKER], capture_output=True, check=False).returncode != 0:
        subprocess.run([_sbin("useradd"), "--system", "--no-create-home", "--shell", "/bin/sh",
                        ATTACKER], check=True)
    return ATTACKER


@pytest.fixture
def shared(attacker: str):
    """/tmp/X (reachable by the other user, unlike pytest's private tmp) with
    a folder `shared` that the other user owns, holding the user's `docs`."""
    base = Path(tempfile.mkdtemp(prefix="wo-race-", dir="/tmp"))
    base.chmod(0o755)
    folder = base / "shared"
    folder.mkdir()
    shutil.chown(folder, attacker)
    (folder / "docs").mkdir()
    (folder / "docs" / "letter.txt").write_bytes(ORIGINAL)
    private = base / "bashrc.d"  # the user's own folder, e.g. ~/.bashrc.d
    private.mkdir(mode=0o700)
    yield base
    shutil.rmtree(base)


@pytest.mark.parametrize("trigger", ["open", "create"])
def test_a_swapped_folder_never_redirects_the_reply(world, shared, attacker, trigger):
    """The other user waits (inotifywait) for the file to be opened - or for
    the hidden reply file to appear - then moves `docs` away and puts a
    symlink to the user's ~/.bashrc.d in its place. The reply used to land
    there (5 of 5 races won), and the next shell ran it. Now it goes into the
    folder the file was opened in, wherever that is now, and the message
    says so."""
    docs, private = shared / "shared" / "docs", shared / "bashrc.d"
    swapped = shared / "shared" / "swapped"
    event, watched = ("open", docs / "letter.txt") if trigger == "open" else ("create", docs)
    script = (f'inotifywait -e {event} "{watched}" >/dev/null && '
              f'mv "{docs}" "{docs}.moved" && ln -s "{private}" "{docs}" && touch "{swapped}"')
    spy = subprocess.Popen([_sbin("runuser"), "-u", attacker, "--", "sh", "-c", script],
                           stderr=subprocess.PIPE, text=True)
    try:
        lines = [spy.stderr.readline() for _ in range(2)]
        assert lines[-1].startswith("Watches established"), lines
        key = "status_wait_for" if trigger == "open" else "reply_wait_for"
        world.set(mode="edit", **{key: str(swapped)})
        result = world.run("--no-notify", str(docs / "letter.txt"))
        assert spy.wait(timeout=DEADLINE) == 0, "the swap happened"
    finally:
        if spy.poll() is None:
            spy.kill()
        spy.wait()
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(private)) == [], "nothing reached the user's private folder"
    moved = Path(f"{docs}.moved")
    assert (moved / "letter.txt").read_bytes() == ORIGINAL + b" [edited]"
    assert leftovers(moved) == [] and recovered(world) == []
    assert f"They are in {moved / 'letter.txt'}" in " ".join(result.stderr.split())
