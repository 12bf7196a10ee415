"""`whonix-open --app NAME`: start an app that dom0 allows in a fresh
disposable (dom0's allowlist maps NAME to the disposable's desktop id; built
in: torbrowser, terminal). The call stays open while the app runs; dom0
destroys the disposable when the app exits, or when this command is stopped."""

from __future__ import annotations

from whonix_open.contract import APP_SEPARATOR, SERVICE_APP, is_app_name

APP_LINE = b"\n"  # dom0 waits for a first byte before it creates anything


class AppError(ValueError):
    pass


def service_for(app: str, profile: str) -> str:
    """whonix.StartAppInDisposable+APP+PROFILE, or AppError for a bad name."""
    if not is_app_name(app):
        raise AppError(f"--app {app!r} is not an app name (lowercase letters, digits "
                       "and '-', at most 31, not starting with '-')")
    return f"{SERVICE_APP}+{app}{APP_SEPARATOR}{profile}"
