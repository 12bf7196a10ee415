"""docs/ADMIN.md's policy table is what the generator makes now, and each of its
broker cells is what the real service executable does on the same
simulated Qubes (qrexec's environment, real pipes)."""

from __future__ import annotations

import re

import pytest

from tests.dom0.conftest import Broker, header
from tests.policy import policy_table
from whonix_open.contract import SERVICE_APP, SERVICE_URL
from whonix_open.sim.harness import SimQubes


@pytest.fixture(scope="module")
def tables() -> policy_table.Tables:
    return policy_table.build()


def test_the_page_table_is_generated_from_the_policy_and_the_broker():
    page = policy_table.PAGE.read_text()
    assert policy_table.page_block(page) == policy_table.render(), (
        "docs/ADMIN.md's policy table is out of date: run `make docs`")


def test_the_generator_renders_this_block():
    """`make docs` / `generate.py --check` know the block by its name."""
    from tests.docs import generator

    assert generator().render(policy_table.NAME) == policy_table.render()


def test_write_page_rewrites_only_the_block(tmp_path):
    other = "<!-- BEGIN GENERATED: services -->\nleft alone\n<!-- END GENERATED: services -->\n"
    stale = tmp_path / "ADMIN.md"
    stale.write_text(f"before\n{other}{policy_table.BEGIN}\nold\n{policy_table.END}\nafter\n")
    assert policy_table.write_page(stale)
    text = stale.read_text()
    assert text.startswith(f"before\n{other}{policy_table.BEGIN}\n")
    assert text.endswith(f"\n{policy_table.END}\nafter\n")
    assert policy_table.page_block(text) == policy_table.render()
    assert not policy_table.write_page(stale)


def test_the_cells_issue_16_is_about(tables):
    callers = list(policy_table.CALLERS.values())
    rows = {(r.service, r.argument, r.target): cells
            for r, cells in zip(policy_table.ROWS, tables.ours, strict=True)}
    vault, ours = callers.index("vault"), callers.index("disp-whonix-open")
    assert rows[(SERVICE_URL, "+tor", "dom0")][vault] == "**refused 79**"
    for row, cells in zip(policy_table.ROWS, tables.ours, strict=True):
        assert cells[ours].startswith("deny"), row  # contained: no way out, no way in
    stock = {(r.service, r.argument, r.target): cells
             for r, cells in zip(policy_table.STOCK_ROWS, tables.stock, strict=True)}
    assert stock[("qubes.OpenInVM", "+", "@dispvm")][vault] == "deny"


def _data(service: str) -> bytes:
    if service == SERVICE_URL:
        return b"https://example.org/\n"
    if service == SERVICE_APP:
        return b"\n"
    return header("a.txt") + b"hello"


def _expected(cell: str) -> int | None:
    """The exit code a broker cell promises; None: the policy stops the call
    and the table does not say what the broker would do."""
    refused = re.search(r"refused (\d+)", cell)
    if refused:
        return int(refused[1])
    return 0 if cell == "allow" else None


def test_every_broker_cell_is_what_the_broker_executable_does(tables, tmp_path):
    sim = SimQubes.create(tmp_path / "sim", policy_table.SCENARIO)
    broker = Broker(sim, tmp_path)
    checked = 0
    for row, cells in zip(policy_table.ROWS, tables.ours, strict=True):
        if row.service not in policy_table.BROKER:
            continue
        for qube, cell in zip(policy_table.CALLERS.values(), cells, strict=True):
            expected = _expected(cell)
            if qube == "dom0" or expected is None:
                continue
            r = broker.run(_data(row.service), service=row.service,
                           arg=row.argument.removeprefix("+"), caller=qube)
            assert r.code == expected, (row.label, qube, cell, r.err)
            checked += 1
    assert checked >= 30
    assert sim.disposables() == ["disp-whonix-open", "disp1234"]  # every one it made is gone
