"""What every check looks at: one inventory, the profiles, the session
records and the policy directories, read once per run."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from whonix_open.contract import Exit
from whonix_open.dom0.admin.dvm_setup import preloads_supported
from whonix_open.dom0.admin.inventory import Inventory, Qube, Source
from whonix_open.dom0.admin.readcache import ReadCache
from whonix_open.dom0.admission import OPT_IN_FEATURE, Caller, would_refuse
from whonix_open.dom0.backend import Backend
from whonix_open.dom0.config import CONFIG_ENV, DEFAULT_PATH, Config, ConfigError, load_config

PREFERRED_GATEWAY = "sys-whonix"


@dataclass
class Context:
    source: Source
    inventory: Inventory
    env: Mapping[str, str]
    run_dir: str
    policy_dirs: Sequence[str] | None  # None: qrexec's own
    config: Config | None = None
    config_error: str | None = None
    _plans: dict = field(default_factory=dict)
    _reads: ReadCache | None = None

    @classmethod
    def load(cls, source: Source, env: Mapping[str, str], run_dir: str,
             policy_dirs: Sequence[str] | None) -> Context:
        ctx = cls(source=source, inventory=source.inventory(), env=env, run_dir=run_dir,
                  policy_dirs=policy_dirs)
        try:
            ctx.config = load_config(env)
        except ConfigError as e:
            ctx.config_error = str(e)
        return ctx

    @property
    def backend(self) -> Backend:
        """The broker's backend, each read made once per run (readcache.py)."""
        if self._reads is None:
            self._reads = ReadCache(self.source.backend)
        return self._reads  # type: ignore[return-value]

    @functools.cached_property
    def global_default_dispvm(self) -> str | None:
        """Read only when needed (one admin.property.Get)."""
        return self.source.global_default_dispvm()

    @functools.cached_property
    def preloads_supported(self) -> bool:
        """R4.3 or later (one admin.vm.property.List, see dvm_setup)."""
        dvms = self.ws_dvms()
        return bool(dvms) and preloads_supported(self.backend, dvms[0].name)

    @property
    def config_path(self) -> str:
        return self.env.get(CONFIG_ENV, DEFAULT_PATH)

    def gateways(self) -> list[str]:
        """Whonix-Gateway qubes that can be a netvm, sys-whonix first."""
        names = sorted(q.name for q in self.inventory.values()
                       if q.gw and q.klass not in ("TemplateVM", "AdminVM"))
        return sorted(names, key=lambda n: n != PREFERRED_GATEWAY)

    def fits_tor_or_none(self, netvm: str | None) -> bool:
        """A netvm a Whonix-Workstation may have: a Whonix-Gateway, or none."""
        return netvm is None or (netvm in self.inventory and self.inventory[netvm].gw)

    def ws_dvms(self) -> list[Qube]:
        return [q for q in sorted(self.inventory.values()) if q.is_ws_dvm]

    def broker_refuses(self, service: str, argument: str, qube: str) -> Exit | None:
        """The code the broker refuses SERVICE+ARGUMENT from *qube* with before
        it creates anything (e.g. 79: no netvm), or None - the broker's own
        admission code, on the inventory (no Admin API call). *argument* is
        in policy spelling ("+tor")."""
        q = self.inventory[qube]
        caller = Caller(q.name, q.klass, q.netvm, q.tags, q.features.get(OPT_IN_FEATURE))
        return would_refuse(service, argument.removeprefix("+"), caller, self.env)

    def gateway_fix(self, qube: str, prop: str = "netvm") -> str:
        gws = self.gateways()
        value = gws[0] if gws else "''"  # '' = none
        return f"qvm-prefs {qube} {prop} {value}"
