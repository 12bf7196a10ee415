"""whonix-open-app: start an allowed app in a checked disposable from dom0
(its menu entries "Tor Browser (checked Tor disposable)", "Terminal (checked
Tor disposable)").

    whonix-open-app [--profile NAME] APP

The same broker path as a qube's whonix.StartAppInDisposable+APP+PROFILE
(service.main), with dom0 as the caller: the same allowlist, checks, limits
(dom0 counts as one owner), watchdog and cleanup. Instead of qrexec's
socketpair, this process holds both ends of two pipes: the first byte the
broker waits for, and its stdout, whose end closing (this process dying)
tells the broker that the caller went away. It blocks until the app exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from whonix_open.contract import (
    APP_SEPARATOR,
    DEFAULT_PROFILE,
    SERVICE_APP,
    SUMMARY,
    Exit,
    is_app_name,
    is_profile_name,
)

CALLER = "dom0"


def service_env(app: str, profile: str, env: Mapping[str, str]) -> dict[str, str]:
    """What qrexec would give the service, with dom0 as the caller."""
    argument = f"{app}{APP_SEPARATOR}{profile}"
    return {**env, "QREXEC_REMOTE_DOMAIN": CALLER, "QREXEC_SERVICE_ARGUMENT": argument,
            "QREXEC_SERVICE_FULL_NAME": f"{SERVICE_APP}+{argument}",
            "QREXEC_REQUESTED_TARGET_TYPE": "name", "QREXEC_REQUESTED_TARGET": CALLER}


def _tell(text: str) -> None:
    """One line on stderr; a notification too when started from the menu
    (stderr is not a terminal) and there is a display to show it on."""
    print(f"whonix-open-app: {text}", file=sys.stderr, flush=True)
    notify = shutil.which("notify-send")
    shown = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if notify and shown and not sys.stderr.isatty():
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([notify, "--app-name=whonix-open", "--", "whonix-open", text],
                           check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="whonix-open-app",
        description="Start an app that the allowlist in /etc/whonix-open/profiles.toml "
        "permits (built in: torbrowser, terminal) in a fresh Whonix disposable whose "
        "network dom0 checks first; the disposable is destroyed when the app exits.")
    parser.add_argument("--profile", default=DEFAULT_PROFILE,
                        help="profile (default: tor; offline has no network)")
    parser.add_argument("app", metavar="APP")
    ns = parser.parse_args(argv)
    if not is_app_name(ns.app):
        parser.error(f"{ns.app!r} is not an app name")
    if not is_profile_name(ns.profile):
        parser.error(f"{ns.profile!r} is not a profile name")
    env = service_env(ns.app, ns.profile, os.environ if env is None else env)

    from whonix_open.dom0 import service  # only now: --help stays fast
    from whonix_open.dom0.backend import BackendError
    from whonix_open.dom0.choose_backend import connect

    try:  # before the broker: a missing library is this command's, not a request's failure
        backend = connect(env)
    except ImportError as e:
        _tell(f"cannot start {ns.app}: the Python module '{e.name}' is missing "
              "(dom0 package python3-qubesadmin).")
        return int(Exit.INTERNAL)
    except BackendError as e:
        _tell(f"cannot start {ns.app}: {e}.")
        return int(Exit.INTERNAL)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    os.write(in_w, b"\n")  # the broker waits for the caller's first byte
    try:
        code = service.main(SERVICE_APP, [env["QREXEC_SERVICE_ARGUMENT"]], env,
                            backend=backend, stdin=in_r, stdout=out_w)
    finally:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
    if code != Exit.OK:
        reason = SUMMARY.get(Exit(code), "refused") if code in set(Exit) else "failed"
        _tell(f"{ns.app} ({ns.profile}): {reason} (exit {code}; journalctl -t whonix-open)")
    return code


if __name__ == "__main__":
    sys.exit(main())
