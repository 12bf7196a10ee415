"""What `whonix-open-admin setup` changes, and what `setup --undo` takes back.

A profile is on the fast path when the broker may use CreateDisposable for it
- its DVM template's own netvm is the profile's network (DESIGN.md,
"Preloaded disposables") - and that DVM template keeps R4.3 preloads. For a
profile whose DVM template does not fit, setup makes one that does: a new
AppVM of the same Whonix-Workstation TemplateVM (qvm-create semantics, not
qvm-clone: see DESIGN.md, "Administration"), marked with the feature MARKER
= the profile's name, and pins the profile to it in profiles.toml. A profile
whose DVM template is on the fast path already is left alone; one whose DVM
template has its network but no preloads gets one of its own too, because
setup never changes a qube it did not make.

Everything is decided and checked before the first change (plan_setup,
plan_undo); a change is one Admin API call, listed with the qvm-* command
that does the same, so a dry run prints exactly what would happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from whonix_open.dom0.admin import profiles_edit
from whonix_open.dom0.backend import Backend, QubeInfo
from whonix_open.dom0.config import Config
from whonix_open.dom0.errors import Refusal
from whonix_open.dom0.resolve import SETUP_MARKER, make_plan

MARKER = SETUP_MARKER  # feature on each qube setup made: the profile it is for
PRELOAD_MAX = "preload-dispvm-max"
PRELOAD_LIST = "preload-dispvm"
DEFAULT_PRELOADS = 2
MAX_PRELOADS = 10
# Whonix's own DVM template settings copied to the new ones: the app menu of
# disposables (appmenus-dispvm) and which entries it shows (menu-items).
COPIED_FEATURES = ("appmenus-dispvm", "menu-items")
COPIED_TAGS = ("anon-vm",)
# qubesd of R4.3 (qubes-core-admin 4.3) brought preloaded disposables and, in
# the same release, the qube property `bootmode`. The Admin API has no version
# or capability query, and an unknown method is answered with an empty reply
# (indistinguishable from a refusal), so one admin.vm.property.List tells.
R43_PROPERTY = "bootmode"
# A caller without a default_dispvm: the profile's own choice (pinned, or the
# Whonix-Workstation DVM template of the highest os-version).
NEUTRAL_CALLER = QubeInfo(name="dom0", klass="AdminVM")
PRELOADS_GONE_TIMEOUT = 60.0


class SetupError(Exception):
    """Setup cannot go ahead; nothing was changed. The message says why."""


class Change(NamedTuple):
    qube: str
    call: str  # the Admin API method
    arg: str = ""
    value: str | None = None
    command: str = ""  # the same change as an administrator would make it

    def to_json(self) -> dict:
        return {"qube": self.qube, "call": self.call, "arg": self.arg, "value": self.value,
                "command": self.command}


class ProfileSetup(NamedTuple):
    profile: str
    network: str  # a gateway's name or "offline"
    dvm: str  # the DVM template the profile uses after setup
    # "create"; "complete" or "ready" (setup's; changed / nothing to do); "fits"
    # (the profile's own DVM template is on the fast path already: left alone)
    action: str
    preloads: int  # preload-dispvm-max after setup
    memory: int  # MB each preloaded disposable starts with

    def to_json(self) -> dict:
        return dict(self._asdict())


class Plan(NamedTuple):
    preloads_supported: bool
    profiles: list[ProfileSetup]
    changes: list[Change]
    config_path: str
    config_text: str | None  # what profiles.toml becomes
    config_changed: bool


def preloads_supported(backend: Backend, qube: str) -> bool:
    """Does this qubesd preload disposables (R4.3 or later)? See R43_PROPERTY."""
    return R43_PROPERTY in backend.property_names(qube)


def dvm_name(template: str, profile: str) -> str:
    """whonix-workstation-18 + offline -> whonix-ws-18-offline-dvm: Whonix's
    own rule for a DVM template's name ("-dvm"), within Qubes' 31 characters."""
    base = template.replace("whonix-workstation", "whonix-ws")
    name = f"{base}-{profile}"
    return (name if len(name) <= 27 else name[:27].rstrip("-._")) + "-dvm"


EMPTY = "''"  # an empty value, as a shell argument


def _set_prop(qube: str, prop: str, value: str | None) -> Change:
    shown = EMPTY if value is None else value
    return Change(qube, "admin.vm.property.Set", prop, value, f"qvm-prefs {qube} {prop} {shown}")


def _set_feature(qube: str, key: str, value: str) -> Change:
    return Change(qube, "admin.vm.feature.Set", key, value,
                  f"qvm-features {qube} {key} {value or EMPTY}")


def _profile_setup(backend: Backend, config: Config, name: str, preloads: int | None,
                   supported: bool, classes: dict[str, str]) -> tuple[ProfileSetup, list[Change]]:
    profile = config.profiles[name]
    try:
        plan = make_plan(backend, NEUTRAL_CALLER, profile)
    except Refusal as e:
        raise SetupError(f"profile {name} does not resolve ({e.reason}); "
                         f"'whonix-open-admin check' says how to fix it") from None
    source = backend.info(plan.dvm)
    wanted = (DEFAULT_PRELOADS if preloads is None else preloads) if supported else 0
    if backend.feature(plan.dvm, MARKER) != name:
        have = _int(backend.feature(plan.dvm, PRELOAD_MAX))
        if plan.fits_dvm and (have or not supported):
            # not setup's, and on the fast path already (R4.2: as fast as it gets)
            return ProfileSetup(name, plan.network, plan.dvm, "fits", have if supported else 0,
                                source.memory), []
        if not source.template or classes.get(source.template) != "TemplateVM":
            raise SetupError(f"profile {name}: DVM template {plan.dvm} is not based on a "
                             f"TemplateVM; pin profiles.{name}.dvm to one that is")
        target = dvm_name(source.template, name)
    else:
        target = plan.dvm
    changes: list[Change] = []
    if target not in classes:
        action = "create"
        changes.append(Change("dom0", "admin.vm.Create.AppVM", source.template,
                              f"name={target} label={source.label or 'red'}",
                              f"qvm-create --class AppVM --template {source.template} "
                              f"--label {source.label or 'red'} {target}"))
        current = None
        features = {}
        tags: frozenset[str] = frozenset()
    else:
        if backend.feature(target, MARKER) != name:
            raise SetupError(f"a qube named {target} already exists and setup did not make "
                             f"it for profile {name}: rename or remove it, or pin "
                             f"profiles.{name}.dvm to a DVM template of network "
                             f"{plan.network} yourself")
        current = backend.info(target)
        features = {k: backend.feature(target, k) for k in (*COPIED_FEATURES, PRELOAD_MAX)}
        tags = backend.tags(target)
    if current is None:
        changes.append(_set_feature(target, MARKER, name))
    # the netvm first: a new AppVM has the global default_netvm (clearnet)
    # and must never be a DVM template with it
    if current is None or current.netvm != plan.gateway:
        changes.append(_set_prop(target, "netvm", plan.gateway))
    if current is None or not current.template_for_dispvms:
        changes.append(_set_prop(target, "template_for_dispvms", "True"))
    if current is None or current.default_dispvm != target:
        # its disposables' nested @dispvm stays on the same network
        changes.append(_set_prop(target, "default_dispvm", target))
    if plan.dvm != target:  # Whonix's settings of the DVM template it replaces
        source_tags = backend.tags(plan.dvm)
        changes += [Change(target, "admin.vm.tag.Set", t, None, f"qvm-tags {target} add {t}")
                    for t in COPIED_TAGS if t in source_tags and t not in tags]
        for key in COPIED_FEATURES:
            value = backend.feature(plan.dvm, key)
            if value is not None and features.get(key) != value:
                changes.append(_set_feature(target, key, value))
    # the admin's number is recorded (0 too); without --preloads it is kept
    recorded = features.get(PRELOAD_MAX)
    if supported and (recorded is None or (preloads is not None and _int(recorded) != wanted)):
        changes.append(_set_feature(target, PRELOAD_MAX, str(wanted)))
    else:
        wanted = _int(recorded) if supported else 0
    if current is not None:
        action = "complete" if changes else "ready"
    return ProfileSetup(name, plan.network, target, action, wanted,
                        current.memory if current else source.memory), changes


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or "0"))
    except ValueError:
        return 0


def plan_setup(backend: Backend, config: Config, config_path: str,
               profiles: Sequence[str] | None, preloads: int | None) -> Plan:
    """Every change setup would make, decided before any is made."""
    unknown = [p for p in profiles or () if p not in config.profiles]
    if unknown:
        raise SetupError(f"unknown profile {', '.join(unknown)} (profiles: "
                         f"{', '.join(sorted(config.profiles))})")
    names = list(dict.fromkeys(profiles)) if profiles else sorted(config.profiles)
    classes = backend.qube_classes()
    supported = False
    done: list[ProfileSetup] = []
    changes: list[Change] = []
    for name in names:
        if not done:  # asked once, of the first profile's DVM template
            try:
                dvm = make_plan(backend, NEUTRAL_CALLER, config.profiles[name]).dvm
                supported = preloads_supported(backend, dvm)
            except Refusal:
                pass  # _profile_setup says why
        setup, more = _profile_setup(backend, config, name, preloads, supported, classes)
        shared = [s.profile for s in done if s.dvm == setup.dvm and s.action != "fits"]
        if shared and setup.action != "fits":
            raise SetupError(f"profiles {shared[0]} and {name} would share the DVM template "
                             f"{setup.dvm}; pin one of them in {config_path}")
        done.append(setup)
        changes += more
    text = profiles_edit.read(config_path)
    pins = {s.profile: s.dvm for s in done
            if s.action != "fits" and config.profiles[s.profile].dvm != s.dvm}
    new_text = profiles_edit.pin(text, pins, config_path) if pins else text
    if pins:
        profiles_edit.check_writable(config_path)
    for profile, dvm in pins.items():
        changes.append(Change("", "", "", None,
                              f'edit {config_path}: [profiles.{profile}] dvm = "{dvm}"'))
    return Plan(supported, done, changes, config_path, new_text, bool(pins))


class UndoPlan(NamedTuple):
    qubes: list[str]
    changes: list[Change]
    config_path: str
    config_text: str | None
    config_changed: bool


def plan_undo(backend: Backend, config_path: str) -> UndoPlan:
    """Remove the qubes setup made (MARKER) and its lines in profiles.toml;
    refused while anything else uses one of those qubes."""
    classes = backend.qube_classes()
    ours = sorted(n for n, k in classes.items()
                  if k == "AppVM" and backend.feature(n, MARKER) is not None)
    text = profiles_edit.read(config_path)
    new_text = profiles_edit.unpin(text)
    left = profiles_edit.parse(new_text, config_path)
    named = sorted(f"profiles.{p.name}.dvm" for p in left.profiles.values() if p.dvm in ours)
    if named:
        raise SetupError(f"{config_path}: {', '.join(named)} names a qube setup made, in a "
                         f"line setup did not write: edit it first")
    preloads = {n: set((backend.feature(n, PRELOAD_LIST) or "").split()) for n in ours}
    users = []
    for name, klass in sorted(classes.items()):
        if name in ours or klass == "AdminVM" or any(name in p for p in preloads.values()):
            continue
        info = backend.info(name)
        for prop in ("template", "netvm", "default_dispvm"):
            if getattr(info, prop) in ours:
                what = "an open disposable" if klass == "DispVM" else f"{prop} of {name}"
                users.append(f"{getattr(info, prop)} is {what}"
                             + (f" ({name})" if klass == "DispVM" else ""))
    running = [n for n in ours if backend.power_state(n) != "Halted"]
    if users or running:
        raise SetupError("cannot undo while " + "; ".join(
            ([f"other qubes use what setup made: {'; '.join(users)}"] if users else [])
            + [f"{n} is running (qvm-shutdown --wait {n})" for n in running]))
    changes = []
    if text != new_text:
        profiles_edit.check_writable(config_path)
        changes.append(Change("", "", "", None, f"edit {config_path}: remove the lines "
                              f"setup wrote"))
    for name in ours:
        if backend.feature(name, PRELOAD_MAX) is not None:
            # value: the preloads qubesd then removes (waited for)
            changes.append(Change(name, "admin.vm.feature.Remove", PRELOAD_MAX,
                                  " ".join(sorted(preloads[name])),
                                  f"qvm-features --unset {name} {PRELOAD_MAX}"))
        changes.append(Change(name, "admin.vm.Remove", "", None, f"qvm-remove {name}"))
    return UndoPlan(ours, changes, config_path, new_text, text != new_text)


def apply(backend: Backend, changes: Sequence[Change], config_path: str,
          config_text: str | None, report: Callable[[Change], None]) -> None:
    """Make the changes in order; the profiles.toml edit at its place in the
    list (after the qubes for setup, before them for undo). Raises
    BackendError or profiles_edit.EditError at the first failure."""
    for change in changes:
        if not change.call:
            profiles_edit.write(config_path, config_text)
        elif change.call == "admin.vm.Create.AppVM":
            params = dict(item.split("=", 1) for item in (change.value or "").split())
            backend.create_appvm(change.arg, params["name"], params["label"])
        elif change.call == "admin.vm.property.Set":
            backend.set_property(change.qube, change.arg, change.value)
        elif change.call == "admin.vm.feature.Set":
            backend.set_feature(change.qube, change.arg, change.value or "")
        elif change.call == "admin.vm.tag.Set":
            backend.add_tag(change.qube, change.arg)
        elif change.call == "admin.vm.feature.Remove":
            backend.remove_feature(change.qube, change.arg)
            _wait_gone(backend, set((change.value or "").split()))
        elif change.call == "admin.vm.Remove":
            backend.remove(change.qube)
        else:  # a programming error
            raise ValueError(f"unknown change {change.call}")
        report(change)


def _wait_gone(backend: Backend, names: set[str]) -> None:
    """qubesd removes a DVM template's preloads in a task after its
    preload-dispvm-max is removed: wait until none of them is listed."""
    deadline = time.monotonic() + PRELOADS_GONE_TIMEOUT
    while names and names & set(backend.qube_classes()) and time.monotonic() < deadline:
        time.sleep(0.2)
