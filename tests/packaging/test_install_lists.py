"""`make install-dom0` / `make install-vm` into throwaway roots put down exactly
the documented files (tests/packaging/lists.py, docs/INSTALL.md),
with their modes and their bytecode, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.conftest import listing, make, site_of
from tests.packaging.lists import bytecode_matches, expected, split_bytecode


@pytest.mark.parametrize("which", ["dom0", "vm"])
def test_install_puts_down_exactly_the_documented_files(tmp_path: Path, which: str):
    make(f"install-{which}", f"DESTDIR={tmp_path}")
    files, dirs = listing(tmp_path)
    plain, pyc = split_bytecode(files)
    want = expected(site_of(files), which)
    assert sorted(set(plain) - set(want)) == [], "installed but not documented"
    assert sorted(set(want) - set(plain)) == [], "documented but not installed"
    assert {p: oct(m) for p, m in plain.items() if want[p] != m} == {}, "wrong modes"
    assert bytecode_matches(plain, pyc) == []
    assert {oct(m) for m in pyc.values()} == {"0o644"}
    assert {p: oct(m) for p, m in dirs.items() if m != 0o755} == {}


def test_vm_install_without_bytecode_for_the_deb(tmp_path: Path):
    """COMPILE=no (debian/rules): dh_python3 compiles at install instead."""
    make("install-vm", f"DESTDIR={tmp_path}", "COMPILE=no")
    files, _ = listing(tmp_path)
    plain, pyc = split_bytecode(files)
    assert pyc == {}
    assert set(plain) == set(expected(site_of(files), "vm"))


def test_administrators_files_are_never_overwritten(tmp_path: Path):
    mine = {"etc/qubes/policy.d/30-user-whonix-open.policy": "# mine\n",
            "etc/whonix-open/profiles.toml": 'default_profile = "offline"\n'}
    for rel, text in mine.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    make("install-dom0", f"DESTDIR={tmp_path}")
    assert {rel: (tmp_path / rel).read_text() for rel in mine} == mine
    vendor = tmp_path / "etc/qubes/policy.d/70-whonix-open.policy"
    vendor.write_text("# edited\n")
    make("install-dom0", f"DESTDIR={tmp_path}")
    assert vendor.read_text() != "# edited\n"  # the vendor policy is replaced


def test_example_profiles_toml_changes_nothing(tmp_path: Path):
    """The example installed as /etc/whonix-open/profiles.toml is all comments:
    the broker reads it as the built-in configuration."""
    from whonix_open.dom0.config import load_config

    make("install-dom0", f"DESTDIR={tmp_path}")
    installed = tmp_path / "etc/whonix-open/profiles.toml"
    assert load_config({"WHONIX_OPEN_CONFIG": str(installed)}) == \
        load_config({"WHONIX_OPEN_CONFIG": str(tmp_path / "absent.toml")})
