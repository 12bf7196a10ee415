"""The render functions of the generated doc blocks (registered in docs/generate.py).

Each reads its facts from the code (and, where the meaning of a fact is the
contract's prose, from docs/DESIGN.md), checks that the two agree, and returns
markdown. A disagreement raises BlockError, so `generate.py --check` fails.
"""

from __future__ import annotations

import ast
import configparser
import difflib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "DESIGN.md"


class BlockError(Exception):
    """The code and the docs' sources disagree; the message says how."""


# --- helpers -----------------------------------------------------------------

def table_after(path: Path, heading: str) -> list[list[str]]:
    """The rows (without header) of the first markdown table after the line
    starting with *heading*."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    except StopIteration:
        raise BlockError(f"{path.name} has no heading {heading!r}") from None
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 2:
        raise BlockError(f"{path.name}: no table after {heading!r}")
    return rows[2:]  # header and separator


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _compare(what: str, code: set, doc: set, doc_name: str) -> None:
    if code != doc:
        raise BlockError(f"{what}: in the code but not in {doc_name}: "
                         f"{sorted(code - doc) or 'none'}; in {doc_name} but not in the code: "
                         f"{sorted(doc - code) or 'none'}")


# --- services ----------------------------------------------------------------

def service_names() -> list[str]:
    """The qrexec services the contract names (whonix_open.contract SERVICE_*)."""
    from whonix_open import contract

    return [value for name, value in vars(contract).items()
            if name.startswith("SERVICE_") and isinstance(value, str)]


def design_services() -> dict[str, list[str]]:
    """service name -> its row of DESIGN.md's services table."""
    rows = table_after(DESIGN, "## Services")
    return {re.sub(r"[`+].*", "", row[0].strip("`")): row for row in rows}


def services() -> str:
    """The services table: which exist (code, qubes-rpc/), what each does (DESIGN)."""
    code = set(service_names())
    rpc = {p.name for p in (REPO / "qubes-rpc").iterdir() if p.is_file()}
    design = design_services()
    _compare("qrexec services (contract.py SERVICE_*)", code, rpc, "qubes-rpc/")
    _compare("qrexec services (contract.py SERVICE_*)", code, set(design),
             "DESIGN.md's services table")
    rows = [[row[0], row[1], row[2], f"`/etc/qubes-rpc/{name}`"]
            for name, row in design.items()]
    return md_table(["service (called in dom0)", "what it does", "stdin / stdout", "installed as"],
                    rows)


# --- exit codes --------------------------------------------------------------

def dom0_exit_codes() -> str:
    """contract.Exit with DESIGN.md's meanings and vm/messages.py's text."""
    from whonix_open.contract import Exit
    from whonix_open.vm.messages import MESSAGES

    qrexec = {Exit.QREXEC_FAILED, Exit.POLICY_DENIED, Exit.SERVICE_NOT_FOUND}
    meanings = {int(row[0]): row[1] for row in
                table_after(DESIGN, "## Exit codes of the dom0 services")}
    _compare("dom0 exit codes (contract.Exit)", {int(c) for c in Exit if c not in qrexec},
             set(meanings), "DESIGN.md's exit-code table")
    missing = [c.name for c in Exit if c not in MESSAGES]
    if missing:
        raise BlockError(f"vm/messages.py MESSAGES has no text for {missing}")
    rows = []
    for code in Exit:
        meaning = "qrexec's own" if code in qrexec else meanings[int(code)]
        told = MESSAGES[code].format(profile="the profile 'NAME'")
        rows.append([str(int(code)), f"`{code.name}`", meaning, told])
    return md_table(["code", "`Exit`", "meaning (DESIGN.md)", "`whonix-open` says"], rows)


EPILOG_ENTRY = re.compile(r"^  (\S+(?:, \S+)*)\s{2,}(.*)$")


def _expand(codes: str) -> tuple[set[int], set[int]]:
    """(every code a "64-75, 76/77" entry covers, the codes it names one by one)."""
    covered: set[int] = set()
    named: set[int] = set()
    for part in re.split(r"[,/]\s*", codes):
        low, _, high = part.partition("-")
        covered.update(range(int(low), int(high or low) + 1))
        if not high:
            named.add(int(low))
    return covered, named


