"""Generated blocks in the markdown docs: facts the code knows, written from the code.

A block in any of the DOCS files looks like

    <!-- BEGIN GENERATED: name -->
    ...text written by this script...
    <!-- END GENERATED: name -->

and BLOCKS maps each name to the function that renders it (a callable, or a
"module:function" string imported only when needed). Each render function
returns the block's markdown and raises BlockError when the code and the
contract disagree (e.g. an exit code without a meaning in DESIGN.md).

    python docs/generate.py --check   # exit 1 naming each stale block, with a diff
    python docs/generate.py --write   # rewrite the stale blocks in place
    python docs/generate.py --list    # the registered names

`make docs` writes; tests/docs/test_generated.py runs --check, so CI fails when
the code changes and the docs do not. To add a block: a render function (in
docs/blocks.py, or anywhere importable from the repository root) and one line
in BLOCKS, as "policy-table": "tests.policy.policy_table:render" (whose markers
are in docs/ADMIN.md); then put the markers where it belongs and run `make docs`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: import the tree's blocks and tests
    sys.path.insert(0, str(REPO))
if str(REPO / "docs") not in sys.path:
    sys.path.insert(0, str(REPO / "docs"))

import blocks  # noqa: E402 - after the path set-up above

Render = Callable[[], str]

BLOCKS: dict[str, Render | str] = {
    "services": blocks.services,
    "dom0-exit-codes": blocks.dom0_exit_codes,
    "vm-exit-codes": blocks.vm_exit_codes,
    "audit-line": blocks.audit_line,
    "call-table": blocks.call_table,
    "profile-defaults": blocks.profile_defaults,
    "vendor-policy": blocks.vendor_policy,
    "file-manager-entries": blocks.file_manager_entries,
    "dom0-files": blocks.dom0_files,
    "vm-files": blocks.vm_files,
    "policy-table": "tests.policy.policy_table:render",
    **{f"help-{name}": render for name, render in blocks.HELP.items()},
}

# The markdown files that may hold blocks (relative to the repository root).
DOCS = ("README.md", "docs/*.md")

# A marker is a line of its own (a mention in the text, e.g. in `code`, is not one).
MARKER = re.compile(
    r"^(?P<begin><!-- BEGIN GENERATED: (?P<name>[a-z0-9-]+) -->\n)"
    r"(?P<body>.*?)"
    r"^(?P<end><!-- END GENERATED: (?P=name) -->)$",
    re.DOTALL | re.MULTILINE,
)
ANY_MARKER = re.compile(r"^<!-- (BEGIN|END) GENERATED: .*-->$", re.MULTILINE)


# A block cannot be rendered, or the markers are broken; the message says which.
BlockError = blocks.BlockError


def doc_files(root: Path = REPO) -> list[Path]:
    return sorted({p for pattern in DOCS for p in root.glob(pattern)})


def render(name: str, registry: Mapping[str, Render | str] | None = None) -> str:
    """The block's text, ending with a newline."""
    registry = BLOCKS if registry is None else registry
    entry = registry.get(name)
    if entry is None:
        raise BlockError(f"unknown generated block {name!r} (not in docs/generate.py BLOCKS)")
    try:
        if isinstance(entry, str):
            module, _, func = entry.partition(":")
            entry = getattr(importlib.import_module(module), func)
        text = entry()
    except (BlockError, ImportError, AttributeError) as exc:
        # e.g. a module the block reads its facts from was moved or renamed
        raise BlockError(f"block {name!r}: {type(exc).__name__}: {exc}") from None
    return text if text.endswith("\n") else text + "\n"


def _check_markers(path: Path, text: str) -> None:
    """Every BEGIN has its END, none nested or unpaired."""
    spans = [(m.start(), m.end()) for m in MARKER.finditer(text)]
    for m in ANY_MARKER.finditer(text):
        if not any(a <= m.start() < b for a, b in spans):
            raise BlockError(f"{path}: unpaired or nested marker {m.group(0)!r}")
    for m in MARKER.finditer(text):
        if ANY_MARKER.search(m.group("body")):
            raise BlockError(f"{path}: block {m.group('name')!r} contains another marker")


def update(text: str, path: Path, rendered: dict[str, str],
           registry: Mapping[str, Render | str] | None = None) -> tuple[str, list[str]]:
    """(new text, names of the blocks that changed). *rendered* caches renders."""
    _check_markers(path, text)
    stale: list[str] = []

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in rendered:
            rendered[name] = render(name, registry)
        if m.group("body") != rendered[name]:
            stale.append(name)
        return m.group("begin") + rendered[name] + m.group("end")

    return MARKER.sub(replace, text), stale


def run(paths: Iterable[Path], write: bool,
        registry: Mapping[str, Render | str] | None = None, out=sys.stdout) -> int:
    """Check (or write) every block in *paths*; 0 when all were up to date."""
    registry = BLOCKS if registry is None else registry
    rendered: dict[str, str] = {}
    failed = 0
    for path in paths:
        old = path.read_text(encoding="utf-8")
        new, stale = update(old, path, rendered, registry)
        if not stale:
            continue
        failed += len(stale)
        where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        if write:
            path.write_text(new, encoding="utf-8")
            print(f"{where}: rewrote {', '.join(stale)}", file=out)
            continue
        for name in stale:
            print(f"{where}: generated block {name!r} is out of date "
                  "(run `make docs`); the diff from the docs to the code:", file=out)
        out.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True),
            f"{where} (as written)", f"{where} (from the code)"))
    unused = sorted(set(registry) - set(rendered))
    if unused:
        print(f"generated block(s) registered but used in no document: {', '.join(unused)}",
              file=out)
        return 1
    return 1 if failed and not write else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or write the generated doc blocks.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if any block is stale")
    mode.add_argument("--write", action="store_true", help="rewrite stale blocks")
    mode.add_argument("--list", action="store_true", help="print the registered names")
    ns = parser.parse_args(argv)
    if ns.list:
        print("\n".join(BLOCKS))
        return 0
    try:
        return run(doc_files(), write=ns.write)
    except BlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
