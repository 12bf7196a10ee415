"""Fake `qubesdb` client module (the QubesDB C extension qubesd uses to
write a started qube's configuration: qubes/vm/qubesvm.py untrusted_qdb,
create_qdb_entries; qubes/vm/__init__.py start_qdb_watch). Values are kept
in memory per qube; a watch never fires (nothing inside the qube writes)."""

from __future__ import annotations

import contextlib
import os

_DBS: dict[str, dict[str, bytes]] = {}


class Error(Exception):
    pass


class DisconnectedError(Error):
    pass


class QubesDB:
    def __init__(self, name: str = "dom0") -> None:
        self._db = _DBS.setdefault(name, {})
        self._r, self._w = os.pipe()

    def write(self, path: str, value) -> None:
        self._db[path] = value if isinstance(value, bytes) else str(value).encode()

    def read(self, path: str) -> bytes | None:
        return self._db.get(path)

    def rm(self, path: str) -> None:
        for key in [k for k in self._db if k == path or (path.endswith("/")
                                                          and k.startswith(path))]:
            del self._db[key]

    def list(self, prefix: str = "/") -> list[str]:
        return sorted(k for k in self._db if k.startswith(prefix))

    def multiread(self, prefix: str = "/") -> dict[str, bytes]:
        return {k: v for k, v in self._db.items() if k.startswith(prefix)}

    def watch(self, path: str) -> None:
        pass

    def unwatch(self, path: str) -> None:
        pass

    def watch_fd(self) -> int:
        return self._r

    def read_watch(self) -> str | None:
        return None

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