def vm_exit_codes() -> str:
    """The `whonix-open` exit codes as its --help states them (vm/exitcodes.py
    EPILOG), checked to cover every CliExit and every dom0/qrexec code."""
    from whonix_open.vm.exitcodes import DOM0_CODES, EPILOG, CliExit

    entries: list[list[str]] = []
    tail: list[str] = []
    for line in EPILOG.splitlines()[1:]:  # after "exit status:"
        m = EPILOG_ENTRY.match(line)
        if m:
            entries.append([m.group(1), m.group(2)])
        elif line.startswith("   ") and entries and not tail:
            entries[-1][1] += " " + line.strip()
        else:
            tail.append(line.strip())
    covered = set().union(*(_expand(codes)[0] for codes, _ in entries))
    named = set().union(*(_expand(codes)[1] for codes, _ in entries))
    wanted = {int(c) for c in CliExit} | set(DOM0_CODES)
    if wanted - covered:
        raise BlockError(f"vm/exitcodes.py EPILOG (whonix-open --help) does not explain exit "
                         f"code(s) {sorted(wanted - covered)}")
    if named - wanted:
        raise BlockError(f"vm/exitcodes.py EPILOG explains code(s) {sorted(named - wanted)} "
                         "that are neither CliExit nor dom0's")
    text = md_table(["code", "meaning"], [[c, t] for c, t in entries])
    return text + ("\n" + " ".join(tail) + "\n" if tail else "")


# --- audit line --------------------------------------------------------------

def audit_line() -> str:
    """The format of dom0's audit line, from the line AuditRecord.emit writes."""
    from whonix_open.dom0 import audit

    record = audit.AuditRecord("SERVICE")
    fields = [k for k, v in vars(record).items() if v == "-"]
    for key in fields:
        setattr(record, key, key.upper())
    with mock.patch.object(audit, "log_line"):
        line = record.emit(0)
    line = re.sub(r"exit=0 ", "exit=CODE ", line)
    line = re.sub(r"duration=[0-9.]+s", "duration=SECONDSs", line)
    return f"```\n{line}\n```\n"


# --- the Admin API calls of one open ---------------------------------------

CALL_ROLES = {"caller": "caller", "disp": "the disposable", "dom0": "dom0"}
CALL_WHY = {
    ("admin.vm.property.GetAll", "caller"): "its class (loop guard, rule 1; a DispVM caller "
    "adds `admin.vm.tag.List`), netvm (no new network: a caller without one asking for a "
    "network adds `admin.vm.feature.Get whonix-open-allow-network`) and `default_dispvm` "
    "(the DVM choice)",
    ("admin.vm.property.GetAll", "DVM template"): "`template_for_dispvms`, its netvm (gateway "
    "choice; fast path?), label (rule 2)",
    ("admin.vm.feature.CheckWithTemplate", "DVM template"): "`whonix-ws` (rule 2)",
    ("admin.vm.feature.CheckWithTemplate", "gateway"): "`whonix-gw` (rule 4)",
    ("admin.vm.CreateDisposable", "DVM template"): "rule 3; the DVM's netvm fits the profile "
    "(an R4.3 preload if one is ready)",
    ("admin.vm.Create.DispVM", "dom0"): "rule 3; the DVM's netvm does not fit: a halted DispVM "
    "outside the preload queue",
    ("admin.vm.tag.Set", "the disposable"): "`whonix-open-disposable`: contained by policy "
    "(rule 8, containment)",
    ("admin.vm.feature.Set", "the disposable"): "session marker (a later request may remove it)",
    ("admin.vm.property.Set", "the disposable"): "`default_dispvm` none (rule 5); after "
    "`Create.DispVM` first `auto_cleanup` and `netvm` (rules 3, 4)",
    ("admin.Events", "the disposable"): "the netvm watchdog (rule 7), opened before the read-back",
    ("admin.vm.property.GetAll", "the disposable"): "class, template, auto_cleanup, "
    "default_dispvm, netvm and whether it runs, read back (rule 6)",
    ("admin.vm.Start", "the disposable"): "only if it is not running (not for a preload)",
    ("admin.vm.Kill", "the disposable"): "cleanup, on every path",
}


