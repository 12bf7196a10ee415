"""Which backend a process talks to (dom0/backend.py is the interface).

- the real dom0: `whonix_open.dom0.qubesadmin_backend`, through
  `qubesadmin.Qubes()`;
- the simulated Qubes of the tests and the demo, which is not part of the
  broker: it offers itself as an entry point in group `whonix_open.backends`
  (setup.py; the dom0 install ships neither it nor the entry point), or a
  process injects one with `use_backend()` - as qubesadmin's tools take an
  injected `app`. `connect()` never imports it by name.

The backend is chosen explicitly by `connect()`: WHONIX_OPEN_BACKEND unset or
'qubesadmin' is the real dom0; any other value must name an offered backend,
never a fallback when qubesadmin is missing. This module sits above both the
interface and the implementations, so they need not import each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from whonix_open.dom0.backend import Backend, BackendError

BACKEND_ENV = "WHONIX_OPEN_BACKEND"
ENTRY_POINTS = "whonix_open.backends"

_registered: dict[str, Callable[[Mapping[str, str]], Backend]] = {}


def use_backend(choice: str, factory: Callable[[Mapping[str, str]], Backend]) -> None:
    """Inject a backend that WHONIX_OPEN_BACKEND=*choice* selects in this
    process (a test or a tool that runs the broker in-process)."""
    _registered[choice] = factory


def connect(env: Mapping[str, str] | None = None) -> Backend:
    """The backend named by WHONIX_OPEN_BACKEND: unset or 'qubesadmin' for the
    real dom0, else one injected with use_backend() or offered as an entry
    point. Anything else is an error."""
    env = os.environ if env is None else env
    choice = env.get(BACKEND_ENV, "qubesadmin")
    if choice == "qubesadmin":
        from whonix_open.dom0.qubesadmin_backend import QubesadminBackend

        return QubesadminBackend()
    factory = _registered.get(choice)
    if factory is None:
        from importlib.metadata import entry_points

        found = entry_points(group=ENTRY_POINTS, name=choice)
        if not found:
            raise BackendError(f"unknown {BACKEND_ENV}={choice!r}")
        factory = next(iter(found)).load()
    return factory(env)
