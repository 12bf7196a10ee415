"""docs/ADMIN.md's policy table: who may call what, with whonix-open installed
and with stock Qubes + Whonix alone.

Every cell comes from the real code: the real qrexec policy parser over this
project's policy/ and the real R4.3 dom0 files (tests/policy/fixtures), with
the system information `whonix-open-admin` builds from the simulated Qubes
of table-scenario.toml (as qubesd gives it to qrexec-policy-daemon); where
the policy lets a call through to the broker, the broker's own admission
code (dom0/admission.py, through the admin tool's `broker_refuses`) says
whether it refuses it before creating anything.

    make docs                               # every generated block, this one too
    python -m tests.policy.policy_table     # only this one

`render()` is the generated block "policy-table" (registered in docs/generate.py
BLOCKS; its markers are in docs/ADMIN.md's Policy section);
tests/policy/test_policy_table.py fails when the page's copy differs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from tests.policy.real_policy import Policy
from whonix_open.contract import (
    SERVICE_APP,
    SERVICE_OPEN,
    SERVICE_STATUS,
    SERVICE_URL,
    SERVICE_VIEW,
)
from whonix_open.dom0.admin import policy as admin_policy
from whonix_open.dom0.admin.context import Context
from whonix_open.dom0.admin.inventory import Source
from whonix_open.sim.backend import SimBackend
from whonix_open.sim.harness import SimQubes

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "ADMIN.md"
SCENARIO = Path(__file__).resolve().parent / "table-scenario.toml"
NAME = "policy-table"
BEGIN = f"<!-- BEGIN GENERATED: {NAME} -->"
END = f"<!-- END GENERATED: {NAME} -->"

# caller class -> the qube of table-scenario.toml that is one
CALLERS = {
    "anon-vm AppVM behind Whonix": "anon-whonix",
    "clearnet AppVM": "personal",
    "vault (no network)": "vault",
    "whonix-open disposable": "disp-whonix-open",
    "qrexec's `@dispvm` disposable": "disp1234",
    "dom0": "dom0",
}
INBOUND_FROM = "sys-whonix"
OTHER = "work"
BROKER = (SERVICE_OPEN, SERVICE_VIEW, SERVICE_URL, SERVICE_APP)


class Row(NamedTuple):
    service: str
    argument: str  # policy spelling: "+tor", "+"
    target: str | None  # None: the caller is the target (a call into it)
    stock_twin: str | None = None  # the stock row a whonix row replaces

    @property
    def label(self) -> str:
        call = f"`{self.service}{self.argument if self.argument != '+' else ''}`"
        if self.target is None:
            return f"{call} from {INBOUND_FROM} into it"
        return f"{call} → {'another qube' if self.target == OTHER else f'`{self.target}`'}"


ROWS = (
    Row(SERVICE_OPEN, "+tor", "dom0", "qubes.OpenInVM"),
    Row(SERVICE_OPEN, "+offline", "dom0", "qubes.OpenInVM"),
    Row(SERVICE_VIEW, "+tor", "dom0", "qubes.OpenInVM"),
    Row(SERVICE_VIEW, "+offline", "dom0", "qubes.OpenInVM"),
    Row(SERVICE_URL, "+tor", "dom0", "qubes.OpenURL"),
    Row(SERVICE_URL, "+offline", "dom0", "qubes.OpenURL"),
    Row(SERVICE_APP, "+torbrowser+tor", "dom0", "qubes.StartApp"),
    Row(SERVICE_APP, "+terminal+offline", "dom0", "qubes.StartApp"),
    Row(SERVICE_STATUS, "+", "dom0"),
    Row("qubes.OpenInVM", "+", "@dispvm"),
    Row("qubes.OpenURL", "+", "@dispvm"),
    Row("qubes.StartApp", "+", "@dispvm"),
    Row("qubes.VMShell", "+", "@dispvm"),
    Row("qubes.VMExec", "+", "@dispvm"),
    Row("qubes.VMExecGUI", "+", "@dispvm"),
    Row("qubes.OpenInVM", "+", OTHER),
    Row("qubes.Filecopy", "+", OTHER),
    Row("qubes.ClipboardPaste", "+", OTHER),
    Row("whonix.NewStatus", "+", INBOUND_FROM),
    Row("whonix.SdwdateStatus", "+", None),
    Row("whonix.GatewayCommand", "+restart", None),
)

# Where whonix-open lets a caller do more than stock Qubes + Whonix lets it do
# with the stock service (the row's stock_twin towards @dispvm): why, one line
# each. render() fails on a looser cell that has no reason here.
LOOSER = {
    "anon-vm": "80-whonix asks before a Whonix qube's (or its disposable's) file, link or app "
               "goes to `@dispvm`, because nothing checks that disposable's network; the "
               "broker checks it in dom0 (a Whonix-Gateway, or none) before a byte is sent, "
               "and the caller already has Tor. Add an `ask` rule in "
               "30-user-whonix-open.policy to keep the prompt.",
    "vault": "stock Qubes gives a qube without `default_dispvm` no disposable at all; an "
             "offline one (the only kind the broker gives a qube without a netvm) adds no "
             "network path and is the isolation a vault lacks for untrusted files. Deny it "
             "in 30-user-whonix-open.policy if the vault must open nothing.",
}
LOOSER_KIND = {"anon-whonix": "anon-vm", "disp1234": "anon-vm", "vault": "vault"}
class Looser(NamedTuple):
    callers: list[str]
    calls: list[str]  # the whonix calls
    stock: list[str]  # what stock answers for their stock twins


class Tables(NamedTuple):
    ours: list[list[str]]  # per row of ROWS, per caller
    stock: list[list[str]]  # per row of STOCK_ROWS, per caller
    looser: dict[str, Looser]  # LOOSER key -> where


STOCK_ROWS = tuple(r for r in ROWS if r.service not in (*BROKER, SERVICE_STATUS))


def _broker(ctx: Context, row: Row, qube: str) -> str:
    code = ctx.broker_refuses(row.service, row.argument, qube) if row.service in BROKER \
        else None
    return f"refused {int(code)}" if code else ""


def _cell(policy: Policy, info: dict, ctx: Context | None, row: Row, qube: str) -> str:
    """The policy's answer, and what the broker then does (ctx: whonix-open)."""
    if qube == "dom0" and row.target is not None:
        # dom0's own calls go through no qrexec policy (it runs qrexec-client,
        # or the service, itself)
        if ctx is not None and row.service in BROKER:
            refused = _broker(ctx, row, qube)
            return f"direct, **{refused}**" if refused else "direct"
        return "—"
    source, target = (INBOUND_FROM, qube) if row.target is None else (qube, row.target)
    result = admin_policy.decide(policy.policy, info, row.service, row.argument, source,
                                 target).result
    refused = _broker(ctx, row, qube) if ctx is not None else ""
    if not refused:
        return result
    if result == "deny":  # both layers: the policy, and the broker if it were reached
        return f"deny ({refused})"
    return f"**{refused}**" if result == "allow" else f"{result}, **{refused}**"