def call_table() -> str:
    """The calls tests/real/test_real_calls.py counts at the qubesd socket."""
    from tests.real.test_real_calls import DVM, OFFLINE, TOR, TOR_PRELOAD

    roles = {**CALL_ROLES, DVM: "DVM template", "sys-whonix": "gateway"}

    def named(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
        try:
            return [(method, roles[dest]) for method, dest in calls]
        except KeyError as exc:
            raise BlockError(f"no role for destination {exc} in docs/blocks.py") from None

    tor, offline = named(TOR), named(OFFLINE)
    for call in {*tor, *offline} - set(CALL_WHY):
        raise BlockError(f"no reason for {call} in docs/blocks.py CALL_WHY")
    preload = named(TOR_PRELOAD)
    instead = [c for c in preload if c not in tor]
    gone = [c for c in tor if c not in preload]
    if [c[0] for c in instead] != ["admin.vm.feature.Get"] or \
            [c[0] for c in gone] != ["admin.vm.Start"]:
        raise BlockError(f"a ready preload's calls changed: {instead} instead of {gone}; "
                         "say so in docs/blocks.py call_table")
    rows = [[str(i), f"`{m}`", d, CALL_WHY[(m, d)]] for i, (m, d) in enumerate(tor, 1)]
    text = (f"`tor`, the DVM template's own netvm is the gateway, no preload ready: "
            f"**{len(tor)} calls**. A ready preload: {len(preload)}, with "
            f"`admin.vm.feature.Get deferred-netvm-original` on the disposable instead of "
            f"`admin.vm.Start` (a netvm change qubesd deferred while it was paused would leave "
            f"it on the old network: refused, 67).\n\n"
            + md_table(["#", "call", "destination", "why"], rows))
    diff = difflib.SequenceMatcher(a=tor, b=offline, autojunk=False)
    changes = []
    for op, a1, a2, b1, b2 in diff.get_opcodes():
        if op == "equal":
            continue
        now = ", ".join(f"`{m}` ({d})" for m, d in offline[b1:b2])
        if op == "insert":
            changes.append(f"after call {a1} come {now}")
        elif op == "delete":
            changes.append(f"calls {a1 + 1} to {a2} are left out")
        else:
            span = (f"call {a1 + 1} becomes" if a2 - a1 == 1
                    else f"calls {a1 + 1} to {a2} become")
            changes.append(f"{span} {now}")
    text += (f"\n`offline` from a DVM template with a network (`admin.vm.Create.DispVM`, "
             f"preloads never used): **{len(offline)} calls**; "
             + "; ".join(changes) + ".\n")
    return text


# --- configuration defaults, vendor policy -----------------------------------

def profile_defaults() -> str:
    """What dom0 uses when /etc/whonix-open/profiles.toml says nothing (dom0/config.py)."""
    from whonix_open.dom0 import config

    rows = [[f"`{key}`", str(default), f"{low} to {high}"]
            for key, default in config.Limits._field_defaults.items()
            for low, high in [config.LIMIT_RANGES[key]]]
    apps = ", ".join(f"`{name}` (`{desktop}.desktop`)"
                     for name, desktop in config.BUILTIN_APPS.items())
    profiles = ", ".join(f"`{p}`" for p in config.BUILTIN_PROFILES)
    return (f"File: `{config.DEFAULT_PATH}` (all optional). Built-in profiles: {profiles}; "
            f"`default_profile = \"{config.DEFAULT_PROFILE}\"`. Built-in apps: {apps}.\n\n"
            + md_table(["`[limits]` key", "default", "allowed"], rows))


def vendor_policy() -> str:
    """The rules of the vendor policy file, as installed (comments left out)."""
    path = REPO / "policy" / "70-whonix-open.policy"
    rules = [line for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return "```\n" + "\n".join(rules) + "\n```\n"


# --- file-manager entries ----------------------------------------------------

def _literal(path: Path, name: str):
    """The value of a top-level `NAME = <literal>` in a Python file, without importing
    it (the Nautilus extension needs gi, the Thunar tool is a script)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(node.value)
    raise BlockError(f"{path.relative_to(REPO)} has no {name}")


def _desktop(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # keys are case-sensitive
    cp.read(path, encoding="utf-8")
    return cp


def _service_menu(path: Path) -> dict[str, str]:
    """{label: command} of a Dolphin service menu's actions."""
    cp = _desktop(path)
    return {cp[s]["Name"]: _command(cp[s]["Exec"])
            for s in cp.sections() if s.startswith("Desktop Action ")}


def _command(exec_line: str) -> str:
    return re.sub(r"\s*%[FfUu]$", "", exec_line).removesuffix(" --") + " -- FILES"


def file_manager_entries() -> str:
    """The right-click entries of each file manager, read from its own file."""
    return _entries_table(entries_by_file_manager())


def entries_by_file_manager() -> dict[str, dict[str, str]]:
    """{file manager: {label: command}} from the files each one reads."""
    desktop = REPO / "desktop"
    thunar = {label: _command(cmd) for _, label, _, cmd in
              _literal(desktop / "thunar" / "whonix-open-thunar-actions", "ACTIONS")}
    nautilus_py = desktop / "nautilus" / "whonix_open_nautilus.py"
    nautilus = {label: _command(" ".join(("whonix-open", *opts)))
                for _, label, _, opts in _literal(nautilus_py, "ENTRIES")}
    chooser = _literal(nautilus_py, "CHOOSER")
    nautilus[chooser[1]] = _command("whonix-open-choose")  # chooser_command()
    dolphin, dolphin_kf5 = ({label: command
                             for path in sorted([*(desktop / "dolphin" / kf).glob("*.desktop"),
                                                 *(desktop / "chooser" / "dolphin" / kf)
                                                 .glob("*.desktop")])
                             for label, command in _service_menu(path).items()}
                            for kf in ("kf6", "kf5"))
    if dolphin_kf5 != dolphin:
        raise BlockError("the KF5 and KF6 Dolphin service menus differ: "
                         f"{sorted(set(dolphin_kf5.items()) ^ set(dolphin.items()))}")
    pcmanfm: dict[str, str] = {}
    for path in sorted([*(desktop / "pcmanfm-qt").glob("*.desktop"),
                        *(desktop / "chooser" / "pcmanfm-qt").glob("*.desktop")]):
        cp = _desktop(path)
        (profile,) = [s for s in cp.sections() if s.startswith("X-Action-Profile ")]
        pcmanfm[cp["Desktop Entry"]["Name"]] = _command(cp[profile]["Exec"])
    return {"Thunar": thunar, "Nautilus": nautilus, "Dolphin": dolphin, "PCManFM-Qt": pcmanfm}


def _entries_table(by_fm: dict[str, dict[str, str]]) -> str:
    keys: list[tuple[str, str]] = []
    for entries in by_fm.values():
        keys += [k for k in entries.items() if k not in keys]
    thunar = REPO / "desktop" / "thunar" / "whonix-open-thunar-actions"
    what = {label: text for _, label, text, _ in _literal(thunar, "ACTIONS")}
    rows = [[f"**{label}**", f"`{command}`", what.get(label, ""),
             *("✓" if by_fm[fm].get(label) == command else "—" for fm in by_fm)]
            for label, command in keys]
    return md_table(["entry", "runs", "what happens", *by_fm], rows)


# --- installed files ---------------------------------------------------------

FILE_ROLES = [  # (path prefix, what it is): the first match is used
    ("/etc/qubes-rpc/", "qrexec service"),
    ("/etc/qubes/policy.d/70-", "vendor policy: replaced on upgrade"),
    ("/etc/qubes/policy.d/30-", "your policy: commented examples, never overwritten"),
    ("/etc/whonix-open/profiles.toml", "your profiles: all commented out, never overwritten"),
    ("/usr/lib/tmpfiles.d/", "`/run/whonix-open` `2770 root:qubes` and its lock `0660 "
     "root:qubes` (created at install and boot)"),
    ("/usr/lib/systemd/system-preset/", "enables the reap timer: the RPM starts it at install, "
     "restarts it on upgrade, disables it at removal"),
    ("/usr/lib/systemd/system/", "`whonix-open-admin reap` a minute after boot, every 5 minutes"),
    ("/usr/share/applications/whonix-open-torbrowser", "dom0 menu entry (`whonix-open-app`)"),
    ("/usr/share/applications/whonix-open-terminal", "dom0 menu entry (`whonix-open-app`)"),
    ("/usr/share/applications/whonix-open-link", "link handler (`x-scheme-handler/http(s)`)"),
    ("/usr/share/applications/whonix-open-choose", "\"Open With\": the chooser"),
    ("/usr/share/applications/", "\"Open With\" / MIME handler (`NoDisplay=true`)"),
    ("/usr/share/file-manager/actions/", "PCManFM-Qt action"),
    ("/usr/share/kio/servicemenus/", "Dolphin service menu (KF6, KF5 ≥ 5.85)"),
    ("/usr/share/kservices5/ServiceMenus/", "Dolphin service menu (older KF5)"),
    ("/usr/share/nautilus-python/extensions/", "Nautilus extension (needs python3-nautilus)"),
    ("/usr/bin/whonix-open-thunar-actions", "merges the Thunar entries into each user's uca.xml"),
    ("/etc/xdg/autostart/", "runs `whonix-open-thunar-actions --autostart` at each login"),
    ("/usr/bin/", "command"),
    ("/usr/share/doc/", "Debian's package docs (.deb only)"),
]
CONFIG_MARKS = {"c": "`%config`", "cn": "`%config(noreplace)`"}


def _files_table(files: dict[str, int], python: dict[str, str], config: dict[str, str],
                 group_qubes: tuple[str, ...] = ()) -> str:
    rows = [[", ".join(f"`<site-packages>/{target}/` (`{source}/`)"
                       for source, target in python.items()), "0644",
             "the Python modules, precompiled"]]
    for path, mode in files.items():
        role = next((r for prefix, r in FILE_ROLES if path.startswith(prefix)), None)
        if role is None:
            raise BlockError(f"no description for installed file {path} in docs/blocks.py "
                             "FILE_ROLES")
        marks = [CONFIG_MARKS[config[path]]] if path in config else []
        marks += ["root:qubes"] if path in group_qubes else []
        rows.append([f"`{path}`", f"{mode:04o}" + (f" {' '.join(marks)}" if marks else ""),
                     role])
    return md_table(["file", "mode", "what"], rows)


def dom0_files() -> str:
    """What `make install-dom0` and the dom0 RPM install (tests/packaging/lists.py)."""
    from tests.packaging import lists

    return _files_table(lists.DOM0_FILES, lists.DOM0_PYTHON, lists.DOM0_CONFIG,
                        lists.DOM0_GROUP_QUBES)


def vm_files() -> str:
    """What `make install-vm` and the template .deb install (tests/packaging/lists.py)."""
    from tests.packaging import lists

    return _files_table({**lists.VM_FILES, **lists.DEB_EXTRA}, lists.VM_PYTHON, {})


# --- the commands' --help ----------------------------------------------------

def console_scripts() -> dict[str, str]:
    """{command: "module:function"} from setup.py's console_scripts."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict((part.strip() for part in s.split("=", 1)) for s in scripts)
    raise BlockError("setup.py has no console_scripts")


def _run_help(argv0: str, code: str, args: list[str]) -> str:
    """The --help text as the installed command prints it: its own argv[0], 80
    columns, no caller environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WHONIX_OPEN_", "QREXEC_"))}
    env.update({"COLUMNS": "80", "LC_ALL": "C.UTF-8", "PYTHONPATH": str(REPO)})
    r = subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = {argv0!r}; {code}",
                        *args], capture_output=True, text=True, env=env, cwd=REPO,
                       check=False, timeout=60)
    if r.returncode != 0 or r.stderr:
        raise BlockError(f"`{argv0} {' '.join(args)}` exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout.rstrip("\n")


def _help_block(parts: list[tuple[str, str]]) -> str:
    """parts: (shown command line, its output)."""
    body = "\n\n".join(f"$ {shown}\n{out}" for shown, out in parts)
    return f"```\n{body}\n```\n"


def _script_help(command: str) -> Callable[[], str]:
    def render() -> str:
        module, _, func = console_scripts()[command].partition(":")
        code = f"from {module} import {func}; sys.exit({func}())"
        parts = [(f"{command} --help", _run_help(command, code, ["--help"]))]
        if command == "whonix-open-admin":
            from whonix_open.dom0.admin.main import COMMANDS

            parts += [(f"{command} {sub} --help", _run_help(command, code, [sub, "--help"]))
                      for sub in COMMANDS]
        return _help_block(parts)
    render.__doc__ = f"`{command} --help` from its real parser"
    return render


def _thunar_help() -> str:
    script = REPO / "desktop" / "thunar" / "whonix-open-thunar-actions"
    code = f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    return _help_block([("whonix-open-thunar-actions --help",
                         _run_help("whonix-open-thunar-actions", code, ["--help"]))])


def _sim_help() -> str:
    code = "import runpy; runpy.run_module('whonix_open.sim', run_name='__main__')"
    parts = [("python -m whonix_open.sim --help", _run_help("python -m whonix_open.sim", code,
                                                            ["--help"]))]
    parts += [(f"python -m whonix_open.sim {sub} --help",
               _run_help("python -m whonix_open.sim", code, [sub, "--help"]))
              for sub in ("init", "show", "scenarios")]
    return _help_block(parts)


HELP: dict[str, Callable[[], str]] = {
    **{name: _script_help(name) for name in console_scripts()},
    "whonix-open-thunar-actions": _thunar_help,
    "sim": _sim_help,
}
