"""The real dom0 backend: the only module that imports `qubesadmin`.

qubesadmin is a dom0 system package (not on PyPI); it is imported when this
backend is created, never at module import, so the rest of the broker and
its tests run without it.

`app.cache_enabled` makes the first property read of a qube one
admin.vm.property.GetAll. qubesadmin then also keeps a qube object's power
state (and class) until an event updates it (qubesadmin/vm/__init__.py
get_power_state), so `info()`, `power_state()` and `run_service()` (whose
autostart=False check reads the power state) each use a new object: every
`info()` is exactly one fresh GetAll, every power state one fresh CurrentState.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

from whonix_open.dom0.backend import (
    BackendError,
    NoSuchQube,
    NotRunning,
    QubeInfo,
    QubesdUnreachable,
    Relay,
)

WATCH_READY_TIMEOUT = 10.0
NETVM_EVENTS = ("property-set:netvm", "property-reset:netvm", "property-del:netvm")


def _name(value: Any) -> str | None:  # value: a qubesadmin VM or None
    return None if value is None else str(value)


def _prop(vm: Any, name: str, default: Any, unreadable: type[Exception]) -> Any:
    """A property the qube may lack (`template` of a TemplateVM, ...) reads
    as *default*. One that could not be read is an error, not a default:
    qubesadmin's QubesPropertyAccessError is an AttributeError too, and a
    netvm defaulting to None would read as "offline"."""
    try:
        return getattr(vm, name)
    except unreadable:
        raise
    except AttributeError:
        return default


class QubesadminBackend:
    def __init__(self, app: Any = None) -> None:
        import qubesadmin
        import qubesadmin.exc

        self._exc = qubesadmin.exc
        self._calls = 0
        with self._translate():
            self.app = app if app is not None else qubesadmin.Qubes()
        self.app.cache_enabled = True

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        """qubesadmin's exceptions -> the backend's."""
        exc = self._exc
        self._calls += 1
        try:
            yield
        except exc.QubesVMNotFoundError as e:
            raise NoSuchQube(str(e)) from None
        except exc.QubesVMNotStartedError as e:  # includes QubesVMNotRunningError
            raise NotRunning(str(e)) from None
        except (exc.QubesDaemonNoResponseError,
                getattr(exc, "QubesDaemonCommunicationError", exc.QubesDaemonNoResponseError),
                ConnectionError, FileNotFoundError) as e:
            # qubesd's socket missing or refusing: QubesDaemonCommunicationError
            raise QubesdUnreachable(str(e)) from None
        except exc.QubesException as e:
            raise BackendError(f"{type(e).__name__}: {e}") from None

    @property
    def calls(self) -> int:
        return self._calls

    def _vm(self, name: str, *, fresh: bool = False) -> Any:
        # get_blind: no admin.vm.List round trip just to build the object.
        if fresh:  # forget the cached object: no stale properties or power state
            self.app.domains.clear_cache(invalidate_name=name)
        return self.app.domains.get_blind(name)

    def qube_classes(self) -> dict[str, str]:
        with self._translate():
            self.app.domains.clear_cache()
            return {vm.name: vm.klass for vm in self.app.domains}

    def info(self, name: str) -> QubeInfo:
        with self._translate():
            vm = self._vm(name, fresh=True)
            klass = vm.klass

            def prop(key: str, default: Any) -> Any:
                return _prop(vm, key, default, self._exc.QubesPropertyAccessError)

            return QubeInfo(
                name=name,
                klass=klass,
                template=_name(prop("template", None)),
                netvm=_name(prop("netvm", None)),
                default_dispvm=_name(prop("default_dispvm", None)),
                template_for_dispvms=bool(prop("template_for_dispvms", False)),
                auto_cleanup=bool(prop("auto_cleanup", False)),
                qrexec_timeout=int(prop("qrexec_timeout", 60)),
            )

    def feature_with_template(self, name: str, key: str) -> str | None:
        with self._translate():
            return self._vm(name).features.check_with_template(key, None)

    def feature(self, name: str, key: str) -> str | None:
        with self._translate():
            return self._vm(name).features.get(key, None)

    def set_feature(self, name: str, key: str, value: str) -> None:
        with self._translate():
            self._vm(name).features[key] = value

    def create_disposable(self, dvm: str) -> str:
        import qubesadmin.vm

        with self._translate():
            wrapper = qubesadmin.vm.DispVM.from_appvm(self.app, dvm)
            if hasattr(wrapper, "create_disposable"):
                wrapper.create_disposable()  # admin.vm.CreateDisposable on dvm
                return wrapper.name
            # qubesadmin before create_disposable(): the same Admin API call.
            return self.app.qubesd_call(dvm, "admin.vm.CreateDisposable").decode("ascii")

    def set_netvm(self, name: str, netvm: str | None) -> None:
        with self._translate():
            self._vm(name).netvm = netvm  # None is sent as '' = no netvm

    def start(self, name: str) -> None:
        with self._translate():
            self._vm(name).start()

    def power_state(self, name: str) -> str:
        with self._translate():
            return self._vm(name, fresh=True).get_power_state()

    def run_service(self, name: str, service: str, *, stdin: int | IO[bytes],
                    stdout: int | IO[bytes], connect_timeout: int) -> Relay:
        with self._translate():
            # autostart=False: if the disposable died since verification, fail
            # instead of booting it again unchecked (checked on a fresh object).
            self._vm(name, fresh=True)
            return self.app.run_service(name, service, autostart=False, stdin=stdin,
                                        stdout=stdout, stderr=subprocess.DEVNULL,
                                        connect_timeout=connect_timeout)

    def kill(self, name: str) -> None:
        with self._translate():
            self._vm(name).kill()

    def remove(self, name: str) -> None:
        with self._translate():
            del self.app.domains[name]

    def tags(self, name: str) -> frozenset[str]:
        with self._translate():
            return frozenset(self._vm(name).tags)

    def add_tag(self, name: str, tag: str) -> None:
        with self._translate():
            self._vm(name).tags.add(tag)

    def watch_netvm(self, name: str,
                    on_change: Callable[[str | None], None]) -> Callable[[], None]:
        """admin.Events for this qube, in a thread with its own event loop.
        Ready once qubesd's `connection-established` arrives; if the stream
        ends or fails before stop(), that too is reported as a change."""
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
                value = kwargs.get("newvalue") if event == "property-set:netvm" else None
                on_change(value if isinstance(value, str) else None)

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