def _rank(cell: str) -> int:
    """deny < ask < allow; whatever the broker refuses counts as deny."""
    if "refused" in cell:
        return 0
    return {"deny": 0, "ask": 1, "allow": 2, "direct": 2}[cell.split()[0].strip(",")]


def build() -> Tables:
    with tempfile.TemporaryDirectory(prefix="whonix-open-table-") as tmp:
        tmp_path = Path(tmp)
        sim = SimQubes.create(tmp_path / "sim", SCENARIO)
        env = {"WHONIX_OPEN_CONFIG": str(tmp_path / "no-profiles.toml")}  # built-ins only
        ctx = Context.load(Source(SimBackend(sim.dir)), env, str(tmp_path / "run"), None)
        info = admin_policy.system_info(ctx.inventory)
        ours = Policy(tmp_path / "ours")
        (tmp_path / "none").mkdir()
        stock_policy = Policy(tmp_path / "stock", ours=tmp_path / "none")
        qubes = list(CALLERS.values())
        ours_rows = [[_cell(ours, info, ctx, row, q) for q in qubes] for row in ROWS]
        stock_rows = [["—" if q == "disp-whonix-open" else _cell(stock_policy, info, None, row, q)
                       for q in qubes] for row in STOCK_ROWS]
    stock_of = {(r.service, r.argument, r.target): cells
                for r, cells in zip(STOCK_ROWS, stock_rows, strict=True)}
    looser: dict[str, Looser] = {}
    for row, cells in zip(ROWS, ours_rows, strict=True):
        twin = stock_of.get((row.stock_twin, "+", "@dispvm") if row.stock_twin
                            else (row.service, row.argument, row.target))
        if twin is None:
            continue
        for column, qube in enumerate(qubes):
            if twin[column] == "—" or _rank(cells[column]) <= _rank(twin[column]):
                continue
            kind = LOOSER_KIND.get(qube, qube)
            if kind not in LOOSER:
                raise ValueError(f"{row.label} from {qube}: {cells[column]} with whonix-open, "
                                 f"{twin[column]} in stock Qubes: write down why in LOOSER")
            where = looser.setdefault(kind, Looser([], [], []))
            for items, item in ((where.callers, f"`{qube}`"),
                                (where.calls, f"`{row.service}{row.argument}`"),
                                (where.stock, f"`{row.stock_twin or row.service}` → "
                                              f"`@dispvm`: {twin[column]}")):
                if item not in items:
                    items.append(item)
    return Tables(ours_rows, stock_rows, looser)


