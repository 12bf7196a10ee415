"""The integration files themselves: validators, the specs, one wording everywhere,
and `make install-vm-desktop` putting each file where its program looks."""

from __future__ import annotations

import ast
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from desktop_entry_strict import EntryError, exec_argv, parse
from desktop_gui import LABELS, OPTIONS, REPO

from tests.packaging.lists import VM_FILES

DESKTOP = REPO / "desktop"
MIME_HANDLERS = {
    DESKTOP / "mime/whonix-open.desktop": ["whonix-open", "--", "%F"],
    DESKTOP / "mime/whonix-open-view.desktop": ["whonix-open", "--view-only", "--", "%F"],
}
PCMANFM = sorted((DESKTOP / "pcmanfm-qt").glob("*.desktop"))
DOLPHIN = [DESKTOP / "dolphin/kf6/whonix-open.desktop", DESKTOP / "dolphin/kf5/whonix-open.desktop"]
AUTOSTART = DESKTOP / "thunar/whonix-open-thunar-actions.desktop"


def expected_argv(label: str) -> list[str]:
    return ["whonix-open", *OPTIONS[label], "%F"]


def test_desktop_file_validate_accepts_the_mime_handlers_and_autostart_entry():
    assert shutil.which("desktop-file-validate"), "run .ci/install-system-deps"
    files = [*MIME_HANDLERS, AUTOSTART]
    out = subprocess.run(["desktop-file-validate", *map(str, files)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


@pytest.mark.parametrize("path", list(MIME_HANDLERS), ids=lambda p: p.name)
def test_mime_handler_is_hidden_and_covers_documents_images_archives(path: Path):
    entry = parse(path)["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["NoDisplay"] == "true"
    assert entry["TryExec"] == "whonix-open"
    assert exec_argv(entry["Exec"]) == MIME_HANDLERS[path]
    types = [t for t in entry["MimeType"].split(";") if t]
    assert len(types) == len(set(types))
    for needed in ("application/octet-stream", "application/pdf", "text/plain", "image/png",
                   "image/jpeg", "application/zip", "application/x-tar",
                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                   "application/vnd.oasis.opendocument.text"):
        assert needed in types


def test_every_mime_type_is_known_to_shared_mime_info():
    """A misspelt type would silently never match."""
    known = set((Path("/usr/share/mime/types")).read_text().split())
    known |= {line.split()[0] for line in Path("/usr/share/mime/aliases").read_text().splitlines()}
    for path in MIME_HANDLERS:
        types = [t for t in parse(path)["Desktop Entry"]["MimeType"].split(";") if t]
        unknown = [t for t in types if t not in known]
        assert not unknown, f"{path.name}: {unknown}"


@pytest.mark.parametrize("path", PCMANFM, ids=lambda p: p.name)
def test_pcmanfm_qt_action_files_follow_the_file_manager_actions_spec(path: Path):
    groups = parse(path)
    entry = groups["Desktop Entry"]
    assert entry["Type"] == "Action"
    assert entry["Name"] in LABELS
    profiles = [p for p in entry["Profiles"].split(";") if p]
    assert profiles, "an action needs at least one profile"
    for name in profiles:
        profile = groups[f"X-Action-Profile {name}"]
        assert exec_argv(profile["Exec"]) == expected_argv(entry["Name"])
        assert profile["Schemes"].split(";")[:1] == ["file"]
        # all/allfiles: every file, never a folder (hidden for a selection with one)
        assert profile["MimeTypes"].split(";")[:1] == ["all/allfiles"]
    unknown = set(groups) - {"Desktop Entry"} - {f"X-Action-Profile {p}" for p in profiles}
    assert not unknown


def test_pcmanfm_qt_has_one_action_per_entry():
    names = [parse(p)["Desktop Entry"]["Name"] for p in PCMANFM]
    assert sorted(names) == sorted(LABELS)


@pytest.mark.parametrize("path", DOLPHIN, ids=lambda p: p.parent.name)
def test_dolphin_service_menu(path: Path):
    groups = parse(path)
    entry = groups["Desktop Entry"]
    assert entry["Type"] == "Service"
    assert [t for t in entry["MimeType"].split(";") if t] == ["all/allfiles"]
    assert entry["X-KDE-Protocols"] == "file"
    if path.parent.name == "kf5":
        assert entry["X-KDE-ServiceTypes"] == "KonqPopupMenu/Plugin"
    actions = [a for a in entry["Actions"].split(";") if a]
    assert set(groups) == {"Desktop Entry", *(f"Desktop Action {a}" for a in actions)}
    labels = {}
    for action in actions:
        group = groups[f"Desktop Action {action}"]
        labels[group["Name"]] = exec_argv(group["Exec"])
    assert labels == {label: expected_argv(label) for label in LABELS}


def test_dolphin_kf5_and_kf6_files_share_a_name_and_the_actions():
    """Same file name: a KF5 that reads both directories keeps only one of them."""
    kf6, kf5 = (parse(p) for p in DOLPHIN)
    assert DOLPHIN[0].name == DOLPHIN[1].name
    assert {k: v for k, v in kf6.items() if k != "Desktop Entry"} == \
        {k: v for k, v in kf5.items() if k != "Desktop Entry"}


def test_nautilus_extension_uses_the_same_wording():
    tree = ast.parse((DESKTOP / "nautilus/whonix_open_nautilus.py").read_text())
    entries = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                   if isinstance(node, ast.AnnAssign)
                   and getattr(node.target, "id", "") == "ENTRIES")
    assert {label: ["whonix-open", *options, "--", "%F"] for _, label, _, options in entries} == \
        {label: expected_argv(label) for label in LABELS}


def test_strict_parser_refuses_single_quotes_and_bad_files(tmp_path: Path):
    """The checker itself must be able to fail."""
    for bad in ("whonix-open '--' %F", "whonix-open -- %F;rm", 'whonix-open "-- %F',
                "whonix-open %Z", 'whonix-open "$HOME"'):
        with pytest.raises(EntryError):
            exec_argv(bad)
    assert exec_argv(r'whonix-open "a b" "c\"d" %F') == ["whonix-open", "a b", 'c"d', "%F"]
    for text in ("Name=x\n", "[Desktop Entry]\nName=a\nName=b\n",
                 "[Desktop Entry]\n[Desktop Entry]\n", "[Desktop Entry]\nno equals\n"):
        path = tmp_path / "bad.desktop"
        path.write_text(text)
        with pytest.raises(EntryError):
            parse(path)


def test_make_install_vm_desktop_puts_each_file_where_its_program_looks(tmp_path: Path):
    dest = tmp_path / "root"
    subprocess.run(["make", "-s", "-C", str(REPO), "install-vm-desktop", f"DESTDIR={dest}"],
                   check=True, capture_output=True)
    # The documented VM list, less what install-vm itself adds (the commands
    # the desktop files run).
    commands = {"/usr/bin/whonix-open", "/usr/bin/whonix-open-link", "/usr/bin/whonix-open-choose"}
    expected = {path.lstrip("/"): mode for path, mode in VM_FILES.items() if path not in commands}
    installed = {str(p.relative_to(dest)): stat.S_IMODE(p.stat().st_mode)
                 for p in dest.rglob("*") if p.is_file()}
    assert installed == expected
    assert (dest / "usr/bin/whonix-open-thunar-actions").read_bytes() == \
        (DESKTOP / "thunar/whonix-open-thunar-actions").read_bytes()
