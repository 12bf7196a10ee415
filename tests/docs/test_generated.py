"""The generated doc blocks (docs/generate.py) are what the code says today,
and the mechanism fails loudly: a stale block is named and shown as a diff."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs import generator

REPO = Path(__file__).resolve().parents[2]


def test_every_generated_block_is_current():
    r = subprocess.run([sys.executable, "docs/generate.py", "--check"], cwd=REPO,
                       capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 0, f"run `make docs`:\n{r.stdout}{r.stderr}"


def _doc(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "PAGE.md"
    path.write_text(f"# page\n\n<!-- BEGIN GENERATED: fact -->\n{body}"
                    "<!-- END GENERATED: fact -->\n\nprose\n")
    return path


def test_a_stale_block_is_named_with_a_diff(tmp_path):
    gen = generator()
    path = _doc(tmp_path, "old fact\n")
    out = io.StringIO()
    assert gen.run([path], write=False, registry={"fact": lambda: "new fact"}, out=out) == 1
    text = out.getvalue()
    assert "generated block 'fact' is out of date" in text
    assert "-old fact" in text and "+new fact" in text
    assert "old fact" in path.read_text()  # --check changes nothing


def test_write_replaces_only_the_block(tmp_path):
    gen = generator()
    path = _doc(tmp_path, "old fact\n")
    assert gen.run([path], write=True, registry={"fact": lambda: "new fact"},
                   out=io.StringIO()) == 0
    assert path.read_text() == ("# page\n\n<!-- BEGIN GENERATED: fact -->\nnew fact\n"
                                "<!-- END GENERATED: fact -->\n\nprose\n")
    assert gen.run([path], write=False, registry={"fact": lambda: "new fact"},
                   out=io.StringIO()) == 0


def test_registry_takes_module_function_strings(tmp_path):
    gen = generator()
    path = _doc(tmp_path, "x\n")
    out = io.StringIO()
    assert gen.run([path], write=False, registry={"fact": "platform:python_version"},
                   out=out) == 1
    assert f"+{__import__('platform').python_version()}" in out.getvalue()


@pytest.mark.parametrize("text, problem", [
    ("<!-- BEGIN GENERATED: fact -->\nno end\n", "unpaired"),
    ("<!-- BEGIN GENERATED: fact -->\n<!-- BEGIN GENERATED: fact -->\n"
     "<!-- END GENERATED: fact -->\n", "contains another marker"),
    ("<!-- BEGIN GENERATED: nosuch -->\n<!-- END GENERATED: nosuch -->\n", "unknown"),
])
def test_broken_markers_and_unknown_names_fail(tmp_path, text, problem):
    gen = generator()
    path = tmp_path / "PAGE.md"
    path.write_text(text)
    with pytest.raises(gen.BlockError, match=problem):
        gen.run([path], write=False, registry={"fact": lambda: "x"}, out=io.StringIO())


def test_a_registered_block_used_nowhere_fails(tmp_path):
    gen = generator()
    path = _doc(tmp_path, "x\n")
    out = io.StringIO()
    registry = {"fact": lambda: "x", "lost": lambda: "y"}
    assert gen.run([path], write=False, registry=registry, out=out) == 1
    assert "lost" in out.getvalue()


def test_a_disagreement_between_code_and_contract_fails(tmp_path, monkeypatch):
    """A render function that finds the code and DESIGN.md disagreeing makes
    the check fail, naming the block."""
    gen = generator()
    import blocks

    monkeypatch.setattr(blocks, "service_names", lambda: ["whonix.NewService"])
    path = tmp_path / "PAGE.md"
    path.write_text("<!-- BEGIN GENERATED: services -->\n<!-- END GENERATED: services -->\n")
    with pytest.raises(gen.BlockError, match=r"block 'services'.*whonix.NewService"):
        gen.run([path], write=False, registry={"services": blocks.services}, out=io.StringIO())