def _table(title: str, rows: tuple[Row, ...], cells: list[list[str]]) -> list[str]:
    head = [f"| {title} | " + " | ".join(CALLERS) + " |",
            "|---|" + "---|" * len(CALLERS)]
    return head + [f"| {row.label} | " + " | ".join(cells[i]) + " |"
                   for i, row in enumerate(rows)]


def render() -> str:
    """The generated block's text (between its markers)."""
    t = build()
    qubes = ", ".join(f"{c}: `{q}`" for c, q in CALLERS.items())
    looser = [f"- from {', '.join(w.callers)}: {', '.join(w.calls)} are allowed, where "
              f"stock answers {'; '.join(w.stock)}. Why: {LOOSER[kind]}"
              for kind, w in t.looser.items()]
    return "\n".join([
        f"Generated (`make docs`) from the real qrexec policy "
        f"parser and the broker's own admission code (`dom0/admission.py`); the qubes are "
        f"those of `tests/policy/table-scenario.toml` ({qubes}), the profiles the built-in "
        f"ones. `allow`/`ask`/`deny`: the policy's answer; **refused N**: the policy lets it "
        f"through and the broker refuses it with exit N before it creates anything; "
        f"deny (N): the policy denies it, and the broker would refuse it too; `direct`: "
        f"dom0's own call, which no policy checks (`whonix-open-app`); —: does not exist.",
        "",
        *_table("with whonix-open", ROWS, t.ours),
        "",
        "Stock Qubes R4.3 + Whonix, without whonix-open (its whonix services do not "
        "exist; a qube uses the stock services to `@dispvm` instead):",
        "",
        *_table("stock Qubes + Whonix", STOCK_ROWS, t.stock),
        "",
        "Stock is stricter than whonix-open here (the whonix service against the "
        "stock service it replaces); nowhere else:",
        "",
        *looser,
    ]) + "\n"


def page_block(text: str) -> str:
    """The text between the block's markers in *text*."""
    start = text.index(BEGIN + "\n") + len(BEGIN) + 1
    return text[start:text.index("\n" + END) + 1]


def write_page(path: Path = PAGE) -> bool:
    """Rewrite this block in *path* (docs/generate.py's own marker handling),
    leaving every other block as it is; True if it changed."""
    from tests.docs import generator

    gen = generator()
    text = path.read_text(encoding="utf-8")
    as_is = {m.group("name"): m.group("body") for m in gen.MARKER.finditer(text)}
    new, stale = gen.update(text, path, {**as_is, NAME: render()}, {NAME: render})
    if stale:
        path.write_text(new, encoding="utf-8")
    return bool(stale)


if __name__ == "__main__":
    where = PAGE.relative_to(REPO)
    print(f"{where}: policy table " + ("rewritten" if write_page() else "unchanged"),
          file=sys.stderr)
