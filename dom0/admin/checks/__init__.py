"""The checks of `whonix-open-admin check`, one module per subject. Each
module's `run(ctx)` returns its findings; ALL is the order they are shown in."""

from whonix_open.dom0.admin.checks import disposables, network, policy, profiles

ALL = (profiles.run, network.run, disposables.run, policy.run)
