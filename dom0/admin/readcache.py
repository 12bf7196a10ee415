"""A read-through cache over the broker's Backend for one admin run.

`check` resolves every profile for every group of callers with the broker's
own `make_plan`, which reads the same DVM templates and gateways again for
each of them (and `_discover_dvm` every AppVM). One run is one snapshot of the
system, so each read is made once: the Admin API calls of `check` grow with
the number of qubes, not with qubes x callers x profiles (issue 15, 6).
Writes (reap's kill/remove) go straight through."""

from __future__ import annotations

from typing import Any

from whonix_open.dom0.backend import Backend, BackendError

_CACHED = ("qube_classes", "info", "feature_with_template", "feature", "tags")


class ReadCache:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._memo: dict[tuple, Any] = {}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._backend, name)
        if name not in _CACHED:
            return target

        def cached(*args: Any) -> Any:
            key = (name, *args)
            if key not in self._memo:
                try:
                    self._memo[key] = (True, target(*args))
                except BackendError as e:  # NoSuchQube too: the same answer again
                    self._memo[key] = (False, e)
            ok, value = self._memo[key]
            if not ok:
                raise value
            return value

        return cached
