"""whonix-open-admin setup / --undo against the simulated Qubes, through its
public entry point main(args, env=...), and then the broker's real service
executable: after setup every profile takes a preloaded disposable."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from pathlib import Path

import pytest

from tests.admin.conftest import Admin
from tests.dom0.conftest import Broker
from whonix_open.contract import Exit
from whonix_open.dom0.admin import profiles_edit
from whonix_open.dom0.admin.dvm_setup import MARKER, dvm_name
from whonix_open.dom0.admin.main import main
from whonix_open.sim import qubesd
from whonix_open.sim.qubes_objects import props_of

OFFLINE_DVM, TOR_DVM, TOR2_DVM = ("whonix-ws-18-offline-dvm", "whonix-ws-18-tor-dvm",
                                  "whonix-ws-18-tor2-dvm")
STOCK_DVM = "whonix-workstation-18-dvm"
MY_PROFILES = """\
# my profiles: a second gateway for unlinkable sessions
default_profile = "tor"

[profiles.tor2]
network = "tor"   # through the second gateway
gateway = "sys-whonix-2"

[limits]
per_qube = 3
"""
CHANGES = {"admin.vm.Create.AppVM", "admin.vm.property.Set", "admin.vm.property.Reset",
           "admin.vm.feature.Set", "admin.vm.feature.Remove", "admin.vm.tag.Set",
           "admin.vm.Remove", "admin.vm.Start", "admin.vm.Kill", "admin.vm.CreateDisposable"}


def system(admin: Admin) -> dict:
    """Every qube with every property (as qubesd computes it; not the uuid,
    which the simulation gives a qube when it is first read), its own
    features and tags: the state `undo` must give back."""
    st = copy.deepcopy(admin.sim.snapshot())
    return {name: {"props": {p: qubesd.prop_value(st, name, p)
                             for p in props_of(st, q) if p not in ("xid", "uuid")},
                   "features": q["features"], "tags": q["tags"],
                   "power_state": q["power_state"]}
            for name, q in st["qubes"].items()}


@pytest.fixture
def two_gw(make_admin) -> Admin:
    admin = make_admin("two-gateways")
    admin.config.write_text(MY_PROFILES)
    admin.sim.set_feature("dom0", "preload-dispvm-delay", "0")
    admin.check()  # every qube read once: uuids are fixed before `before`
    return admin


def changes_made(admin: Admin, since: int) -> list[dict]:
    return [c for c in admin.sim.calls()[since:] if c["method"] in CHANGES]


def open_file(admin: Admin, profile: str) -> tuple[list[dict], str]:
    """One file open with the real service executable: its Admin API calls
    and the disposable it used."""
    before = len(admin.sim.calls())
    r = Broker(admin.sim, admin.tmp).open_file(arg=profile)
    assert r.code == Exit.OK, r.err
    service = [s for s in admin.sim.services() if s["service"] == "qubes.OpenInVM"][-1]
    return admin.sim.calls()[before:], service["qube"]


def test_setup_puts_every_profile_on_the_fast_path(two_gw):
    before = system(two_gw)
    out = two_gw.run("setup")
    assert out.code == 0, out.err
    assert "profile offline: new DVM template whonix-ws-18-offline-dvm (netvm none)" in out.out
    assert f"profile tor2: new DVM template {TOR2_DVM} (netvm sys-whonix-2)" in out.out
    assert "memory: 6 preloaded disposables kept paused, about 2400 MB while idle" in out.out
    two_gw.sim.settle()  # qubesd preloads in the background
    qubes = two_gw.sim.qubes()
    for dvm, net, profile in ((OFFLINE_DVM, None, "offline"), (TOR_DVM, "sys-whonix", "tor"),
                              (TOR2_DVM, "sys-whonix-2", "tor2")):
        q = qubes[dvm]
        assert (q["klass"], q["template"], q["netvm"], q["template_for_dispvms"]) == \
            ("AppVM", "whonix-workstation-18", net, True)
        assert q["features"][MARKER] == profile and q["features"]["appmenus-dispvm"] == "1"
        assert q["features"]["preload-dispvm-max"] == "2" and "anon-vm" in q["tags"]
        assert q["default_dispvm"] == dvm
        assert len(two_gw.sim.preloads(dvm)) == 2
    # nothing that was there before changed (the stock DVM template included)
    after = system(two_gw)
    assert {n: after[n] for n in before} == before
    config = profiles_edit.parse(two_gw.config.read_text(), "profiles.toml")
    assert {p.name: p.dvm for p in config.profiles.values()} == \
        {"offline": OFFLINE_DVM, "tor": TOR_DVM, "tor2": TOR2_DVM}
    assert two_gw.config.read_text().startswith(MY_PROFILES.splitlines()[0])
    assert "gateway = \"sys-whonix-2\"\n" in two_gw.config.read_text()  # the rest kept


@pytest.mark.parametrize("profile, dvm", [("offline", OFFLINE_DVM), ("tor2", TOR2_DVM),
                                          ("tor", TOR_DVM)])
def test_after_setup_an_open_takes_a_preload_and_qubesd_refills(two_gw, profile, dvm):
    assert two_gw.run("setup").code == 0
    two_gw.sim.settle()
    ready = two_gw.sim.preloads(dvm)
    others = {d: two_gw.sim.preloads(d) for d in (OFFLINE_DVM, TOR_DVM, TOR2_DVM) if d != dvm}
    calls, disp = open_file(two_gw, profile)
    assert disp == ready[0]
    methods = [c["method"] for c in calls]
    assert "admin.vm.Start" not in methods and "admin.vm.Create.DispVM" not in methods
    assert methods.count("admin.vm.CreateDisposable") == 1
    assert len(calls) <= 12, methods
    # whonix-open killed only its own disposable; the rest of the queue and
    # the other queues are untouched, and qubesd refilled this one
    assert [c["dest"] for c in calls if c["method"] in ("admin.vm.Kill", "admin.vm.Remove")] \
        == [disp]
    two_gw.sim.settle()
    assert two_gw.sim.preloads(dvm)[:1] == ready[1:] and len(two_gw.sim.preloads(dvm)) == 2
    assert {d: two_gw.sim.preloads(d) for d in others} == others


def test_dry_run_changes_nothing_and_prints_every_change(two_gw):
    before, calls, text = system(two_gw), len(two_gw.sim.calls()), two_gw.config.read_text()
    out = two_gw.run("setup", "--dry-run")
    assert out.code == 0 and "dry run: nothing was changed" in out.out
    assert system(two_gw) == before and two_gw.config.read_text() == text
    assert changes_made(two_gw, calls) == []
    printed = [line.strip() for line in out.out.splitlines() if line.startswith("  ")]
    data = json.loads(two_gw.run("setup", "--dry-run", "--json").out)
    assert printed == [c["command"] for c in data["changes"]]
    assert data["dry_run"] and data["made"] == 0 and data["preloads_supported"]
    # what the dry run printed is exactly what setup then does
    calls = len(two_gw.sim.calls())
    assert two_gw.run("setup").code == 0
    made = [(c["method"], c["dest"], c["arg"]) for c in changes_made(two_gw, calls)]
    planned = [(c["call"], c["qube"], c["arg"]) for c in data["changes"] if c["call"]]
    assert [m for m in made if m[0] != "admin.vm.Start"] == [
        (m, "dom0" if m == "admin.vm.Create.AppVM" else q, a) for m, q, a in planned]


def test_a_second_setup_changes_nothing(two_gw):
    assert two_gw.run("setup").code == 0
    two_gw.sim.settle()
    before, calls, text = system(two_gw), len(two_gw.sim.calls()), two_gw.config.read_text()
    out = two_gw.run("setup")
    assert out.code == 0 and "nothing to change" in out.out, out.out
    assert changes_made(two_gw, calls) == [] and two_gw.config.read_text() == text
    two_gw.sim.settle()
    assert system(two_gw) == before


def test_undo_restores_the_system_and_the_file_exactly(two_gw):
    before, text = system(two_gw), two_gw.config.read_text()
    assert two_gw.run("setup").code == 0
    open_file(two_gw, "offline")  # in use for a while: a preload was taken and refilled
    two_gw.sim.settle()
    out = two_gw.run("setup", "--undo")
    assert out.code == 0, out.err
    assert f"qvm-remove {OFFLINE_DVM}" in out.out
    assert system(two_gw) == before
    assert two_gw.config.read_text() == text
    again = two_gw.run("setup", "--undo")
    assert again.code == 0 and "setup made no qubes here" in again.out


def test_undo_removes_a_file_setup_created(make_admin):
    admin = make_admin()
    assert not admin.config.exists()
    assert admin.run("setup").code == 0
    assert profiles_edit.CREATED in admin.config.read_text()
    assert admin.run("setup", "--undo").code == 0
    assert not admin.config.exists()


def test_a_pinned_dvm_line_is_replaced_and_given_back(make_admin):
    admin = make_admin("two-gateways")
    text = MY_PROFILES.replace('gateway = "sys-whonix-2"',
                               f'gateway = "sys-whonix-2"\ndvm = "{STOCK_DVM}"  # mine')
    admin.config.write_text(text)
    assert admin.run("setup", "--profile", "tor2").code == 0
    assert f'{profiles_edit.REPLACED}dvm = "{STOCK_DVM}"  # mine' in admin.config.read_text()
    assert admin.run("setup", "--undo").code == 0
    assert admin.config.read_text() == text


def test_undo_refuses_while_a_qube_uses_what_setup_made(two_gw):
    assert two_gw.run("setup", "--profile", "offline").code == 0
    two_gw.sim.set_property("anon-whonix", "default_dispvm", OFFLINE_DVM)
    two_gw.sim.settle()
    before, text = system(two_gw), two_gw.config.read_text()
    out = two_gw.run("setup", "--undo")
    assert out.code == 2
    assert out.err.strip() == (
        f"whonix-open-admin: cannot undo while other qubes use what setup made: "
        f"{OFFLINE_DVM} is default_dispvm of anon-whonix; nothing was changed")
    assert system(two_gw) == before and two_gw.config.read_text() == text
    two_gw.sim.set_property("anon-whonix", "default_dispvm", STOCK_DVM)
    two_gw.sim.set_property(OFFLINE_DVM, "power_state", "Running")  # someone started it
    before = system(two_gw)
    out = two_gw.run("setup", "--undo")
    assert out.code == 2 and out.err.strip() == (
        f"whonix-open-admin: cannot undo while {OFFLINE_DVM} is running (qvm-shutdown --wait "
        f"{OFFLINE_DVM}); nothing was changed")
    assert system(two_gw) == before and two_gw.config.read_text() == text


def test_r42_makes_the_templates_and_says_preloads_need_r43(make_admin):
    admin = make_admin("r4.2-two-gateways")
    admin.config.write_text(MY_PROFILES)
    before = system(admin)
    out = admin.run("setup")
    assert out.code == 0, out.err
    assert "preloads need Qubes R4.3" in out.out and "memory:" not in out.out
    qubes = admin.sim.qubes()
    # tor's own DVM template has its network: as fast as R4.2 gets, left alone
    assert TOR_DVM not in qubes and "preload-dispvm-max" not in qubes[OFFLINE_DVM]["features"]
    assert qubes[OFFLINE_DVM]["netvm"] is None and qubes[TOR2_DVM]["netvm"] == "sys-whonix-2"
    assert "profile tor: DVM template whonix-workstation-18-dvm (netvm sys-whonix) is on the " \
           "fast path already" in out.out
    # the broker creates and starts an offline disposable that never had a network
    calls, disp = open_file(admin, "offline")
    assert [c["dest"] for c in calls if c["method"] == "admin.vm.CreateDisposable"] == \
        [OFFLINE_DVM]
    assert [c["dest"] for c in calls if c["method"] == "admin.vm.Start"] == [disp]
    assert admin.run("setup").out.splitlines()[-1] == "nothing to change"
    assert admin.run("setup", "--undo").code == 0
    assert system(admin) == before


@pytest.mark.parametrize("args, message", [
    (["--profile", "nope"], "unknown profile nope (profiles: offline, tor, tor2)"),
    (["--profile", "tor2"], f"a qube named {TOR2_DVM} already exists and setup did not make "
                            f"it for profile tor2"),
])
def test_bad_input_is_a_sentence_and_changes_nothing(two_gw, args, message):
    two_gw.sim.add_qube(TOR2_DVM, klass="AppVM", template="debian-13")  # someone else's
    before, calls, text = system(two_gw), len(two_gw.sim.calls()), two_gw.config.read_text()
    out = two_gw.run("setup", *args)
    assert out.code == 2 and message in out.err and out.err.endswith("nothing was changed\n")
    assert "Traceback" not in out.err
    assert changes_made(two_gw, calls) == [] and system(two_gw) == before
    assert two_gw.config.read_text() == text


@pytest.mark.parametrize("value", ["x", "-1", "11", "2.5"])
def test_a_bad_number_of_preloads_is_refused(two_gw, value):
    err = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(err):
        main(["setup", "--preloads", value], env=two_gw.env())
    assert e.value.code == 2  # argparse's usage error, as the qvm-* tools give it
    assert f"argument --preloads: {value!r} is not a whole number from 0 to 10" \
        in err.getvalue()


def test_a_profiles_toml_setup_cannot_edit_is_refused(two_gw):
    text = '[profiles]\ntor2 = { network = "tor", gateway = "sys-whonix-2" }\n'
    two_gw.config.write_text(text)
    before = system(two_gw)
    out = two_gw.run("setup")
    assert out.code == 2 and "nothing was changed" in out.err
    assert system(two_gw) == before and two_gw.config.read_text() == text


def test_preloads_number_is_the_admins(two_gw):
    assert two_gw.run("setup", "--profile", "offline", "--preloads", "1").code == 0
    two_gw.sim.settle()
    assert len(two_gw.sim.preloads(OFFLINE_DVM)) == 1
    assert two_gw.run("setup", "--profile", "offline").out.splitlines()[-1] == \
        "nothing to change"  # an existing choice is kept without --preloads
    out = two_gw.run("setup", "--profile", "offline", "--preloads", "3", "--json")
    data = json.loads(out.out)
    assert [c["command"] for c in data["changes"]] == \
        [f"qvm-features {OFFLINE_DVM} preload-dispvm-max 3"]
    assert data["memory"] == {"preloads": 3, "mb": 1200}
    two_gw.sim.settle()
    assert len(two_gw.sim.preloads(OFFLINE_DVM)) == 3
    # none is a choice too: recorded, and kept by a later run
    assert two_gw.run("setup", "--profile", "tor2", "--preloads", "0").code == 0
    assert two_gw.sim.qubes()[TOR2_DVM]["features"]["preload-dispvm-max"] == "0"
    assert two_gw.run("setup", "--profile", "tor2").out.splitlines()[-1] == "nothing to change"


def test_check_names_the_setup_command_and_passes_after_it(make_admin):
    admin = make_admin("preload")  # tor has preloads; offline cannot use them
    out = admin.check()
    (warn,) = [f for f in out.json()["findings"] if f["level"] != "PASS"]
    assert warn["check"] == "fast-path" and warn["fix"] == [
        "whonix-open-admin setup --profile offline"]
    assert admin.run(*warn["fix"][0].split()[1:]).code == 0
    after = admin.check()
    assert after.code == 0 and [f for f in after.json()["findings"] if f["level"] != "PASS"] \
        == []
    fast = [f["message"] for f in after.json()["findings"] if f["check"] == "fast-path"]
    assert any(m.startswith(f"profile offline takes one of the 2 preloaded disposables of "
                            f"{OFFLINE_DVM}") for m in fast)


def test_the_automatic_choice_never_picks_a_template_setup_made(make_admin):
    """A caller without a Whonix default_dispvm: the tor profile's choice
    stays the stock DVM template when setup made others of the same version."""
    admin = make_admin()
    assert admin.run("setup", "--profile", "offline").code == 0
    r = Broker(admin.sim, admin.tmp).open_file(arg="tor", caller="personal")
    assert r.code == Exit.OK, r.err


def test_dvm_names_fit_qubes_limit():
    assert dvm_name("whonix-workstation-18", "offline") == OFFLINE_DVM
    long = dvm_name("whonix-workstation-18", "a" * 31)
    assert len(long) <= 31 and long.endswith("-dvm")


SETUP_HEADING = "\n## Every profile on the fast path: `whonix-open-admin setup`\n"


def test_the_admin_page_shows_the_real_output(make_admin):
    """docs/ADMIN.md's setup examples are this command's output on two-gateways
    with MY_PROFILES (the config path as on dom0; timings aside)."""
    from tests.admin.conftest import REPO

    page = (REPO / "docs" / "ADMIN.md").read_text()
    start = page.index(SETUP_HEADING) + len(SETUP_HEADING)
    section = page[start:page.index("\n## ", start)]
    admin = make_admin("two-gateways")
    admin.config.write_text(MY_PROFILES)

    def shown(*args: str) -> str:
        out = admin.run(*args)
        assert out.code == 0, out.err
        text = out.out.replace(str(admin.config), "/etc/whonix-open/profiles.toml")
        return "\n".join(line for line in [f"$ whonix-open-admin {' '.join(args)}",
                                           *text.splitlines()] if not line.startswith("done:"))

    def blocks() -> list[str]:
        parts = section.split("```")[1::2]
        return ["\n".join(line for line in p.split("\n", 1)[1].rstrip("\n").splitlines()
                          if not line.startswith("done:")) for p in parts]

    got = [shown("setup", "--dry-run")]
    shown("setup")
    got += [shown("setup"), admin.config.read_text().rstrip("\n"), shown("setup", "--undo")]
    assert [b for b in blocks() if b.startswith(("$ whonix-open-admin", "# my profiles"))] == got


def test_an_unwritable_profiles_toml_stops_setup_before_any_change(tmp_path):
    """As a user who may use qubesd but not write /etc (dom0's desktop user
    without sudo): refused before the first Admin API change. Run as
    `nobody` (root may write anything)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.admin.conftest import REPO
    from whonix_open.sim.harness import SimQubes

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.fail("this test switches to the user nobody: it needs root and setpriv")
    base = Path(tempfile.mkdtemp(prefix="whonix-open-setup-"))
    try:
        base.chmod(0o755)
        sim = SimQubes.create(base / "sim", "default")
        for path in (base / "sim", *(base / "sim").iterdir()):
            path.chmod(0o777 if path.is_dir() else 0o666)
        etc = base / "etc"
        etc.mkdir()
        (etc / "profiles.toml").write_text(MY_PROFILES.split("[profiles.tor2]")[0])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QREXEC_", "WHONIX_"))}
        env.update(sim.env(), WHONIX_OPEN_CONFIG=str(etc / "profiles.toml"),
                   HOME=str(base), PYTHONDONTWRITEBYTECODE="1")
        calls = len(sim.calls())
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, str(REPO / "packaging" / "whonix-open-admin"),
                            "setup"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr == (f"whonix-open-admin: {etc / 'profiles.toml'} cannot be written "
                            f"here (in dom0 setup runs as root: sudo whonix-open-admin "
                            f"setup); nothing was changed\n")
        assert [c for c in sim.calls()[calls:] if c["method"] in CHANGES] == []
        assert set(sim.qubes()) == set(SimQubes.create(base / "fresh").qubes())
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("scenario, message, fix", [
    ("default", "no DVM template keeps preloaded disposables: each open of offline, tor "
                "boots one (5-20 s); 'whonix-open-admin setup' gives every profile a "
                "preloaded DVM template of its network", ["whonix-open-admin setup"]),
    ("r4.2", "this qubesd has no preloaded disposables (R4.2): each open boots a "
             "disposable; preloads need R4.3", []),
])
def test_check_without_preloads_in_use_only_mentions_setup(make_admin, scenario, message, fix):
    out = make_admin(scenario).check()
    assert out.code == 0
    fast = [f for f in out.json()["findings"] if f["check"] == "fast-path"]
    assert [(f["level"], f["message"], f["fix"]) for f in fast] == [("PASS", message, fix)]
