"""Suite-wide settings."""

from hypothesis import settings

# Deterministic on a busy 2-core CI machine: a fixed example sequence
# (derandomize), no per-example time limit, no example database between runs.
settings.register_profile("whonix-open", deadline=None, derandomize=True, database=None)
settings.load_profile("whonix-open")
