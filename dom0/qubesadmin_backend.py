"""The real dom0 backend: the only module that imports `qubesadmin`.

qubesadmin is a dom0 system package (not on PyPI); it is imported when this
backend is created, never at module import, so the rest of the broker and
its tests run without it.

Call counts (each method's Admin API calls, as seen at qubesd's socket):
Properties, the class and the power state are read as reply text straight
through `app.qubesd_call` (one admin.vm.property.GetAll per `info()`, whose
stateless `klass` and `xid` carry class and "running"; one
admin.vm.CurrentState per `power_state()`): qubesadmin's own `vm.klass` is
one more admin.vm.List per object, `get_power_state()` answers "NA" instead
of raising for a missing qube or a refused call, and iterating `app.domains`
asks the class of every cached object - for a `dom0` object (reached through
guivm/audiovm) with admin.vm.List on dom0, which lists every qube and fails
qubesadmin's own assertion (qubesadmin/vm/__init__.py `klass`).

WHONIX_OPEN_QUBESD_SOCKET (tests only; unset on dom0) points qubesadmin's
QubesLocal at another qubesd socket, WHONIX_OPEN_QREXEC_CLIENT at another
qrexec-client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from whonix_open.dom0.backend import (
    BackendError,
    NoSuchQube,
    NotRunning,
    QubeInfo,
    QubesdUnreachable,
    Relay,
    parse_get_all,
    qube_info,
)

WATCH_READY_TIMEOUT = 10.0
QUBESD_SOCKET_ENV = "WHONIX_OPEN_QUBESD_SOCKET"
QREXEC_CLIENT_ENV = "WHONIX_OPEN_QREXEC_CLIENT"
NETVM_EVENTS = ("property-set:netvm", "property-reset:netvm", "property-del:netvm")


class QubesadminBackend:
    def __init__(self, app: Any = None, env: Mapping[str, str] | None = None) -> None:
        import qubesadmin
        import qubesadmin.config
        import qubesadmin.exc

        env = os.environ if env is None else env
        self._exc = qubesadmin.exc
        # qubesadmin >= 4.3 has PermissionDenied (qubesd's refusal, not a
        # QubesException); 4.2.x raises QubesException for it.
        self._admin_errors: tuple[type[BaseException], ...] = tuple(
            c for c in (qubesadmin.exc.QubesException,
                        getattr(qubesadmin.exc, "PermissionDenied", None)) if c is not None)
        self._calls = 0
        self._qrexec_client = env.get(QREXEC_CLIENT_ENV) or qubesadmin.config.QREXEC_CLIENT
        with self._translate(0):
            if app is None and env.get(QUBESD_SOCKET_ENV):
                import qubesadmin.app

                # process-wide: QubesLocal and the events reader read it there
                qubesadmin.config.QUBESD_SOCKET = env[QUBESD_SOCKET_ENV]
                app = qubesadmin.app.QubesLocal()
            self.app = app if app is not None else qubesadmin.Qubes()
        self.app.cache_enabled = True

    @contextlib.contextmanager
    def _translate(self, calls: int = 1) -> Iterator[None]:
        """qubesadmin's exceptions -> the backend's."""
        exc = self._exc
        self._calls += calls
        try:
            yield
        except exc.QubesVMNotFoundError as e:
            raise NoSuchQube(str(e)) from None
        except exc.QubesVMNotStartedError as e:  # includes QubesVMNotRunningError
            raise NotRunning(str(e)) from None
        except (exc.QubesDaemonCommunicationError, ConnectionError, FileNotFoundError) as e:
            # no socket, refused, empty reply (qubesd failed or is going away)
            raise QubesdUnreachable(str(e)) from None
        except self._admin_errors as e:
            raise BackendError(f"{type(e).__name__}: {e}") from None
        except (AssertionError, ValueError, UnicodeDecodeError) as e:
            # qubesadmin's ProtocolError is an AssertionError; a reply we
            # cannot parse is a failed call, never a value
            raise BackendError(f"unexpected reply from qubesd: {type(e).__name__}") from None

    @property
    def calls(self) -> int:
        return self._calls

    def _vm(self, name: str) -> Any:
        # get_blind: no admin.vm.List round trip just to build the object.
        return self.app.domains.get_blind(name)

    def _text(self, dest: str, method: str, arg: str | None = None,
              payload: bytes | None = None) -> str:
        return self.app.qubesd_call(dest, method, arg, payload).decode("ascii")

    def qube_classes(self) -> dict[str, str]:
        with self._translate():
            return {name: fields["class"]
                    for name, fields in map(_list_line, self._text("dom0", "admin.vm.List")
                                            .splitlines())}

    def info(self, name: str) -> QubeInfo:
        with self._translate():
            # The reply text itself: qubesadmin's `vm.klass` would cost an
            # admin.vm.List more, and `klass` and `xid` are in GetAll.
            return qube_info(name, parse_get_all(self._text(name, "admin.vm.property.GetAll")))

    def feature_with_template(self, name: str, key: str) -> str | None:
        with self._translate():
            return self._vm(name).features.check_with_template(key, None)

    def feature(self, name: str, key: str) -> str | None:
        with self._translate():
            return self._vm(name).features.get(key, None)

    def set_feature(self, name: str, key: str, value: str) -> None:
        with self._translate():
            self._vm(name).features[key] = value

    def tags(self, name: str) -> frozenset[str]:
        with self._translate():
            return frozenset(self._vm(name).tags)

    def create_disposable(self, dvm: str) -> str:
        with self._translate():
            # The Admin API call itself: qubesadmin's DispVM wrapper would add
            # an admin.vm.List for the class on first use.
            return self._text(dvm, "admin.vm.CreateDisposable")

    def create_dispvm(self, dvm: str, name: str, label: str) -> None:
        with self._translate():
            # Not app.add_new_vm: it lists all qubes afterwards (and iterates
            # the cached objects, see the module docstring).
            self._text("dom0", "admin.vm.Create.DispVM", dvm,
                       f"name={name} label={label}".encode("ascii"))

    def set_property(self, name: str, key: str, value: str | None) -> None:
        with self._translate():
            setattr(self._vm(name), key, value)  # None is sent as '' = none

    def start(self, name: str) -> None:
        with self._translate():
            self._vm(name).start()

    def power_state(self, name: str) -> str:
        with self._translate():
            fields = dict(item.split("=", 1)
                          for item in self._text(name, "admin.vm.CurrentState").split())
            return fields["power_state"]

    def run_service(self, name: str, service: str, *, stdin: int | IO[bytes],
                    stdout: int | IO[bytes], connect_timeout: int) -> Relay:
        """dom0's qrexec-client, as qubesadmin's run_service builds it for a
        qube, without its autostart/is_running Admin API call: qrexec-client
        connects only to a running qube's qrexec-daemon and never starts one."""
        try:
            return subprocess.Popen(
                [self._qrexec_client, "-d", name, "-w", str(int(connect_timeout)),
                 f"DEFAULT:QUBESRPC {service}{'' if '+' in service else '+'} dom0"],
                stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL)
        except OSError as e:
            raise BackendError(f"cannot run {self._qrexec_client}: {e.strerror}") from None

    def kill(self, name: str) -> None:
        with self._translate():
            self._vm(name).kill()

    def remove(self, name: str) -> None:
        with self._translate():
            del self.app.domains[name]

    def create_appvm(self, template: str, name: str, label: str) -> None:
        with self._translate():
            # qvm-create's call, not its app.add_new_vm: that then lists all
            # qubes and asks the class of every cached object - of a `dom0`
            # one with admin.vm.List on dom0, failing qubesadmin's own
            # assertion (see the module docstring).
            self._text("dom0", "admin.vm.Create.AppVM", template,
                       f"name={name} label={label}".encode("ascii"))

    def remove_feature(self, name: str, key: str) -> None:
        with self._translate():
            del self._vm(name).features[key]

    def property_names(self, name: str) -> frozenset[str]:
        with self._translate():
            return frozenset(self._vm(name).property_list())

    def add_tag(self, name: str, tag: str) -> None:
        with self._translate():
            self._vm(name).tags.add(tag)

    def watch_netvm(self, name: str,
                    on_change: Callable[[str | None], None]) -> Callable[[], None]:
        """admin.Events for this qube, in a thread with its own event loop.
        Ready once qubesd's `connection-established` arrives; if the stream
        ends or fails before stop(), that is reported as None (unknown)."""
        import qubesadmin.events

        self._calls += 1
        settled = threading.Event()  # the stream came up, or ended first
        came_up: list[bool] = []
        stopped = threading.Event()
        loop = asyncio.new_event_loop()
        dispatcher = qubesadmin.events.EventsDispatcher(self.app)

        def handler(subject: Any, event: str, **kwargs: Any) -> None:
            if event == "connection-established":  # qubesd sends it first
                came_up.append(True)
                settled.set()
            elif str(subject) == name:
                on_change(netvm_value(event, kwargs))

        for event in (*NETVM_EVENTS, "connection-established"):
            dispatcher.add_handler(event, handler)
        task: list[asyncio.Task] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            task.append(loop.create_task(
                dispatcher.listen_for_events(vm=self._vm(name), reconnect=False)))
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task[0])
            if not stopped.is_set():
                on_change(None)  # the watch broke: nobody can vouch for the netvm now
            settled.set()

        thread = threading.Thread(target=run, name=f"netvm-watch-{name}", daemon=True)
        thread.start()

        def stop() -> None:
            stopped.set()
            if task:
                loop.call_soon_threadsafe(task[0].cancel)
            thread.join(timeout=5)

        settled.wait(WATCH_READY_TIMEOUT)
        if not came_up:
            stop()
            raise BackendError("the admin.Events stream did not come up")
        return stop


def _list_line(line: str) -> tuple[str, dict[str, str]]:
    """One admin.vm.List line: 'NAME class=C state=S uuid=U' (qubes/api/admin.py)."""
    name, _, rest = line.partition(" ")
    return name, dict(item.split("=", 1) for item in rest.split())


def netvm_value(event: str, kwargs: Mapping[str, Any]) -> str | None:
    """The new netvm of a property-set:netvm ('' for none: qubesd sends None
    as the text 'None'); None when the value is unknown (reset, del)."""
    if event != "property-set:netvm":
        return None
    value = str(kwargs.get("newvalue", ""))
    return "" if value in ("", "None") else value
