"""Unit tests of the Nautilus extension with a duck-typed FileInfo.

The venv python has no gi, so the module is loaded with small stand-ins for
gi.repository.GObject/Nautilus. One test also loads it in Debian's
/usr/bin/python3 with the real Nautilus 4.0 typelib, to check the API calls.
Activation runs a real process: the recording `whonix-open` stand-in on PATH.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes, urlsplit

import pytest
from desktop_gui import REPO, StandIn

EXTENSION = REPO / "desktop/nautilus/whonix_open_nautilus.py"
SYSTEM_PYTHON = Path("/usr/bin/python3")


class FakeMenuItem:
    def __init__(self, *, name: str, label: str, tip: str):
        self.name, self.label, self.tip = name, label, tip
        self.handlers = []

    def connect(self, signal: str, callback, *data):
        assert signal == "activate"
        self.handlers.append((callback, data))

    def activate(self):
        for callback, data in self.handlers:
            callback(self, *data)


class FakeGFile:
    """Gio.File for file:// URIs, as GIO decodes them: %XX are bytes and the
    path is a str with surrogate escapes (PyGObject's filename type)."""

    def __init__(self, uri: str):
        self.uri = uri

    @classmethod
    def new_for_uri(cls, uri: str) -> FakeGFile:
        return cls(uri)

    def get_uri(self) -> str:
        return self.uri

    def has_uri_scheme(self, scheme: str) -> bool:
        return urlsplit(self.uri).scheme == scheme

    def get_path(self) -> str | None:
        if not self.has_uri_scheme("file"):
            return None
        return os.fsdecode(unquote_to_bytes(urlsplit(self.uri).path))


def load_extension(monkeypatch, available=("4.0", "3.0")):
    """Import the extension against stub gi modules; returns (module, required versions)."""
    required = []

    def require_version(namespace, version):
        if version not in available:
            raise ValueError(f"Namespace {namespace} not available for version {version}")
        required.append(version)

    gi = types.ModuleType("gi")
    gi.require_version = require_version
    repository = types.ModuleType("gi.repository")
    repository.GObject = types.SimpleNamespace(GObject=type("GObject", (), {}))
    repository.Gio = types.SimpleNamespace(File=FakeGFile)
    repository.Nautilus = types.SimpleNamespace(
        MenuProvider=type("MenuProvider", (), {}), MenuItem=FakeMenuItem)
    gi.repository = repository
    monkeypatch.setitem(sys.modules, "gi", gi)
    monkeypatch.setitem(sys.modules, "gi.repository", repository)
    spec = importlib.util.spec_from_file_location("whonix_open_nautilus_under_test", EXTENSION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, required


class FileInfo:
    """Duck-typed Nautilus.FileInfo: only what the extension calls."""

    def __init__(self, uri: str, *, activation_uri: str | None = None,
                 directory: bool = False, gone: bool = False):
        self.uri, self.activation_uri = uri, activation_uri
        self.directory, self.gone = directory, gone

    def get_uri(self):
        return self.uri

    def get_activation_uri(self):
        return self.activation_uri if self.activation_uri is not None else self.uri

    def get_location(self):
        return FakeGFile(self.uri)

    def is_directory(self):
        return self.directory

    def is_gone(self):
        return self.gone


def local(path: Path, **kwargs) -> FileInfo:
    return FileInfo("file://" + quote(str(path)), **kwargs)


@pytest.fixture
def ext(monkeypatch):
    module, _ = load_extension(monkeypatch)
    return module


@pytest.fixture
def standin(tmp_path, monkeypatch):
    stand = StandIn(tmp_path)
    monkeypatch.setenv("PATH", f"{stand.bin}:/usr/bin:/bin")
    monkeypatch.setenv("WHONIX_OPEN_RECORD", str(stand.record))
    return stand


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "dir with 'quote' & space"
    folder.mkdir()
    first, second = folder / "a b.txt", folder / "-starts-with-dash.pdf"
    first.write_text("x")
    second.write_text("y")
    return first, second


def labels(items):
    return [item.label for item in items]


def test_prefers_api_4_and_falls_back_to_3(monkeypatch):
    assert load_extension(monkeypatch)[1] == ["4.0"]
    assert load_extension(monkeypatch, available=("3.0",))[1] == ["3.0"]


def test_api_4_call_shape_gives_the_entries_that_run_whonix_open(ext, standin, files):
    provider = ext.WhonixOpenMenuProvider()
    items = provider.get_file_items([local(files[0])])
    assert labels(items) == ["Open in Tor disposable", "View in Tor disposable",
                             "View in offline disposable",
                             "Convert to trusted PDF (offline disposable)", "Open in disposable…"]
    for item in items:
        item.activate()
    calls = standin.wait_calls(5)
    assert sorted(calls) == sorted([
        ["--", str(files[0])],
        ["--view-only", "--", str(files[0])],
        ["--view-only", "--offline", "--", str(files[0])],
        ["--convert", "--", str(files[0])],
        ["whonix-open-choose", "--", str(files[0])],
    ])


def test_api_3_call_shape_with_window_and_two_files(ext, standin, files):
    items = ext.WhonixOpenMenuProvider().get_file_items(object(), [local(f) for f in files])
    items[1].activate()
    assert standin.wait_calls(1) == [["--view-only", "--", str(files[0]), str(files[1])]]


def test_recent_item_resolving_to_a_local_file_gets_the_menu(ext, standin, files):
    item = FileInfo("recent:///abc123", activation_uri="file://" + quote(str(files[0])))
    entries = ext.WhonixOpenMenuProvider().get_file_items([item])
    entries[2].activate()
    assert standin.wait_calls(1) == [["--view-only", "--offline", "--", str(files[0])]]


@pytest.mark.parametrize("item", [
    FileInfo("sftp://host/home/u/a.txt"),
    FileInfo("smb://server/share/a.txt"),
    FileInfo("trash:///a.txt", activation_uri="trash:///a.txt"),
    FileInfo("recent:///xyz", activation_uri="sftp://host/a.txt"),
    FileInfo("file://otherhost/etc/passwd"),
    FileInfo("file:///tmp/gone.txt", gone=True),
], ids=["sftp", "smb", "trash", "recent-remote", "file-remote-host", "gone"])
def test_non_local_and_gone_items_get_no_menu(ext, item):
    assert ext.WhonixOpenMenuProvider().get_file_items([item]) == []


def test_one_non_local_item_in_a_selection_removes_the_menu(ext, files):
    selection = [local(files[0]), FileInfo("sftp://host/b.txt")]
    assert ext.WhonixOpenMenuProvider().get_file_items(selection) == []


def test_a_selection_with_a_folder_gets_no_menu(ext, files):
    """As in Thunar, Dolphin and PCManFM-Qt: files only."""
    provider = ext.WhonixOpenMenuProvider()
    folder = files[0].parent
    assert provider.get_file_items([local(folder, directory=True)]) == []
    assert provider.get_file_items([local(files[0]), local(folder, directory=True)]) == []
    assert len(provider.get_file_items([local(f) for f in files])) == 5


def test_empty_selection_gets_no_menu(ext):
    assert ext.WhonixOpenMenuProvider().get_file_items([]) == []


def test_falls_back_to_usr_bin_when_not_on_path(ext, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ext.command(["--view-only"], ["/x"]) == ["/usr/bin/whonix-open", "--view-only",
                                                    "--", "/x"]


def test_loads_in_debian_python_with_the_real_nautilus_4_api(tmp_path, files):
    """Real gi + Nautilus 4.0 typelib: the class registers and MenuItems are built."""
    assert SYSTEM_PYTHON.exists(), "Debian's python3 (with python3-nautilus) is missing"
    script = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("ext", {str(EXTENSION)!r})
ext = importlib.util.module_from_spec(spec); spec.loader.exec_module(ext)
from gi.repository import Gio, Nautilus
class F:
    def __init__(s, uri, d=False): s.uri, s.d = uri, d
    def get_uri(s): return s.uri
    def get_activation_uri(s): return s.uri
    def get_location(s): return Gio.File.new_for_uri(s.uri)
    def is_directory(s): return s.d
    def is_gone(s): return False
p = ext.WhonixOpenMenuProvider()
assert isinstance(p, Nautilus.MenuProvider)
items = p.get_file_items([F({("file://" + quote(str(files[0])))!r})])
assert all(isinstance(i, Nautilus.MenuItem) for i in items)
print("|".join(i.props.label for i in items))
assert p.get_file_items([F("sftp://h/x")]) == []
"""
    out = subprocess.run([str(SYSTEM_PYTHON), "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("Open in Tor disposable|View in Tor disposable|"
                                  "View in offline disposable|"
                                  "Convert to trusted PDF (offline disposable)|"
                                  "Open in disposable…")


def test_activation_runs_detached_without_a_shell(ext, standin, tmp_path):
    """A path full of shell syntax arrives as one argument, untouched."""
    nasty = tmp_path / "$(touch pwned); `id` | x & y > z.txt"
    nasty.write_text("x")
    ext.WhonixOpenMenuProvider().get_file_items([local(nasty)])[0].activate()
    assert standin.wait_calls(1) == [["--", str(nasty)]]
    assert not (tmp_path / "pwned").exists()


def test_a_non_utf8_name_reaches_whonix_open_as_its_bytes(tmp_path):
    """Real GIO and the real Nautilus 4.0 API in Debian's python3: a file whose
    name is not UTF-8 (as an archive or a USB stick brings them) is passed as
    its real bytes. `unquote` used to turn the byte into U+FFFD, a name that
    does not exist."""
    name = b"report-\xff\xfe-caf\xe9.txt"
    path = os.fsencode(tmp_path) + b"/" + name
    with open(path, "wb") as fh:
        fh.write(b"x")
    stand = StandIn(tmp_path)
    script = f"""
import importlib.util, os
spec = importlib.util.spec_from_file_location("ext", {str(EXTENSION)!r})
ext = importlib.util.module_from_spec(spec); spec.loader.exec_module(ext)
from gi.repository import Gio
class F:
    def __init__(s, g): s.g = g
    def get_uri(s): return s.g.get_uri()
    def get_activation_uri(s): return s.g.get_uri()
    def get_location(s): return s.g
    def is_directory(s): return False
    def is_gone(s): return False
g = Gio.File.new_for_path(os.fsdecode({path!r}))
items = ext.WhonixOpenMenuProvider().get_file_items([F(g)])
items[0].activate()
"""
    env = dict(os.environ, PATH=f"{stand.bin}:/usr/bin:/bin", WHONIX_OPEN_RECORD=str(stand.record))
    out = subprocess.run([str(SYSTEM_PYTHON), "-c", script], capture_output=True, text=True,
                         timeout=60, check=False, env=env)
    assert out.returncode == 0, out.stderr
    [call] = stand.wait_calls(1)
    assert call[0] == "--" and os.fsencode(call[1]) == path
