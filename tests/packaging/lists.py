"""The documented install lists (docs/INSTALL.md, generated from here): every file each
install puts down, with its mode. `make install-dom0`, `make install-vm`, the
dom0 RPM and the template .deb are all checked against these.

The Python packages are listed by source directory: every .py file under it is
installed (with its bytecode where the install compiles), nothing else.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# --- dom0 (make install-dom0, whonix-open-dom0 RPM) ---------------------------
DOM0_PYTHON = {"common": "whonix_open", "dom0": "whonix_open/dom0"}
DOM0_FILES = {
    "/etc/qubes-rpc/whonix.OpenInDisposable": 0o755,
    "/etc/qubes-rpc/whonix.ViewInDisposable": 0o755,
    "/etc/qubes-rpc/whonix.RoutingStatus": 0o755,
    "/etc/qubes-rpc/whonix.OpenURLInDisposable": 0o755,
    "/etc/qubes-rpc/whonix.StartAppInDisposable": 0o755,
    "/etc/qubes-rpc/whonix.ConvertInDisposable": 0o755,
    # dom0 menu entries (whonix-open-app)
    "/usr/share/applications/whonix-open-torbrowser.desktop": 0o644,
    "/usr/share/applications/whonix-open-terminal.desktop": 0o644,
    # as Qubes installs its own policy files: 0664 root:qubes
    "/etc/qubes/policy.d/70-whonix-open.policy": 0o664,
    "/etc/qubes/policy.d/30-user-whonix-open.policy": 0o664,
    "/etc/whonix-open/profiles.toml": 0o644,
    "/usr/lib/tmpfiles.d/whonix-open.conf": 0o644,
}
# >>> dom0 commands and units (whonix-open-admin and its reap timer, issue 10):
# expected when the tree has them (the RPM spec's marked spot lists the same).
DOM0_COMMANDS = ("whonix-open-admin", "whonix-open-app")
DOM0_UNITS = ("whonix-open-reap.service", "whonix-open-reap.timer")
DOM0_FILES.update({f"/usr/bin/{c}": 0o755 for c in DOM0_COMMANDS
                   if (REPO / "packaging" / c).exists()})
DOM0_FILES.update({f"/usr/lib/systemd/system/{u}": 0o644 for u in DOM0_UNITS
                   if (REPO / "packaging" / u).exists()})
DOM0_PRESET = "75-whonix-open.preset"  # enables the reap timer at install
if (REPO / "packaging" / DOM0_PRESET).exists():
    DOM0_FILES[f"/usr/lib/systemd/system-preset/{DOM0_PRESET}"] = 0o644
# <<< dom0 commands and units
# RPM config markings: c = %config, n = noreplace
DOM0_CONFIG = {
    "/etc/qubes/policy.d/70-whonix-open.policy": "c",
    "/etc/qubes/policy.d/30-user-whonix-open.policy": "cn",
    "/etc/whonix-open/profiles.toml": "cn",
}
DOM0_GROUP_QUBES = ("/etc/qubes/policy.d/70-whonix-open.policy",
                    "/etc/qubes/policy.d/30-user-whonix-open.policy")

# --- templates (make install-vm, the whonix-open .deb) ------------------------
VM_PYTHON = {"common": "whonix_open", "vm": "whonix_open/vm"}
VM_FILES = {
    "/usr/bin/whonix-open": 0o755,
    "/usr/bin/whonix-open-link": 0o755,
    "/usr/bin/whonix-open-choose": 0o755,
    "/usr/share/applications/whonix-open-link.desktop": 0o644,
    "/usr/share/applications/whonix-open-link-confirm.desktop": 0o644,
    "/usr/share/applications/whonix-open-choose.desktop": 0o644,
    "/usr/share/file-manager/actions/whonix-open-choose.desktop": 0o644,
    "/usr/share/kio/servicemenus/whonix-open-choose.desktop": 0o644,
    "/usr/share/kservices5/ServiceMenus/whonix-open-choose.desktop": 0o644,
    "/usr/bin/whonix-open-thunar-actions": 0o755,
    "/etc/xdg/autostart/whonix-open-thunar-actions.desktop": 0o644,
    "/usr/share/applications/whonix-open.desktop": 0o644,
    "/usr/share/applications/whonix-open-view.desktop": 0o644,
    "/usr/share/file-manager/actions/whonix-open-open.desktop": 0o644,
    "/usr/share/file-manager/actions/whonix-open-view.desktop": 0o644,
    "/usr/share/file-manager/actions/whonix-open-view-offline.desktop": 0o644,
    "/usr/share/file-manager/actions/whonix-open-convert.desktop": 0o644,
    "/usr/share/nautilus-python/extensions/whonix_open_nautilus.py": 0o644,
    "/usr/share/kio/servicemenus/whonix-open.desktop": 0o644,
    "/usr/share/kservices5/ServiceMenus/whonix-open.desktop": 0o644,
}
# only in the .deb (Debian's own files)
DEB_EXTRA = {
    "/usr/share/doc/whonix-open/changelog.gz": 0o644,
    "/usr/share/doc/whonix-open/copyright": 0o644,
}


def python_files(site: str, packages: dict[str, str]) -> dict[str, int]:
    """{installed path: mode} of the .py files of *packages* (source dir -> package dir)."""
    found = {}
    for source, target in packages.items():
        for py in sorted((REPO / source).rglob("*.py")):
            if "__pycache__" in py.parts:
                continue
            found[f"{site}/{target}/{py.relative_to(REPO / source)}"] = 0o644
    return found


def expected(site: str, which: str) -> dict[str, int]:
    """The full {path: mode} list of the dom0 or vm install, without bytecode."""
    if which == "dom0":
        return {**python_files(site, DOM0_PYTHON), **DOM0_FILES}
    return {**python_files(site, VM_PYTHON), **VM_FILES}


def split_bytecode(paths: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(files, __pycache__ files) of an install listing."""
    pyc = {p: m for p, m in paths.items() if "/__pycache__/" in p}
    return {p: m for p, m in paths.items() if p not in pyc}, pyc


def bytecode_matches(files: dict[str, int], pyc: dict[str, int]) -> list[str]:
    """Problems: a .py without its .pyc, or a .pyc without its .py."""
    problems = []
    sources = {p for p in files if p.endswith(".py") and "/whonix_open/" in p}
    covered = set()
    for p in pyc:
        directory, name = p.split("/__pycache__/")
        source = f"{directory}/{name.split('.')[0]}.py"
        if source not in sources:
            problems.append(f"stray bytecode {p}")
        covered.add(source)
    problems += [f"no bytecode for {s}" for s in sorted(sources - covered)]
    return problems
